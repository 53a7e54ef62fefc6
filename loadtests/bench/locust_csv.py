"""Locust's command line for one run, and its CSV output read back as plain numbers.

The rows are read by the names in ``loadtests/lib/names.py`` (``Type`` and ``Name`` columns of
``PREFIX_stats.csv``). Locust's percentiles are its own histogram buckets: 1 ms wide below 100 ms,
10 ms up to 1 s, then 100 ms.
"""

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench.config import ROOT
from stackctl import free_port

LOCUSTFILES = {
    "http": ROOT / "loadtests" / "locustfiles" / "http_endpoints.py",
    "echo": ROOT / "loadtests" / "locustfiles" / "echo.py",
    "chat": ROOT / "loadtests" / "locustfiles" / "chat.py",
    "capacity": ROOT / "loadtests" / "locustfiles" / "capacity.py",
    "soak": ROOT / "loadtests" / "locustfiles" / "soak.py",
}
# Seconds of every run besides -t: start-up (forking workers), stopping, writing the reports.
STARTUP_ALLOWANCE = 60.0

# CSV column → the key it is stored under; percentiles are milliseconds.
_COLUMNS = {
    "Request Count": "requests",
    "Failure Count": "failures",
    "Requests/s": "rps",
    "Average Response Time": "avg_ms",
    "Max Response Time": "max_ms",
    "50%": "p50_ms",
    "95%": "p95_ms",
    "99%": "p99_ms",
}


class LocustOutputError(ValueError):
    """Locust's CSV is missing or not what this parser expects."""


@dataclass(frozen=True)
class LocustRun:
    """One headless Locust run."""

    scenario: str  # a key of LOCUSTFILES
    host: str
    users: int
    spawn_rate: float
    seconds: float
    prefix: Path  # --csv PREFIX (also the HTML report's and the log's stem)
    processes: int = 0  # --processes; 0 = a single process
    options: tuple[str, ...] = ()  # scenario options, e.g. ("--http-endpoints", "ping")
    reset_stats: bool = False  # drop what was measured while users were still starting
    full_history: bool = False  # every row's running totals once a second (ramp rates)
    summary_only: bool = True  # no stats table every few seconds, only the final one

    def command(self, python: str) -> list[str]:
        if self.scenario not in LOCUSTFILES:
            raise ValueError(f"no locustfile for scenario {self.scenario!r}")
        command = [
            python, "-m", "locust", "-f", str(LOCUSTFILES[self.scenario]), "--headless",
            "--host", self.host, "-u", str(self.users), "-r", f"{self.spawn_rate:g}",
            "-t", f"{math.ceil(self.seconds)}s", "--stop-timeout", "0",
            "--csv", str(self.prefix), "--html", f"{self.prefix}.html",
            # The locustfiles' own hard limit, a second guard on top of -t.
            "--max-run-time", f"{math.ceil(self.seconds + STARTUP_ALLOWANCE)}",
        ]  # fmt: skip
        if self.summary_only:
            command.append("--only-summary")
        if self.processes:
            # The master listens on a free port of the loopback: on Locust's default (5557, every
            # interface) a second run on the machine could not bind, or its workers joined this
            # run's master and took over its users.
            port = str(free_port())
            command += ["--processes", str(self.processes), "--master-bind-host", "127.0.0.1",
                        "--master-bind-port", port, "--master-port", port]  # fmt: skip
        if self.reset_stats:
            command.append("--reset-stats")
        if self.full_history:
            command.append("--csv-full-history")
        return command + list(self.options)

    @property
    def timeout(self) -> float:
        """How long the process may take before it is killed."""
        return self.seconds + 2 * STARTUP_ALLOWANCE


