"""``make loadtest``: one scenario, headless, against the local stack, reports under ``results/``.

    python -m loadtests.bench.loadtest --server uvicorn --scenario chat --users 500 --duration 2m --replicas 2

Brings the stack up first (``make up`` is idempotent: a running stack is kept, a changed setting
recreates what it changes), with Nginx's per-address limits raised, since every Locust user comes
from the one address of this machine. The stack stays up afterwards; ``make down`` stops it.
Writes Locust's CSV files and HTML report to ``results/<timestamp>-<server>-<scenario>/`` and exits
with Locust's status (1 when any request failed).
"""

import argparse
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.bench import sockets
from loadtests.bench.config import (
    DEFAULT_OUTPUT,
    ConfigError,
    FanoutSettings,
    SocketsSettings,
    locust_workers,
    parse_seconds,
)
from loadtests.bench.fanout import FanoutRun
from loadtests.bench.locust_csv import LOCUSTFILES, LocustRun, spawn_rate
from loadtests.bench.stack import LOAD_TEST_LIMITS, Stack, StackError, memory_pattern
from loadtests.fanout import __main__ as fanout_cli
from loadtests.soak import cli as soak_cli
from loadtests.sockets import __main__ as sockets_cli
from loadtests.sockets.plan import PlanError, parse_steps
from stackctl import inherited_environment, variants

DEFAULT_USERS = {"http": 50, "echo": 100, "chat": 200, "capacity": 1000, "soak": soak_cli.run.DEFAULT_USERS}
DEFAULT_DURATION = "60s"
DEFAULT_PROJECT = "realtime-django"  # the Makefile's PROJECT: the user's own stack
# `fanout` and `sockets` are not Locust: the generators of loadtests/fanout and loadtests/sockets,
# whose options come after -- (or in LOADTEST_ARGS).
SCENARIOS = (*LOCUSTFILES, "fanout", "sockets")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.loadtest", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--server", required=True, help="variant, one of deploy/servers.txt")
    p.add_argument("--scenario", default="http", help=f"one of {', '.join(SCENARIOS)} (default http)")
    p.add_argument("--users", help="Locust users, one socket each for WebSockets (default per scenario)")
    p.add_argument("--duration", default=DEFAULT_DURATION, help="run time: 60, 60s, 2m, 1m30s (default 60s)")
    p.add_argument("--spawn-rate", help="users started per second (default: all within a second or two)")
    p.add_argument("--replicas", default="1", help="app containers (chat: 2 makes rooms span replicas)")
    p.add_argument("--project", default=DEFAULT_PROJECT, help="compose project of the stack")
    p.add_argument("--port", default="8000", help="the stack's HTTP port on 127.0.0.1")
    p.add_argument(
        "--processes",
        default=os.environ.get("LOADTEST_PROCESSES", "-1"),
        help="Locust workers: -1 one per core, 0 one process (LOADTEST_PROCESSES)",
    )
    p.add_argument(
        "--output", default=str(DEFAULT_OUTPUT), help="folder for <timestamp>-<server>-<scenario>/"
    )
    p.add_argument("locust_args", nargs="*", help="more Locust options after --, e.g. -- --chat-rooms 5")
    return p


def _positive_int(value: str, setting: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{setting} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"{setting} must be >= 1, got {value!r}")
    return number


def build_fanout(args: argparse.Namespace, out_dir: Path) -> tuple[Stack, FanoutRun]:
    """The fan-out throughput: the generator's options (``-- --rooms 8 ...`` or LOADTEST_ARGS) over the
    bench's defaults; no users nor duration (the rooms and the steps say both)."""
    if args.users or args.duration != DEFAULT_DURATION:
        raise ConfigError("SCENARIO=fanout takes no USERS or DURATION: give --rooms, --members, --max-rate, "
                          "... in LOADTEST_ARGS (python -m loadtests.fanout --help)")  # fmt: skip
    replicas = _positive_int(str(args.replicas), "REPLICAS")
    port = _positive_int(str(args.port), "HTTP_PORT")
    stack = Stack(server=args.server, project=args.project, http_port=port, replicas=replicas, logs=out_dir)
    extra = shlex.split(os.environ.get("LOADTEST_ARGS", "")) + list(args.locust_args)
    try:
        options = fanout_cli.parser().parse_args(["--host", stack.url, *extra])
        fanout_cli.plan_of(options)
    except ValueError as exc:
        raise ConfigError(f"fanout: {exc}") from None
    except SystemExit:  # argparse has said what it could not read
        raise ConfigError(f"fanout: bad generator options {extra}") from None
    settings = FanoutSettings(
        rooms=options.rooms, members=options.members, start=options.start, factor=options.factor,
        max_rate=options.max_rate, warmup=options.warmup, settle=options.settle, duration=options.step,
        p99_ms=options.p99_ms, replicas=replicas,
    )  # fmt: skip
    return stack, FanoutRun(stack.url, settings, out_dir / "fanout.json")


