"""Command line: throwaway services around a command, or an app server to poke at by hand.

    python -m tests.harness services -- pytest -q         # REDIS_URL and DATABASE_URL exported
    python -m tests.harness app uvicorn                   # Redis + PostgreSQL + the app, until Ctrl-C

``services`` exits with the command's exit code; every service is stopped and its temp dir removed
whatever happens (set HARNESS_KEEP=1 to keep them).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from types import FrameType

from tests.harness import SERVERS, AppServer, HarnessError, PostgresServer, RedisServer


class _TerminatedError(Exception):
    pass


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _TerminatedError(signum)

    signal.signal(signal.SIGTERM, handler)


def _say(message: str) -> None:
    print(f"[harness] {message}", file=sys.stderr, flush=True)


def run_services(command: Sequence[str]) -> int:
    if not command:
        _say("nothing to run: python -m tests.harness services -- <command...>")
        return 2
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        postgres = stack.enter_context(PostgresServer())
        _say(f"REDIS_URL={redis.url}")
        _say(f"DATABASE_URL={postgres.url}")
        env = {**os.environ, "REDIS_URL": redis.url, "DATABASE_URL": postgres.url}
        child = subprocess.Popen(list(command), env=env)
        try:
            return _exit_code(child.wait())
        except (KeyboardInterrupt, _TerminatedError):
            # The child shares our terminal (it got the Ctrl-C too); give it time to finish.
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
            try:
                return _exit_code(child.wait(timeout=30))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                return 130
    return 1  # pragma: no cover - unreachable, ExitStack does not swallow exceptions


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_app(server: str) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        postgres = stack.enter_context(PostgresServer())
        app = stack.enter_context(AppServer(server, redis_url=redis.url, database_url=postgres.url))
        _say(f"REDIS_URL={redis.url}")
        _say(f"DATABASE_URL={postgres.url}")
        _say(f"{server} serving {app.url} (log: {app.log_path}); Ctrl-C stops everything")
        try:
            while not stop.wait(1.0):
                if not app.running:
                    _say(f"{server} exited\n{app.log_excerpt()}")
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="action", required=True)
    services = commands.add_parser("services", help="start Redis + PostgreSQL, run a command, stop them")
    services.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    app = commands.add_parser("app", help="start Redis + PostgreSQL + one app server until Ctrl-C")
    app.add_argument("server", choices=SERVERS)
    args = parser.parse_args(argv)
    try:
        if args.action == "services":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            _raise_on_sigterm()
            return run_services(command)
        return run_app(args.server)
    except HarnessError as exc:
        _say(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