def _number(value: str, column: str, name: str) -> float:
    if value in ("", "N/A"):  # a row with no requests has no percentiles
        return 0.0
    try:
        number = float(value)
    except ValueError:
        raise LocustOutputError(f"row {name!r}: column {column!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise LocustOutputError(f"row {name!r}: column {column!r} is {value!r}")
    return number


def parse_stats(text: str) -> dict[str, dict[str, Any]]:
    """``PREFIX_stats.csv`` → ``{name: {"type", "requests", "failures", "rps", "p50_ms", ...}}``.

    The ``Aggregated`` total is left out: it mixes rows of different kinds.
    """
    reader = csv.DictReader(text.splitlines())
    missing = [column for column in ("Type", "Name", *_COLUMNS) if column not in (reader.fieldnames or [])]
    if missing:
        raise LocustOutputError(f"Locust stats CSV lacks columns {missing}")
    rows: dict[str, dict[str, Any]] = {}
    for record in reader:
        name = record["Name"]
        if name == "Aggregated" and not record["Type"]:
            continue
        row: dict[str, Any] = {"type": record["Type"]}
        for column, key in _COLUMNS.items():
            row[key] = _number(record[column], column, name)
        row["requests"] = int(row["requests"])
        row["failures"] = int(row["failures"])
        rows[name] = row
    return rows


def parse_failures(text: str, limit: int = 5) -> list[str]:
    """The most frequent failures from ``PREFIX_failures.csv``: ``"NAME: ERROR (xN)"``."""
    reader = csv.DictReader(text.splitlines())
    found = [
        (int(record.get("Occurrences") or 0), f"{record.get('Name')}: {record.get('Error')}")
        for record in reader
    ]
    found.sort(key=lambda item: -item[0])
    return [f"{message} (x{count})" for count, message in found[:limit]]


def read_run(prefix: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The rows and the top failures a run wrote under ``prefix``; with a full history
    (``--csv-full-history``), each row also gets ``ramp_rps`` (see ``ramp_rate``)."""
    stats_file = prefix.with_name(prefix.name + "_stats.csv")
    if not stats_file.exists():
        raise LocustOutputError(f"Locust wrote no {stats_file.name}")
    rows = parse_stats(stats_file.read_text())
    history_file = prefix.with_name(prefix.name + "_stats_history.csv")
    if history_file.exists():
        history = history_file.read_text()
        for name, row in rows.items():
            row["ramp_rps"] = ramp_rate(history, name)
    failures_file = prefix.with_name(prefix.name + "_failures.csv")
    failures = parse_failures(failures_file.read_text()) if failures_file.exists() else []
    return rows, failures


def ramp_rate(history: str, name: str) -> float:
    """Completions per second of row ``name`` while its count grew, from ``PREFIX_stats_history.csv``
    (``--csv-full-history``: each row's running total, once a second).

    For the handshakes of a ramp this is the rate actually reached, which Locust's whole-run
    average would understate by the idle time after the ramp. The span counts whole seconds, both
    ends included, so a ramp of a few seconds reads a little low.
    """
    points = sorted(
        (int(record["Timestamp"]), int(record["Total Request Count"]))
        for record in csv.DictReader(history.splitlines())
        if record.get("Name") == name and record.get("Total Request Count", "").isdigit()
    )
    final = max((count for _, count in points), default=0)
    if final == 0:
        return 0.0
    first = min(second for second, count in points if count > 0)
    reached = min(second for second, count in points if count == final)
    return final / (reached - first + 1)


def spawn_rate(users: int, workers: int, per_process: float = 100.0) -> float:
    """Users started per second: everyone within a second or two, but no faster than Locust's
    comfortable 100 users/s per process (it warns above that)."""
    return float(min(users, per_process * max(1, workers)))


def scenario_options(pairs: Sequence[tuple[str, object]]) -> tuple[str, ...]:
    """``[("--chat-rooms", 10)]`` → ``("--chat-rooms", "10")``."""
    return tuple(
        item
        for flag, value in pairs
        for item in (flag, f"{value:g}" if isinstance(value, float) else str(value))
    )
