"""The capacity tool (``loadtests/sockets``) as a bench tool: its command, its JSON read back as a
row like the other tools', with the steps beside it; and the figures the report and the chart take
from a measurement's steps.

The row's figure is the most sockets a step held: ``rps``, the value every median, min-max and
median run of the bench is computed from, is here a count of sockets, not a rate. Its latencies are
the broadcast's at that step (at the first step when none held).
"""

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from loadtests.bench.config import SocketsSettings
from loadtests.bench.fanout import GeneratorOutputError, read_output
from loadtests.bench.results import Measurement, Results, Run
from loadtests.bench.stats import Spread, spread
from loadtests.sockets.__main__ import MARKER
from loadtests.sockets.plan import Plan
from loadtests.sockets.run import BROADCAST_TIMEOUT
from loadtests.sockets.worker import CONNECT_TIMEOUT

ROW = "sockets held"
# Memory per socket, as the tool measures it: its names, and the report's.
COMPONENTS = {"app": "app", "nginx": "Nginx", "redis": "Redis"}
# The socket counts at which the report shows the broadcast's p99, when a run's step there held.
P99_AT = (10_000, 20_000)
# Planned seconds past the handshakes and settle times: the baseline's `docker stats`, the worker
# processes' start; then per step `docker stats` (2 s or more on a busy machine) and the broadcast.
START_MARGIN = 10.0
STEP_MARGIN = 5.0
# What the tool waits at most per step besides its handshakes (loadtests/sockets/run.py): their
# timeouts, `docker stats` (60 s), the broadcast's own copy, and every socket's copy.
STEP_BOUND = 2 * CONNECT_TIMEOUT + 30 + 60 + BROADCAST_TIMEOUT + Plan.delivery_timeout + 30


def case(settings: SocketsSettings) -> str:
    return f"up to {settings.steps[-1]:,} sockets"


def nginx_environment(settings: SocketsSettings) -> dict[str, str]:
    """The compose variables of the stage's Nginx: enough workers for the sockets' open files
    (two per WebSocket, 20,000 per process here) and enough memory (about 28 KB per socket)."""
    return {
        "NGINX_WORKER_PROCESSES": str(settings.nginx_workers),
        "NGINX_WORKER_CONNECTIONS": str(settings.nginx_connections),
        "NGINX_MEMORY_LIMIT": settings.nginx_memory,
    }


@dataclass(frozen=True)
class SocketsRun:
    host: str
    project: str  # the stack's compose project: memory per socket of the app, Nginx and Redis
    settings: SocketsSettings
    output: Path  # the JSON result
    name: ClassVar[str] = "sockets"  # the run's log: sockets.log

    @property
    def seconds(self) -> float:
        """Planned seconds: every handshake at the rate, and each step's settle time and readings."""
        s = self.settings
        return START_MARGIN + s.steps[-1] / s.rate + len(s.steps) * (s.settle + STEP_MARGIN)

    @property
    def timeout(self) -> float:
        return self.seconds + len(self.settings.steps) * STEP_BOUND + 60

    def command(self, python: str = sys.executable) -> list[str]:
        s = self.settings
        return [
            python, "-m", "loadtests.sockets", "--host", self.host, "--project", self.project,
            "--steps", ",".join(map(str, s.steps)), "--rate", f"{s.rate:g}", "--settle", f"{s.settle:g}",
            "--output", str(self.output),
        ]  # fmt: skip

    def read(self, log: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The row and the steps of the run, from its JSON (or its log's last result line)."""
        return parse_result(read_output(log, self.output, MARKER))


def largest_held(steps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last step that held: the run stops at the first that does not."""
    return next((step for step in reversed(steps) if step["held"]), None)


def parse_result(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool's JSON → (the row of the sockets held, every step)."""
    if not isinstance(data, dict) or data.get("tool") != "sockets":
        raise GeneratorOutputError(f"not a sockets result: {str(data)[:200]}")
    if not data.get("steps"):
        raise GeneratorOutputError("the sockets tool measured no step")
    try:
        steps = list(data["steps"])
        held = int(data["held"])
        shown = largest_held(steps) or steps[0]
        row = {
            "type": "WS",
            "rps": float(held),  # the figure (see the module's docstring)
            "requests": held,
            # The step that failed is what the run found, not a failure of the run: its counts stay
            # in its step (handshake_failures, dropped, missing).
            "failures": 0,
            "p50_ms": float(shown["broadcast_p50_ms"]),
            "p95_ms": float(shown["broadcast_p95_ms"]),
            "p99_ms": float(shown["broadcast_p99_ms"]),
            "max_ms": float(shown["broadcast_max_ms"]),
            "held": held,
            "stopped": str(data["stopped"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise GeneratorOutputError(f"unreadable sockets result: {exc!r}") from None
    return row, steps


# --- what the report and the chart read ----------------------------------------------------------


def measurement(results: Results, target: str, profile: str) -> Measurement | None:
    """A variant's sockets measurement (one per variant and profile: the case follows the settings)."""
    return next(
        (
            m
            for m in results.measurements
            if (m.kind, m.target, m.profile, m.scenario) == ("variant", target, profile, "sockets")
        ),
        None,
    )


def stopped(run: Run) -> str:
    """What stopped the run, with the evidence of its failed step (the components' memory then, and
    what Nginx's error log said most), or how far it went when every step held."""
    steps = run.steps or []
    if steps and all(step["held"] for step in steps):
        return f"every step held up to {steps[-1]['sockets']:,}"
    said = [str((run.rows or {}).get(ROW, {}).get("stopped", ""))]
    failed = next((step for step in steps if not step["held"]), None)
    if failed is not None:
        memory = failed.get("memory_bytes") or {}
        if memory:
            said.append(
                "memory then: "
                + ", ".join(f"{COMPONENTS.get(c, c)} {v / 2**20:,.0f} MiB" for c, v in memory.items())
            )
        errors = failed.get("nginx_errors") or {}
        if errors:
            message, count = max(errors.items(), key=lambda item: item[1])
            said.append(f"Nginx said: {message} (x{count:,})")
    return "; ".join(part for part in said if part)


def memory_per_socket(run: Run) -> tuple[int, dict[str, int]] | None:
    """(sockets, bytes per socket of each component) at the run's largest step that held; no
    component when the tool read no memory. None when no step held."""
    step = largest_held(run.steps or [])
    if step is None:
        return None
    return int(step["open"]), {c: int(v) for c, v in step.get("bytes_per_socket", {}).items()}


def memory_over_runs(measurement: Measurement) -> tuple[Spread, dict[str, Spread]] | None:
    """Memory per socket as the report shows it, over the runs (each in fresh containers, a stack
    of its own): the sockets it was read at, each run's largest step that held, and each
    component's bytes per socket there. None when no run held a step."""
    readings = [found for run in measurement.measured() if (found := memory_per_socket(run))]
    if not readings:
        return None
    per_component = {
        component: spread(per[component] for _, per in readings if component in per)
        for component in COMPONENTS
        if any(component in per for _, per in readings)
    }
    return spread(at for at, _ in readings), per_component


def p99_at(measurement: Measurement, sockets: int) -> Spread | None:
    """The broadcast p99 at ``sockets``, over the runs whose step there held."""
    values = [
        step["broadcast_p99_ms"]
        for run in measurement.measured()
        for step in run.steps or []
        if step["sockets"] == sockets and step["held"]
    ]
    return spread(values) if values else None
