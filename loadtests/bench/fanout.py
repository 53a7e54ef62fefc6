"""The fan-out generator (``loadtests/fanout``) as a bench tool: its command, and its JSON read back
as a row like Locust's and wrk's, with the steps beside it.

The row's ``rps`` is the run's sustained figure: the most deliveries/s of a step that held (p99
within the threshold, no failure) before the first that did not; its latencies are that step's.
A run where even the first step failed is a figure too: 0 deliveries/s.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from loadtests.bench.config import FanoutSettings
from loadtests.fanout.__main__ import MARKER
from loadtests.fanout.generator import CONNECT_TIMEOUT
from loadtests.fanout.steps import geometric_rates

ROW = "fanout sustained deliveries"
GRACE = 1.0  # seconds for late copies before a step is judged


def case(settings: FanoutSettings) -> str:
    """The measurement's case: the same for the variants and the ceiling, whatever their rates."""
    return f"{settings.rooms} rooms x {settings.members} members"


class GeneratorOutputError(ValueError):
    """A generator of the bench's own (loadtests/fanout, loadtests/sockets) left no result it can read."""


@dataclass(frozen=True)
class FanoutRun:
    host: str
    settings: FanoutSettings
    output: Path  # the JSON result
    name: ClassVar[str] = "fanout"  # the run's log: fanout.log

    @property
    def steps(self) -> int:
        s = self.settings
        return len(geometric_rates(s.start, s.factor, s.max_rate))

    @property
    def seconds(self) -> float:
        """Planned seconds at most: every step, and the rooms filling."""
        s = self.settings
        return s.warmup + GRACE + self.steps * (s.settle + s.duration + GRACE) + 5

    @property
    def timeout(self) -> float:
        return self.seconds + CONNECT_TIMEOUT + 60

    def command(self, python: str = sys.executable) -> list[str]:
        s = self.settings
        return [
            python, "-m", "loadtests.fanout", "--host", self.host,
            "--rooms", str(s.rooms), "--members", str(s.members),
            "--start", f"{s.start:g}", "--factor", f"{s.factor:g}", "--max-rate", f"{s.max_rate:g}",
            "--warmup", f"{s.warmup:g}", "--settle", f"{s.settle:g}", "--step", f"{s.duration:g}",
            "--grace", f"{GRACE:g}",
            "--p99-ms", f"{s.p99_ms:g}", "--output", str(self.output),
        ]  # fmt: skip

    def read(self, log: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The row and the steps of the run, from its JSON (or its log's last result line)."""
        return parse_result(read_output(log, self.output))


def parse_result(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The generator's JSON → (the row of the sustained figure, every step)."""
    if not isinstance(data, dict) or data.get("tool") != "fanout":
        raise GeneratorOutputError(f"not a fan-out result: {str(data)[:200]}")
    if "error" in data:
        raise GeneratorOutputError(f"the generator failed: {data['error']}")
    try:
        steps = list(data["steps"])
        if not steps:
            raise GeneratorOutputError("the generator measured no step")
        best = data["sustained"]
        shown = best or steps[0]  # nothing held: the first step's latencies say by how much
        row = {
            "type": "WS",
            "requests": int(best["deliveries"]) if best else 0,
            "failures": 0,
            "rps": float(best["deliveries_per_s"]) if best else 0.0,
            "offered_mps": float(best["offered_mps"]) if best else 0.0,
            "p50_ms": float(shown["p50_ms"]),
            "p95_ms": float(shown["p95_ms"]),
            "p99_ms": float(shown["p99_ms"]),
            "max_ms": float(shown["max_ms"]),
            "threshold_ms": float(data["threshold_ms"]),
            "sockets": int(data["sockets"]),
            "stopped": str(data["stopped"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise GeneratorOutputError(f"unreadable fan-out result: {exc!r}") from None
    return row, steps


def read_output(text: str, output: Path, marker: str = MARKER) -> dict[str, Any]:
    """The result the generator wrote, else the one it printed on its line starting ``marker``."""
    try:
        if output.exists():
            return json.loads(output.read_text())
        lines = [line for line in text.splitlines() if line.startswith(marker)]
        if lines:
            return json.loads(lines[-1][len(marker) :])
    except ValueError as exc:
        raise GeneratorOutputError(f"the result is not JSON: {exc}") from None
    raise GeneratorOutputError("the generator wrote no result")
