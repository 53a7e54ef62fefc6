"""``make profile``: where a request's CPU time goes in a running variant, sampled under wrk load.

    python -m loadtests.bench.profile --server uvicorn --endpoint /api/ping --duration 20s

Brings the stack up as ``make loadtest`` does (Nginx's per-address limits raised), loads one endpoint
through Nginx with wrk, and meanwhile samples every process of the app container with py-spy (from
the host: ``py-spy`` on PATH or in PY_SPY, as root), each thread while it holds the GIL. Before
that, one run of the same length without the sampler accounts for the machine's CPU time per
request: the app container's processes, Nginx's, wrk's own, and what was left idle. Writes to
``results/<timestamp>-profile-<server>/``: ``profile.txt`` (py-spy's collapsed stacks, for any
flame-graph tool), ``wrk-*.txt``, and ``summary.md``: the CPU accounting, the on-CPU samples by
the code they were in (the server, asyncio, Django's handler, middleware, ...), and the functions
with the most samples, inclusive and self.
"""

import argparse
import contextlib
import datetime as dt
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil

from loadtests.bench.config import DEFAULT_OUTPUT, ConfigError, parse_seconds
from loadtests.bench.runner import CEILING_COMPOSE
from loadtests.bench.stack import Stack, StackError
from loadtests.bench.wrk import WrkRun, parse_output
from stackctl import free_port, variants

WARMUP_SECONDS = 5.0
SAMPLE_RATE = 200  # samples per second and process: enough for a 20 s profile, light on 2 cores
TOP = 25
# The code a sample's innermost frame is in, by its file: first match wins. Paths are the image's.
AREAS = (
    (
        "the server (HTTP parsing, its protocol, its workers)",
        r"(^|/)(uvicorn|httptools|h11|daphne|twisted|autobahn|hypercorn|granian|gunicorn|wsproto|websockets)/",
    ),
    # uvloop's own work (polling, socket reads and writes, its C callbacks) has no Python frame: it
    # shows as the innermost Python frame that called into it (Runner.run, a transport's write).
    ("the event loop (asyncio, uvloop)", r"(^|/)(asyncio|uvloop)/|<frozen|selectors\.py"),
    ("asgiref (thread hops, locals)", r"(^|/)asgiref/"),
    ("Django's request handler", r"(^|/)django/core/handlers/"),
    ("Django's HTTP request and response objects", r"(^|/)django/http/"),
    ("URL resolving", r"(^|/)django/urls/"),
    (
        "middleware (Django's and the app's)",
        r"(^|/)django/middleware/|(^|/)core/middleware|(^|/)core/fastpath/middleware|(^|/)core/proxy",
    ),
    ("the app's fast path (core/fastpath)", r"(^|/)core/fastpath/"),
    ("signals and settings", r"(^|/)django/(dispatch|conf|utils/functional)"),
    ("JSON encoding", r"(^|/)json/"),
    ("the view (api/views.py)", r"(^|/)api/views"),
    ("logging", r"(^|/)logging/|(^|/)core/logging"),
    ("the rest of Django", r"(^|/)django/"),
)
# Frames on at least this share of the samples are the process's start and its event loop's run
# (not all: py-spy reads some stacks only in part): left out of the inclusive table.
ALWAYS_ON_STACK = 0.8
OTHER = "other Python code (standard library, Channels, ...)"
# Sampled with --gil, a thread that waits is not sampled; one that holds the GIL in a wait (rare) is
# still left out: samples whose innermost frame is one of these waits are idle threads (a
# supervisor's pipe, an idle pool thread, Python's resource tracker).
IDLE = re.compile(
    r"^(\w+\.)?(join|wait|_wait_for_tstate_lock|_recv|select|poll|get|main) "
    r"\((multiprocessing|threading|selectors|queue|subprocess)[^)]*\)$"
    r"|^_worker \(concurrent/futures/thread\.py\)$"  # a pool thread in its queue's get (C code)
)
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.profile", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--server", required=True, help="variant, one of deploy/servers.txt")
    p.add_argument("--endpoint", default="/api/ping", help="path loaded with wrk (default /api/ping)")
    p.add_argument("--duration", default="20s", help="seconds sampled: 20, 20s, 1m (default 20s)")
    p.add_argument("--connections", default="64", help="wrk connections (default 64, as the bench)")
    p.add_argument(
        "--hello",
        action="store_true",
        help="the raw ASGI hello-world of the bench's ceiling instead of Django, under the same server",
    )
    p.add_argument("--project", default="realtime-django", help="compose project of the stack")
    p.add_argument("--port", default="8000", help="the stack's HTTP port on 127.0.0.1")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="folder for <timestamp>-profile-<server>/")
    return p


