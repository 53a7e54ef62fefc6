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
PING_INTERVAL = 30  # seconds: far longer than the wait below
SOCKETS = 10


def test_a_connection_the_client_left_is_let_go_at_once(tmp_path):
    # A client that leaves without a close frame (a reset, or the end of its connection): Hypercorn
    # tells the app, the app returns, and the connection is over. Hypercorn's ping task kept
    # sleeping out its websocket_ping_interval all the same, and the connection's socket and tasks
    # waited for it: in the soak, hundreds of sockets held up to 20 s after their clients had gone.
    (tmp_path / "wait_app.py").write_text(WAIT_APP)
    config = tmp_path / "hypercorn.toml"
    config.write_text(f"workers = 0\nwebsocket_ping_interval = {PING_INTERVAL}\n")  # in this process
    port = free_port()
    argv = [
        sys.executable, str(DEPLOY / "bin" / "run_hypercorn.py"), "--config", str(config),
        "--bind", f"127.0.0.1:{port}", "wait_app:app",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "hypercorn.log"
    with running(argv, env, tmp_path, log) as proc:
        first = websocket_when_up(f"ws://127.0.0.1:{port}/", log)
        first.close()
        time.sleep(0.5)
        before = socket_count(proc.pid)
        clients = [websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5) for _ in range(SOCKETS)]
        assert socket_count(proc.pid) == before + SOCKETS
        for client in clients:
            client.sock.shutdown(socket.SHUT_RDWR)  # the end of the connection, no close frame
            client.sock.close()
        deadline = time.monotonic() + 5
        while socket_count(proc.pid) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        held = socket_count(proc.pid) - before
        assert held == 0, (
            f"{held} of {SOCKETS} sockets still held 5 s after their clients left\n{log_tail(log)}"
        )


HTTP_APP = """
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""
KEEP_ALIVE_TIMEOUT = 30  # seconds: far longer than the wait below


def test_an_idle_connection_the_client_closed_is_let_go_at_once(tmp_path):
    # Nginx closes an idle upstream connection after a second (nginx/upstreams.conf.template); its
    # socket on Hypercorn's side sat in CLOSE_WAIT until keep_alive_timeout ran out.
    (tmp_path / "http_app.py").write_text(HTTP_APP)
    config = tmp_path / "hypercorn.toml"
    config.write_text(f"workers = 0\nkeep_alive_timeout = {KEEP_ALIVE_TIMEOUT}\n")
    port = free_port()
    argv = [
        sys.executable, str(DEPLOY / "bin" / "run_hypercorn.py"), "--config", str(config),
        "--bind", f"127.0.0.1:{port}", "http_app:app",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "hypercorn.log"
    with running(argv, env, tmp_path, log) as proc:
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
        deadline = time.monotonic() + 5
        while socket_count(proc.pid) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        held = socket_count(proc.pid) - before
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
