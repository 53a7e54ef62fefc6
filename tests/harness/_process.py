"""The common machinery: a throwaway service in its own temp dir, its own process group and log file."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from stackctl import free_port

# Set HARNESS_KEEP=1 to keep every temp dir (data, logs) after the run, for a post-mortem.
KEEP_ENV = "HARNESS_KEEP"

_LIVE: set[Service] = set()


class HarnessError(RuntimeError):
    """A service did not start, did not answer in time, or failed a setup step."""


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; raise ``HarnessError`` after ``timeout`` seconds.

    ``alive`` is called before each attempt and may raise to stop waiting early (a process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise HarnessError(f"{what}: not ready within {timeout:g}s")
        time.sleep(interval)


def live_services() -> list[Service]:
    """Services started and not closed yet, running or stopped (their logs are shown on failure)."""
    return sorted(_LIVE, key=lambda service: service.name)


class Service:
    """A process started on a known port, stopped with a signal, restartable on the same port.

    ``stop()`` keeps the temp dir (data, log, port), so ``start()`` brings the same service back;
    ``close()`` stops it and removes the temp dir. The context manager starts and closes.
    """

    name = "service"
    stop_signal = signal.SIGTERM
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, *, port: int | None = None, keep: bool | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.keep = keep if keep is not None else os.environ.get(KEEP_ENV, "") not in ("", "0")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"harness-{self.name}-"))
        self.log_path = self.tmp / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._closed = False

    # --- To be provided by each service ----------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the service answers; called repeatedly while starting."""
        raise NotImplementedError

    def environment(self) -> Mapping[str, str] | None:
        return None

    def cwd(self) -> Path:
        return self.tmp

    def popen_options(self) -> dict[str, object]:
        return {}

    def before_start(self) -> None:
        """Runs before every start (first start and restarts)."""

    def after_first_start(self) -> None:
        """Runs once, after the first successful start."""

    # --- Life cycle --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        if self._closed:
            raise HarnessError(f"{self.name} was closed; create a new one")
        if self.running:
            return self
        first = self.process is None
        _LIVE.add(self)
        try:
            self.before_start()
            self._spawn(self.command())
            wait_until(self.ready, timeout=self.start_timeout, what=self.describe(), alive=self._check_alive)
            if first:
                self.after_first_start()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, HarnessError):
                raise HarnessError(f"{exc}\n{self.log_excerpt()}") from None
            raise
        return self

    def stop(self) -> None:
        """Graceful stop (``stop_signal``), SIGKILL after ``stop_timeout``; leftovers of the group too."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(process.pid)
                process.wait(timeout=10)
        # Workers a server forked (granian, hypercorn) are in the same session/process group.
        self._kill_group(process.pid)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, then remove the temp dir (unless kept)."""
        try:
            self.stop()
        finally:
            _LIVE.discard(self)
            if not self._closed:
                self._closed = True
                if self.keep:
                    print(f"[harness] kept {self.tmp}")
                else:
                    shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- Helpers -----------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"{self.name} on 127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.describe()} {state}>"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_excerpt(self, lines: int = 60) -> str:
        return f"--- last lines of {self.log_path} ---\n{self.log_tail(lines)}\n--- end of log ---"

    def run_step(self, args: Sequence[str], *, timeout: float = 120, **options: object) -> None:
        """Run a setup command (migrate, initdb...) with its output appended to the log."""
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    list(args),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                    **options,  # type: ignore[arg-type]
                )
            except subprocess.TimeoutExpired:
                raise HarnessError(f"{self.name}: {args[0]} did not finish within {timeout:g}s") from None
        if result.returncode != 0:
            # start() adds the log excerpt, which holds this command's output.
            raise HarnessError(f"{self.name}: {' '.join(args)} exited with {result.returncode}")

    def _spawn(self, args: list[str]) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd(),
                env=self.environment(),
                start_new_session=True,  # its own process group: stopped as a whole, never by name
                **self.popen_options(),  # type: ignore[arg-type]
            )

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise HarnessError(f"{self.describe()} exited with {self.process.returncode} while starting")

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _stop_leftovers() -> None:
    """Last resort when the interpreter exits with services not closed (an interrupted run)."""
    for service in list(_LIVE):
        with contextlib.suppress(Exception):
            service.close()