# --- reading py-spy's collapsed stacks ---------------------------------------------------------


def read_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """``frame;frame;frame COUNT`` lines → (frames outermost first, count)."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _file(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["file"] if match else frame


def _function(frame: str) -> str:
    """``handle (django/core/handlers/asgi.py:160)`` → ``handle (django/core/handlers/asgi.py)``."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = re.sub(r"^.*/(site-packages|python3\.\d+|app)/", "", match["file"])  # the image's prefixes
    return f"{match['function']} ({path})"


def area_of(frame: str) -> str:
    path = _file(frame)
    for name, pattern in AREAS:
        if re.search(pattern, path):
            return name
    return OTHER


def summarize(stacks: list[tuple[list[str], int]]) -> str:
    """summary.md: samples by area of the innermost frame, then the top functions."""
    # Only Python frames: py-spy puts the process (its command line, which may hold ';') first.
    python = [([f for f in frames if _FRAME.match(f)], n) for frames, n in stacks]
    busy = [(frames, n) for frames, n in python if frames and not IDLE.match(_function(frames[-1]))]
    idle = sum(n for frames, n in python if frames) - sum(n for _, n in busy)
    total = sum(n for _, n in busy)
    if not total:
        return "No samples: was the server busy?\n"
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in busy:
        areas[area_of(frames[-1])] += n
        own[_function(frames[-1])] += n
        for function in {_function(frame) for frame in frames}:
            inclusive[function] += n
    inclusive = Counter({name: n for name, n in inclusive.items() if n < ALWAYS_ON_STACK * total})

    def table(title: str, counts: Counter[str], limit: int) -> list[str]:
        rows = [f"| {name} | {count * 100 / total:.1f} % |" for name, count in counts.most_common(limit)]
        return [f"| {title} | share of samples |", "| --- | --- |", *rows, ""]

    return "\n".join(
        [
            f"{total:,} samples of the app container's Python threads at work ({idle:,} more of "
            "threads that only waited: the supervisor, idle pool threads).",
            "",
            "### Where the innermost frame was",
            "",
            *table("code", areas, len(AREAS) + 1),
            f"### The {TOP} functions with the most samples, callees included",
            "",
            *table("function", inclusive, TOP),
            f"### The {TOP} functions with the most samples of their own",
            "",
            *table("function", own, TOP),
        ]
    )


# --- the run ------------------------------------------------------------------------------------


def py_spy() -> str:
    found = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not found:
        raise ConfigError("py-spy not found: pip install py-spy (on the host), or set PY_SPY to its path")
    return found


def container_pid(container: str) -> int:
    """The host PID of a container's first process: its children are the rest of it."""
    command = ["docker", "inspect", "-f", "{{.State.Pid}}", container]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)  # noqa: S603


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and all its descendants so far."""
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def run_wrk(run: WrkRun, out: Path) -> tuple[dict[str, float], float, float]:
    """wrk's row, the wall seconds it ran, and the CPU seconds wrk itself used."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    result = subprocess.run(run.command(), capture_output=True, text=True, timeout=run.timeout, check=False)  # noqa: S603
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.write_text(result.stdout + result.stderr)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_output(result.stdout), wall, used


