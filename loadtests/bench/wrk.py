"""wrk (the Debian package) on one HTTP endpoint, its summary read back as a row like Locust's.

wrk is a C event loop: on the same cores it drives several times the requests Locust does, so
where Locust is the limit (the bench marks it) the servers' differences still show in wrk's figures.
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA_REPORT = Path(__file__).resolve().parent / "wrk_report.lua"
_MARKER = "WRK_JSON "
# Seconds before a request counts as timed out (wrk's own default is 2 s, too short under overload).
REQUEST_TIMEOUT = 10


class WrkOutputError(ValueError):
    """wrk printed no summary this module can read."""


@dataclass(frozen=True)
class WrkRun:
    url: str
    connections: int
    threads: int  # 0: one per CPU core
    seconds: float

    @property
    def thread_count(self) -> int:
        wanted = self.threads or os.cpu_count() or 1
        return max(1, min(wanted, self.connections))  # wrk refuses more threads than connections

    def command(self, wrk: str = "wrk") -> list[str]:
        return [
            wrk, "-t", str(self.thread_count), "-c", str(self.connections),
            "-d", f"{math.ceil(self.seconds)}s", "--timeout", f"{REQUEST_TIMEOUT}s",
            "-s", str(LUA_REPORT), self.url,
        ]  # fmt: skip

    @property
    def timeout(self) -> float:
        return self.seconds + REQUEST_TIMEOUT + 30


def parse_output(text: str) -> dict[str, Any]:
    """wrk's output → a row: requests, failures, rps and latency percentiles in ms, plus the
    error counts by kind (connect, read, write, status = not 2xx/3xx, timeout)."""
    lines = [line for line in text.splitlines() if line.startswith(_MARKER)]
    if not lines:
        raise WrkOutputError("wrk printed no summary line (was it run with -s wrk_report.lua?)")
    try:
        data = json.loads(lines[-1][len(_MARKER) :])
        requests = int(data["requests"])
        seconds = data["duration_us"] / 1e6
        errors = {kind: int(count) for kind, count in data["errors"].items()}
        latency = data["latency_us"]
        row = {
            "type": "GET",
            "requests": requests,
            "failures": sum(errors.values()),
            "rps": requests / seconds if seconds > 0 else 0.0,
            "avg_ms": latency["mean"] / 1000,
            "max_ms": latency["max"] / 1000,
            "p50_ms": latency["p50"] / 1000,
            "p95_ms": latency["p95"] / 1000,
            "p99_ms": latency["p99"] / 1000,
            "errors": errors,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise WrkOutputError(f"unreadable wrk summary {lines[-1]!r}: {exc}") from None
    if requests == 0:
        raise WrkOutputError("wrk made no request (is the URL reachable?)")
    return row
