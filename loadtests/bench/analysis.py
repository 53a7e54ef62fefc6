"""From the raw runs in ``results.json`` to the figures the report shows.

Each measurement (one target, profile, scenario case and tool) becomes medians with min-max over
its successful runs. Throughput is then compared with the generator's ceiling measured in the same
run: a result at or above the threshold (80 %) of what the same tool reached against Nginx
answering by itself is marked as limited by the generator, not by the server.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from loadtests.bench import server_metrics
from loadtests.bench.results import Measurement, Results, Run
from loadtests.bench.stats import Spread, at_ceiling, ratio, spread
from loadtests.lib import names

NGINX_FIXED = "nginx-fixed"
ASGI_HELLO = "asgi-hello"
NGINX_STATIC = (
    "nginx-static"  # the stack's Nginx serving a static file: every variant's figure, measured once
)
CEILING_TARGETS = (NGINX_FIXED, ASGI_HELLO, NGINX_STATIC)


@dataclass(frozen=True)
class Figures:
    kind: str  # "ceiling" or "variant"
    target: str  # variant name, or a ceiling target
    profile: str
    scenario: str  # http, echo, chat, capacity
    case: str  # endpoint path, "/ws/echo/", "1000 users, 10 rooms", "2000 sockets"
    tool: str  # locust or wrk
    row: str
    runs: int  # runs that produced figures
    failed_runs: int  # runs that did not (see the report's errors)
    rps: Spread
    p50: Spread
    p95: Spread
    p99: Spread
    requests: int  # on the measured row, over all runs
    failures: int
    other_failures: int  # on the scenario's other rows: handshakes, drops, error frames
    extra: Mapping[str, Spread] = field(default_factory=dict)
    failure_samples: tuple[str, ...] = ()
    ceiling: float | None = None  # the generator's ceiling for this kind of measurement
    ceiling_share: float | None = None
    limited: bool = False
    hello_share: float | None = None  # share of the raw ASGI hello-world's throughput

    @property
    def label(self) -> str:
        """The row label in tables and charts: the variant, with its profile when there are several."""
        return (
            self.target
            if not self.profile or self.profile == "default"
            else f"{self.target} · {self.profile}"
        )

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _extra(scenario: str, row: str, runs: list[Run]) -> dict[str, Spread]:
    extra: dict[str, Spread] = {}
    rows = [run.rows or {} for run in runs]
    if scenario == "chat":
        acks = [found[names.CHAT_ACK] for found in rows if names.CHAT_ACK in found]
        if acks:
            extra["ack_p50"] = spread(ack["p50_ms"] for ack in acks)
            extra["ack_p99"] = spread(ack["p99_ms"] for ack in acks)
    if scenario == "fanout":
        extra["offered_mps"] = spread(found[row].get("offered_mps", 0.0) for found in rows)
    if scenario == "capacity":
        ramps = [found[row]["ramp_rps"] for found in rows if "ramp_rps" in found.get(row, {})]
        if ramps:
            extra["handshake_rate"] = spread(ramps)
        memory = [
            run.memory for run in runs if run.memory and run.memory.get("bytes_per_connection") is not None
        ]
        if memory:
            extra["sockets"] = spread(report["connections"] for report in memory)
            extra["bytes_per_socket"] = spread(report["bytes_per_connection"] for report in memory)
    return extra


def route_of(case: str) -> str | None:
    """The URL pattern's name (the metrics' ``route`` label) of an HTTP case's path."""
    return next((name for name, path in names.HTTP_ENDPOINTS.items() if path == case), None)


def _server_extra(scenario: str, case: str, row: str, runs: list[Run]) -> dict[str, Spread]:
    """The server's side of the runs that carry it (server_metrics): Django's own time for the case's
    route, the CPU per request (or message) the client completed, the fan-out time in the app."""
    extra: dict[str, Spread] = {}
    # Capacity runs open sockets and hold them: CPU per handshake would be mostly idle time. A figure
    # needs every run's server side: a median of the runs that happened to have one would mislead.
    # Fan-out runs step through rates, sockets runs through counts: their server side spans every
    # step, their figure is one step.
    if scenario in ("capacity", "fanout", "sockets") or any(run.server is None for run in runs):
        return extra
    measured = [(run.server or {}, (run.rows or {})[row]) for run in runs]
    for key, source in (
        ("cpu_ms_per_request", "cpu_seconds"),
        ("container_cpu_ms_per_request", "container_cpu_seconds"),
    ):
        cpu = [
            server_metrics.cpu_ms_per_request(server, found["requests"], source) for server, found in measured
        ]
        if all(value is not None for value in cpu):
            extra[key] = spread(value for value in cpu if value is not None)
    route = route_of(case) if scenario == "http" else None
    timed = [server["routes"][route] for server, _ in measured if route in server.get("routes", {})]
    fanout = [server["fanout"] for server, _ in measured if "fanout" in server]
    for key, found in (("server", timed), ("server_fanout", fanout)):
        for figure in ("p50_ms", "p99_ms", "mean_ms"):
            values = [run[figure] for run in found if run.get(figure) is not None]
            if values and len(values) == len(measured):  # every run, or no figure
                extra[f"{key}_{figure.removesuffix('_ms')}"] = spread(values)
    return extra