def build_sockets(args: argparse.Namespace, out_dir: Path) -> tuple[Stack, sockets.SocketsRun]:
    """Sockets to the limit: the tool's options (``-- --steps 2000,5000 ...`` or LOADTEST_ARGS) over
    the bench stage's defaults, and the stage's Nginx (workers, connections, memory) unless the
    caller's environment sets those itself."""
    if args.users or args.duration != DEFAULT_DURATION:
        raise ConfigError("SCENARIO=sockets takes no USERS or DURATION: give --steps, --rate, --settle "
                          "in LOADTEST_ARGS (python -m loadtests.sockets --help)")  # fmt: skip
    defaults = SocketsSettings()
    # Every broadcast crosses the channel layer, as in the bench's stage.
    replicas = max(_positive_int(str(args.replicas), "REPLICAS"), defaults.replicas)
    port = _positive_int(str(args.port), "HTTP_PORT")
    extra = shlex.split(os.environ.get("LOADTEST_ARGS", "")) + list(args.locust_args)
    try:
        options = sockets_cli.parser().parse_args(["--host", "http://127.0.0.1", *extra])
        settings = SocketsSettings(
            steps=parse_steps(options.steps), rate=options.rate, settle=options.settle, replicas=replicas
        )
    except PlanError as exc:
        raise ConfigError(f"sockets: {exc}") from None
    except SystemExit:  # argparse has said what it could not read
        raise ConfigError(f"sockets: bad options {extra}") from None
    nginx = {key: os.environ.get(key) or value for key, value in sockets.nginx_environment(settings).items()}
    stack = Stack(
        server=args.server, project=args.project, http_port=port, replicas=replicas, env=nginx, logs=out_dir
    )
    return stack, sockets.SocketsRun(stack.url, args.project, settings, out_dir / "sockets.json")


def build(
    args: argparse.Namespace, out_dir: Path
) -> tuple[Stack, LocustRun | FanoutRun | sockets.SocketsRun]:
    """The stack and the run the arguments describe; ConfigError names a bad one."""
    servers = variants()
    if args.server not in servers:
        raise ConfigError(f"unknown SERVER {args.server!r}; valid: {' '.join(servers)}")
    if args.scenario not in SCENARIOS:
        raise ConfigError(f"unknown SCENARIO {args.scenario!r}; valid: {' '.join(SCENARIOS)}")
    if args.scenario == "fanout":
        return build_fanout(args, out_dir)
    if args.scenario == "sockets":
        return build_sockets(args, out_dir)
    users = _positive_int(args.users, "USERS") if args.users else DEFAULT_USERS[args.scenario]
    seconds = parse_seconds(args.duration, "DURATION")
    replicas = _positive_int(str(args.replicas), "REPLICAS")
    if args.scenario == "soak":  # rooms span replicas: every broadcast crosses the channel layer
        replicas = max(replicas, soak_cli.MIN_REPLICAS)
    port = _positive_int(str(args.port), "HTTP_PORT")
    try:
        processes = int(args.processes)
    except ValueError:
        raise ConfigError(
            f"LOADTEST_PROCESSES must be -1, 0 or a number of workers, got {args.processes!r}"
        ) from None
    if processes < -1:
        raise ConfigError(f"LOADTEST_PROCESSES must be -1, 0 or a number of workers, got {processes}")
    workers = locust_workers(processes)
    rate = float(args.spawn_rate) if args.spawn_rate else spawn_rate(users, workers)
    if not rate > 0:
        raise ConfigError(f"the spawn rate must be > 0, got {args.spawn_rate!r}")
    stack = Stack(server=args.server, project=args.project, http_port=port, replicas=replicas, logs=out_dir)
    options: list[str] = []
    if args.scenario == "capacity":
        options += [
            "--capacity-memory-containers", memory_pattern(args.project),
            "--capacity-report", str(out_dir / "capacity-memory.json"),
        ]  # fmt: skip
    extra = shlex.split(os.environ.get("LOADTEST_ARGS", "")) + list(args.locust_args)
    run = LocustRun(
        scenario=args.scenario,
        host=stack.url,
        users=users,
        spawn_rate=rate,
        seconds=seconds,
        prefix=out_dir / "locust",
        processes=workers,
        options=(*options, *extra),
        summary_only=False,
    )
    return stack, run


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.output) / f"{stamp}-{args.server}-{args.scenario}"
    try:
        stack, run = build(args, out_dir)
        soak_plan = (
            soak_cli.plan_for(run.users) if isinstance(run, LocustRun) and args.scenario == "soak" else None
        )
    except ConfigError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    limits = " ".join(f"{k}={v}" for k, v in LOAD_TEST_LIMITS.items())
    print(
        f"loadtest: make up SERVER={stack.server} REPLICAS={stack.replicas} (Nginx limits raised: {limits})"
    )
    try:
        stack.up()
    except StackError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 1
    if soak_plan is not None:  # the soak runs Locust itself, twice, with the stack sampled meanwhile
        return soak_cli.soak(stack, soak_plan, out_dir, run.processes, run.options)
    command = run.command(sys.executable)
    (out_dir / "command.txt").write_text(shlex.join(command) + "\n")
    print(f"loadtest: {shlex.join(command)}", flush=True)
    # Locust shares the terminal: a Ctrl-C reaches it, and it stops and writes its reports. This
    # process only waits for it, so it can still say where the reports are.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = subprocess.call(command, env=inherited_environment(), timeout=run.timeout)  # noqa: S603
    except subprocess.TimeoutExpired:
        print(f"loadtest: Locust did not stop within {run.timeout:.0f} s", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, previous)
    if isinstance(run, FanoutRun | sockets.SocketsRun):
        print(f"loadtest: result in {run.output} (every step); the generator exited with {code}")
    else:
        print(f"loadtest: reports in {out_dir}/ (locust.html, locust_stats.csv); Locust exited with {code}")
    print(f"loadtest: the stack is still up on {stack.url} (make down PROJECT={stack.project} stops it)")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
