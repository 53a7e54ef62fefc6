"""One run of a load generator (Locust or wrk), turned into a ``Run`` record: its rows, or what
went wrong. Every measured run and every warm-up goes through here."""

import sys
import time
from pathlib import Path

from loadtests.bench import procs
from loadtests.bench.fanout import FanoutRun, GeneratorOutputError
from loadtests.bench.locust_csv import LocustOutputError, LocustRun, read_run
from loadtests.bench.results import Run
from loadtests.bench.sockets import SocketsRun
from loadtests.bench.wrk import WrkOutputError, WrkRun, parse_output
from stackctl import inherited_environment

Generator = FanoutRun | SocketsRun  # the bench's own generators: a JSON result, and its steps
Tool = LocustRun | WrkRun | Generator


def _record(tool: str, run_dir: Path, out: Path, command: list[str], started_at: str, started: float) -> Run:
    return Run(
        tool=tool,
        started_at=started_at,
        seconds=round(time.monotonic() - started, 2),
        exit_code=None,
        dir=str(run_dir.relative_to(out)),
        # The interpreter's path says nothing about the run: its name is enough.
        command=[Path(part).name if part == sys.executable else part for part in command],
    )


def run_locust(run: LocustRun, row: str, run_dir: Path, out: Path, started_at: str) -> Run:
    """One Locust run; ``row`` is the one that must have requests for the run to count."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = run.command(sys.executable)
    started = time.monotonic()
    result = procs.run(command, timeout=run.timeout, log=run_dir / "locust.log", env=inherited_environment())
    record = _record("locust", run_dir, out, command, started_at, started)
    record.exit_code = result.returncode
    try:
        rows, failures = read_run(run.prefix)
    except (LocustOutputError, OSError) as exc:
        record.error = f"{exc} (exit {result.returncode}; see {record.dir}/locust.log)"
        return record
    record.rows, record.failure_samples = rows, failures
    if result.timed_out:
        record.error = f"Locust did not stop within {run.timeout:.0f} s"
    elif result.returncode not in (0, 1):  # 1: some requests failed, which the figures show
        record.error = f"Locust exited with {result.returncode} (see {record.dir}/locust.log)"
    elif rows.get(row, {}).get("requests", 0) == 0:
        record.error = f"no {row!r} in this run (see {record.dir}/locust.log)"
    return record


def run_wrk(run: WrkRun, row: str, run_dir: Path, out: Path, started_at: str) -> Run:
    """One wrk run on one URL; its summary becomes the row ``row``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = run.command()
    started = time.monotonic()
    result = procs.run(command, timeout=run.timeout)
    (run_dir / "wrk.txt").write_text(f"$ {' '.join(command)}\n{result.output}")
    record = _record("wrk", run_dir, out, command, started_at, started)
    record.exit_code = result.returncode
    try:
        record.rows = {row: parse_output(result.output)}
    except WrkOutputError as exc:
        record.error = f"{exc}: {result.tail(5)}"
    return record


def run_generator(run: Generator, row: str, run_dir: Path, out: Path, started_at: str) -> Run:
    """One stepped run of the bench's own generators (fan-out, sockets); its figure becomes the row
    ``row``, its steps ``Run.steps``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = run.command(sys.executable)
    started = time.monotonic()
    log = run_dir / f"{run.name}.log"
    result = procs.run(command, timeout=run.timeout, log=log, env=inherited_environment())
    record = _record(run.name, run_dir, out, command, started_at, started)
    record.exit_code = result.returncode
    try:
        found, record.steps = run.read(log.read_text() if log.exists() else "")
        record.rows = {row: found}
    except (GeneratorOutputError, OSError) as exc:
        record.error = f"{exc} (exit {result.returncode}; see {record.dir}/{log.name})"
        return record
    if result.timed_out:
        record.error = f"the {run.name} generator did not stop within {run.timeout:.0f} s"
    return record


def run_tool(tool: Tool, row: str, run_dir: Path, out: Path, started_at: str) -> Run:
    if isinstance(tool, FanoutRun | SocketsRun):
        return run_generator(tool, row, run_dir, out, started_at)
    if isinstance(tool, WrkRun):
        return run_wrk(tool, row, run_dir, out, started_at)
    return run_locust(tool, row, run_dir, out, started_at)


def warm_up(run: LocustRun, run_dir: Path) -> None:
    """Unrecorded load: the run's figures are not read."""
    run_dir.mkdir(parents=True, exist_ok=True)
    procs.run(
        run.command(sys.executable),
        timeout=run.timeout,
        log=run_dir / "locust.log",
        env=inherited_environment(),
    )
