"""Child processes that always end, and Ctrl-C / SIGTERM turned into an orderly stop.

Every child (make, Locust, wrk, docker) runs in its own session, so a Ctrl-C in the terminal
reaches only the bench, which then stops the child itself (SIGTERM to its whole process group,
SIGKILL after a grace period) and takes the stack down. A signal that arrives while the stack is
being taken down is noted and otherwise ignored, so the clean-up cannot be cut short.
"""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from loadtests.bench.config import ROOT

STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL for a child's process group


class Interrupted(Exception):  # noqa: N818 - it is the event, not an error
    """The bench got SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass(frozen=True)
class Completed:
    command: list[str]
    returncode: int
    output: str  # stdout and stderr, interleaved (empty when written to a log file)
    timed_out: bool = False

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


class _Signals:
    shielded = False
    received: int | None = None

    @classmethod
    def handler(cls, signum: int, _frame: FrameType | None) -> None:
        cls.received = signum
        if cls.shielded:
            print(
                f"\n{signal.Signals(signum).name}: cleaning up first, please wait",
                file=sys.stderr,
                flush=True,
            )
            return
        raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted inside this block (then the old handlers return)."""
    previous = {sig: signal.signal(sig, _Signals.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Clean-up that a signal must not interrupt."""
    before, _Signals.shielded = _Signals.shielded, True
    try:
        yield
    finally:
        _Signals.shielded = before


def stop_group(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = STOP_GRACE) -> None:
    """SIGTERM to the child's process group, SIGKILL if it is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(
    command: Sequence[str],
    *,
    timeout: float,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
) -> Completed:
    """Run ``command`` to its end or ``timeout``; output goes to ``log`` (appended) or is returned.

    On Interrupted (or any other exception) the child is stopped before the exception goes on.
    """
    argv = [str(part) for part in command]
    with contextlib.ExitStack() as stack:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(log.open("a"))
            sink.write(f"$ {' '.join(argv)}\n")
            sink.flush()
            stdout: int | object = sink
        else:
            stdout = subprocess.PIPE
        process = subprocess.Popen(  # noqa: S603 - argv lists built by this package, no shell
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C reaches the bench only; it stops the child
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(process)
            output, _ = process.communicate()  # what was written until the end
            return Completed(argv, process.returncode, output or "", timed_out=True)
        except BaseException:
            stop_group(process)
            raise
        return Completed(argv, process.returncode, output or "")


def last_signal() -> int | None:
    """The signal that stopped the bench, if any (for its exit status)."""
    return _Signals.received