def cpu_accounting(stack: Stack, run: WrkRun, out: Path) -> tuple[dict[str, float], str]:
    """One wrk run with no sampler: CPU microseconds per request of each part of the machine."""
    pids = {
        "the app container (the server and Django)": container_pid(stack.containers("app")[0]),
        "Nginx": container_pid(stack.containers("nginx")[0]),
    }
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    row, wall, wrk_cpu = run_wrk(run, out)
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used["wrk (the load generator)"] = wrk_cpu
    requests = max(1.0, row["requests"])
    machine = (os.cpu_count() or 1) * wall
    used["idle or elsewhere (the kernel's network path, Docker, other processes)"] = max(
        0.0, machine - sum(used.values())
    )
    lines = [
        f"CPU time per request, {row['requests']:,.0f} requests in {wall:.1f} s at {row['rps']:,.0f} req/s "
        f"({os.cpu_count()} cores: {machine * 1e6 / requests:,.0f} µs of machine time per request):",
        "",
        "| where | CPU µs per request | share of the machine |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {seconds * 1e6 / requests:,.0f} | {seconds * 100 / machine:.0f} % |"
            for name, seconds in used.items()
        ),
        "",
    ]
    return row, "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.server not in variants():
            raise ConfigError(f"unknown SERVER {args.server!r}; valid: {' '.join(variants())}")
        seconds = parse_seconds(args.duration, "DURATION")
        spy = py_spy()
    except ConfigError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 2
    app = "hello" if args.hello else args.server
    out_dir = Path(args.output) / f"{dt.datetime.now():%Y%m%d-%H%M%S}-profile-{app}"
    out_dir.mkdir(parents=True)
    stack = Stack(server=args.server, project=args.project, http_port=int(args.port), logs=out_dir)
    if args.hello:  # the ceiling's compose file: its fixed-response Nginx needs a port of its own
        stack.compose_files = [CEILING_COMPOSE]
        stack.env = {"BENCH_FIXED_PORT": str(free_port())}
    try:
        stack.up(replicas=1)
    except StackError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    url = f"{stack.url}{args.endpoint}"
    connections = int(args.connections)
    run_wrk(WrkRun(url, connections, 0, WARMUP_SECONDS), out_dir / "wrk-warmup.txt")
    _, accounting = cpu_accounting(
        stack, WrkRun(url, connections, 0, seconds), out_dir / "wrk-accounting.txt"
    )
    # Sampled: wrk runs for the whole sampling time and a second either side.
    load = WrkRun(url, connections, 0, seconds + 2)
    with subprocess.Popen(load.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as wrk:  # noqa: S603
        time.sleep(1)
        record = [
            spy, "record", "--pid", str(container_pid(stack.containers("app")[0])), "--subprocesses",
            "--rate", str(SAMPLE_RATE), "--duration", str(int(seconds)), "--format", "raw",
            "--output", str(out_dir / "profile.txt"), "--nonblocking",
            # Only a thread that holds the GIL: py-spy cannot tell a thread asleep in C code (the
            # metrics' sampler in time.sleep, the event loop in its poll) from one at work, and
            # would count those as their innermost Python frame (PoolSampler.run, Runner.run).
            "--gil",
        ]  # fmt: skip
        spied = subprocess.run(record, capture_output=True, text=True, timeout=seconds + 60, check=False)  # noqa: S603
        output, _ = wrk.communicate(timeout=load.timeout)
    (out_dir / "wrk-sampled.txt").write_text(output)
    if spied.returncode != 0 or not (out_dir / "profile.txt").exists():
        print(f"profile: py-spy failed: {spied.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    row = parse_output(output)
    summary = summarize(read_collapsed((out_dir / "profile.txt").read_text().splitlines()))
    text = (
        f"# {args.server}{' (raw ASGI hello-world)' if args.hello else ''}: GET {args.endpoint} under wrk, "
        f"{connections} connections\n\n{accounting}\n"
        f"## Sampled by py-spy ({SAMPLE_RATE} samples/s per process, "
        f"{row['rps']:,.0f} req/s while sampled)\n\n"
        f"{summary}"
    )
    (out_dir / "summary.md").write_text(text)
    print(text)
    print(f"profile: {out_dir}/ (profile.txt: collapsed stacks); the stack is still up on {stack.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
