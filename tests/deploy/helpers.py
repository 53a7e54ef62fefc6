"""Shared by the deployment tests: repository paths, processes, HTTP probes (the variant registry and
free ports: stackctl)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import websocket

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The virtualenv running the tests (.venv/bin with `make`): its servers stand in for /opt/venv/bin.
VENV_BIN = Path(sys.executable).parent


def http_get(port: int, path: str, host: str = "localhost", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_http(port: int, path: str, proc: subprocess.Popen[bytes], deadline: float) -> int:
    """Poll until the path answers 200; the last status (0: no answer) when the time is up."""
    status = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return status
        try:
            status, _ = http_get(port, path)
        except OSError:
            status = 0
        if status == 200:
            return status
        time.sleep(0.2)
    return status


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in a session of its own; whatever is left of that session is killed after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def websocket_when_up(url: str, log: Path, sockopt: tuple = (), seconds: float = 20) -> websocket.WebSocket:
    """A WebSocket to ``url`` once the server answers (``sockopt``: the client socket's options)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return websocket.create_connection(url, timeout=5, sockopt=sockopt)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer\n{log_tail(log)}") from None
            time.sleep(0.2)
