"""deploy/bin/run_hypercorn.py: a message over the limit costs the server at most the limit and one
read, and a connection whose client left (a WebSocket, or an idle keep-alive connection) is let go
at once.

The buffer is checked in a fresh interpreter (the script replaces Hypercorn's buffer class for the
whole process), the connections on a Hypercorn process of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import websocket

from stackctl.host import free_port
from tests.deploy.helpers import DEPLOY, log_tail, running, wait_for_http, websocket_when_up

LIMIT = 65_536
CHUNK = 65_536  # one read's worth of a message's data
CHUNKS = 512  # a 32 MiB message

SCRIPT = """
import json, runpy, sys
from hypercorn.protocol import ws_stream
from wsproto.events import TextMessage

stock = ws_stream.WebsocketBuffer
bounded = runpy.run_path(sys.argv[1], run_name="run_hypercorn")["BoundedWebsocketBuffer"]
limit, chunk, chunks = map(int, sys.argv[2:])

def stored(buffer_class):
    buffer, refusals = buffer_class(limit), 0
    for index in range(chunks):
        try:
            buffer.extend(TextMessage(data="x" * chunk, message_finished=index == chunks - 1))
        except ws_stream.FrameTooLargeError:
            refusals += 1
    return {"stored": buffer.value.tell(), "refusals": refusals}

print(json.dumps({
    "stock": stored(stock),
    "bounded": stored(bounded),
    "installed": ws_stream.WebsocketBuffer is not stock,
}))
"""


def buffers() -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(DEPLOY / "bin" / "run_hypercorn.py"),
            str(LIMIT),
            str(CHUNK),
            str(CHUNKS),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_message_over_the_limit_stops_being_stored():
    found = buffers()
    assert found["installed"]  # the script puts its buffer in Hypercorn's place
    # Every read over the limit is refused (each answer is the same 1009 close), none is kept.
    assert found["bounded"] == {"stored": LIMIT + CHUNK, "refusals": CHUNKS - 1}


def test_hypercorns_own_buffer_keeps_the_whole_message():
    """Why the script exists. When this fails, Hypercorn bounds its buffer itself: drop the script
    (deploy/servers/hypercorn.sh runs Hypercorn directly again) and this test."""
    assert buffers()["stock"]["stored"] == CHUNK * CHUNKS


WAIT_APP = """
async def app(scope, receive, send):
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
"""
HTTP_APP = """
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""
LONG_WAIT = 30  # seconds of Hypercorn's ping interval and keep-alive timeout: far longer than the wait below
SOCKETS = 10


@contextlib.contextmanager
def hypercorn(
    tmp_path: Path, app_source: str, config: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """run_hypercorn.py serving ``app_source``'s ``app`` in one process, with ``config`` (TOML) added."""
    (tmp_path / "test_app.py").write_text(app_source)
    toml = tmp_path / "hypercorn.toml"
    toml.write_text(f"workers = 0\n{config}\n")
    port = free_port()
    argv = [
        sys.executable, str(DEPLOY / "bin" / "run_hypercorn.py"), "--config", str(toml),
        "--bind", f"127.0.0.1:{port}", "test_app:app",
    ]  # fmt: skip
    log = tmp_path / "hypercorn.log"
    with running(argv, {**os.environ, "PYTHONPATH": str(tmp_path)}, tmp_path, log) as proc:
        yield proc, port, log


def sockets_held(pid: int, before: int, seconds: float = 5) -> int:
    """How many sockets over ``before`` the process still holds after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while socket_count(pid) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    return socket_count(pid) - before


def test_a_connection_the_client_left_is_let_go_at_once(tmp_path):
    # A client that leaves without a close frame (a reset, or the end of its connection): Hypercorn
    # tells the app, the app returns, and the connection is over. Hypercorn's ping task kept
    # sleeping out its websocket_ping_interval all the same, and the connection's socket and tasks
    # waited for it: in the soak, hundreds of sockets held up to 20 s after their clients had gone.
    with hypercorn(tmp_path, WAIT_APP, f"websocket_ping_interval = {LONG_WAIT}") as (proc, port, log):
        websocket_when_up(f"ws://127.0.0.1:{port}/", log).close()
        time.sleep(0.5)
        before = socket_count(proc.pid)
        clients = [websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5) for _ in range(SOCKETS)]
        assert socket_count(proc.pid) == before + SOCKETS
        for client in clients:
            client.sock.shutdown(socket.SHUT_RDWR)  # the end of the connection, no close frame
            client.sock.close()
        held = sockets_held(proc.pid, before)
        assert held == 0, (
            f"{held} of {SOCKETS} sockets still held 5 s after their clients left\n{log_tail(log)}"
        )


def test_an_idle_connection_the_client_closed_is_let_go_at_once(tmp_path):
    # Nginx closes an idle upstream connection after a second (nginx/upstreams.conf.template); its
    # socket on Hypercorn's side sat in CLOSE_WAIT until keep_alive_timeout ran out.
    with hypercorn(tmp_path, HTTP_APP, f"keep_alive_timeout = {LONG_WAIT}") as (proc, port, log):
        assert wait_for_http(port, "/", proc, time.monotonic() + 20) == 200, log_tail(log)
        time.sleep(0.5)
        before = socket_count(proc.pid)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(SOCKETS)]
        for client in clients:  # one request each, answered, and the connection kept alive
            client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200"), log_tail(log)
        assert socket_count(proc.pid) == before + SOCKETS
        for client in clients:
            client.close()  # idle, ended by the client
        held = sockets_held(proc.pid, before)
        assert held == 0, (
            f"{held} of {SOCKETS} idle sockets still held 5 s after their clients closed\n{log_tail(log)}"
        )


def socket_count(pid: int) -> int:
    """The process's open sockets, from /proc."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count