def summarize(measurement: Measurement) -> Figures | None:
    """The figures of one measurement, or None when no run produced any."""
    row = measurement.row
    runs = measurement.measured()
    if not runs:
        return None
    measured = [(run.rows or {})[row] for run in runs]
    samples: list[str] = []
    for run in runs:
        samples += [s for s in run.failure_samples or [] if s not in samples]
    return Figures(
        kind=measurement.kind,
        target=measurement.target,
        profile=measurement.profile,
        scenario=measurement.scenario,
        case=measurement.case,
        tool=measurement.tool,
        row=row,
        runs=len(runs),
        failed_runs=len(measurement.runs) - len(runs),
        rps=spread(r["rps"] for r in measured),
        p50=spread(r["p50_ms"] for r in measured),
        p95=spread(r["p95_ms"] for r in measured),
        p99=spread(r["p99_ms"] for r in measured),
        requests=int(sum(r["requests"] for r in measured)),
        failures=int(sum(r["failures"] for r in measured)),
        other_failures=int(
            sum(other["failures"] for run in runs for name, other in (run.rows or {}).items() if name != row)
        ),
        extra={
            **_extra(measurement.scenario, row, runs),
            **_server_extra(measurement.scenario, measurement.case, row, runs),
        },
        failure_samples=tuple(samples[:5]),
    )


def _find(figures: Iterable[Figures], target: str, scenario: str, tool: str) -> Figures | None:
    for candidate in figures:
        if (
            candidate.kind == "ceiling"
            and candidate.target == target
            and candidate.scenario == scenario
            and candidate.tool == tool
        ):
            return candidate
    return None


def ceiling_for(figures: Figures, everything: list[Figures]) -> Figures | None:
    """What bounds a throughput figure from the generator's side.

    HTTP: the same tool against Nginx answering by itself. WebSocket echo: the raw ASGI echo (Nginx
    alone cannot answer a WebSocket). Chat and capacity run at a fixed offered rate: no ceiling.
    """
    if figures.scenario == "http":
        return _find(everything, NGINX_FIXED, "http", figures.tool)
    if figures.scenario in ("echo", "fanout") and not (
        figures.kind == "ceiling" and figures.target == ASGI_HELLO
    ):
        return _find(everything, ASGI_HELLO, figures.scenario, figures.tool)
    return None


def hello_for(figures: Figures, everything: list[Figures]) -> Figures | None:
    """The raw ASGI hello-world's figure of the same kind, to show what Django and the server cost."""
    if figures.kind == "ceiling" or figures.scenario not in ("http", "echo"):
        return None
    if figures.scenario == "http" and figures.case == names.HTTP_ENDPOINTS["static"]:
        return None  # Nginx serves it: no app involved
    return _find(everything, ASGI_HELLO, figures.scenario, figures.tool)


def analyse(results: Results) -> list[Figures]:
    """Every measurement with figures, in the order measured, marked against the ceiling."""
    threshold = float(results.settings.get("generator_threshold", 0.8))
    plain = [f for f in (summarize(m) for m in results.measurements) if f is not None]
    marked = []
    for figures in plain:
        changes: dict[str, Any] = {}
        ceiling = ceiling_for(figures, plain)
        if ceiling is not None and not (ceiling.target == figures.target and ceiling.kind == figures.kind):
            value = ceiling.rps.median
            changes.update(
                ceiling=value,
                ceiling_share=ratio(figures.rps.median, value),
                limited=at_ceiling(figures.rps.median, value, threshold),
            )
        hello = hello_for(figures, plain)
        if hello is not None:
            changes["hello_share"] = ratio(figures.rps.median, hello.rps.median)
        marked.append(replace(figures, **changes))
    return marked


def median_run(measurement: Measurement) -> Run | None:
    """The run whose figure is the median of the measurement's (the lower of the middle two)."""
    runs = sorted(measurement.measured(), key=lambda run: (run.rows or {})[measurement.row]["rps"])
    return runs[(len(runs) - 1) // 2] if runs else None
