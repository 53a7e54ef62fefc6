"""deploy/bin/prefork.py: one socket shared by N children; a stop refuses new connections at once.

The children here are small Python servers that do what Daphne and Hypercorn do on SIGTERM: close
their copy of the listening socket, then keep draining for a while before they exit.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackctl import free_port
from tests.deploy.helpers import DEPLOY, running

PREFORK = DEPLOY / "bin" / "prefork.py"
DRAIN_SECONDS = 4.0  # how long a stopping child keeps running after it closed its listening socket

CHILD = """
import signal, socket, sys, threading, time
listener = socket.socket(fileno=int(sys.argv[1]))
listener.settimeout(0.1)  # an accept blocked in the kernel would keep the closed socket alive
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())

def serve():
    while not stopping.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        conn.sendall(b"hello\\n")
        conn.close()

threading.Thread(target=serve, daemon=True).start()
stopping.wait()
listener.close()
time.sleep(float(sys.argv[2]))  # draining open connections
"""


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        return conn.recv(16)


def _connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.settimeout(1)
            return conn.recv(16) == b""  # accepted by the kernel, then reset when the socket closed
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except TimeoutError:
        return False  # queued in a backlog nobody accepts


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return script


def _prefork(port: int, child: Path, grace: float) -> list[str]:
    return [
        sys.executable, str(PREFORK), "--bind", f"127.0.0.1:{port}", "--processes", "2",
        "--grace", str(grace), "--", sys.executable, str(child), "{fd}", str(DRAIN_SECONDS),
    ]  # fmt: skip


def _wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _greeting(port) == b"hello\n":
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("prefork children never answered")


def test_stop_refuses_new_connections_while_children_drain(child_script: Path, tmp_path: Path) -> None:
    port = free_port()
    with running(_prefork(port, child_script, grace=10), {}, tmp_path, tmp_path / "prefork.log") as proc:
        _wait_serving(port, proc)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "the children are still draining"
        # Nobody holds the socket open any more: a proxy's new connection is refused (and retried on
        # another replica), not parked in a backlog until the last child exits.
        assert _connect_refused(port)
        assert proc.wait(timeout=DRAIN_SECONDS + 10) == 0


def test_children_past_the_grace_period_are_killed(child_script: Path, tmp_path: Path) -> None:
    port = free_port()
    with running(_prefork(port, child_script, grace=1), {}, tmp_path, tmp_path / "prefork.log") as proc:
        _wait_serving(port, proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DRAIN_SECONDS + 10) == 1  # not a clean stop
        assert time.monotonic() - started < DRAIN_SECONDS


def test_a_child_that_dies_is_restarted(child_script: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "prefork.log"
    with running(_prefork(port, child_script, grace=10), {}, tmp_path, log) as proc:
        _wait_serving(port, proc)
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(children) == 2
        subprocess.run(["kill", "-KILL", children[0]], check=True)
        deadline = time.monotonic() + 10
        while "restarting" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"child {children[0]} exited" in log.read_text()
        assert _greeting(port) == b"hello\n"
