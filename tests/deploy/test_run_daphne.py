"""deploy/bin/run_daphne.py: on SIGTERM, every pending application instance is cancelled and waited for.

Run in a fresh interpreter: importing Daphne installs Twisted's asyncio reactor for the process.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

from stackctl.host import free_port
from tests.deploy.helpers import DEPLOY, log_tail, running, websocket_when_up

SCRIPT = """
import asyncio, json, runpy, sys
module = runpy.run_path(sys.argv[1], run_name="run_daphne")
Server = module["Server"]

async def main():
    ended = []

    async def connection(name, raises):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # a connection's own cleanup (closing, leaving its room)
            ended.append(name)
            if raises:
                raise

    server = Server.__new__(Server)  # only kill_all_applications is exercised
    server.connections = {
        "idle keep-alive": {"connected": 0.0},  # its last instance was reaped: no key
        "raises": {"application_instance": asyncio.ensure_future(connection("raises", True))},
        "returns": {"application_instance": asyncio.ensure_future(connection("returns", False))},
    }
    await asyncio.sleep(0)
    done = asyncio.get_running_loop().create_future()
    server.kill_all_applications().addBoth(lambda _: done.set_result(sorted(ended)))
    print(json.dumps(await asyncio.wait_for(done, 5)))

asyncio.run(main())
"""


def outcome_of(script: str) -> object:
    """What ``script`` printed last, as JSON, run on run_daphne.py's module in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(DEPLOY / "bin" / "run_daphne.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_sigterm_cancels_every_instance_and_waits_for_all() -> None:
    # No KeyError on the idle connection, and the wait outlasts the instance that raised.
    assert outcome_of(SCRIPT) == ["raises", "returns"]


SEND_WAITS_SCRIPT = """
import asyncio, json, runpy, sys
module = runpy.run_path(sys.argv[1], run_name="run_daphne")
Server, SendFlow = module["Server"], module["SendFlow"]

class Protocol:
    def __init__(self):
        self.send_flow = SendFlow()
        self.sent = []

    def handle_reply(self, message):
        self.sent.append(message["type"])

async def main():
    server = Server.__new__(Server)  # only handle_reply is exercised
    protocol = Protocol()
    server.connections = {protocol: {}}
    protocol.send_flow.pauseProducing()  # Twisted: the write buffer is over its bufferSize
    frame = asyncio.ensure_future(server.handle_reply(protocol, {"type": "websocket.send", "text": "x"}))
    await asyncio.sleep(0.05)
    held = (frame.done(), list(protocol.sent))
    protocol.send_flow.resumeProducing()  # Twisted: the buffer is written out
    await asyncio.wait_for(frame, 5)
    protocol.send_flow.pauseProducing()
    protocol.send_flow.stopProducing()  # the connection is gone: nothing may wait on it
    await asyncio.wait_for(server.handle_reply(protocol, {"type": "websocket.send", "text": "y"}), 5)
    print(json.dumps({"held": held, "sent": protocol.sent}))

asyncio.run(main())
"""


def test_a_send_waits_while_the_write_buffer_is_full() -> None:
    outcome = outcome_of(SEND_WAITS_SCRIPT)
    assert isinstance(outcome, dict)
    assert outcome["held"] == [False, []]  # nothing written while Twisted holds the producer paused
    assert outcome["sent"] == ["websocket.send", "websocket.send"]


CLOSED_SEND_SCRIPT = """
import asyncio, json, runpy, sys
from autobahn.exception import Disconnected
module = runpy.run_path(sys.argv[1], run_name="run_daphne")
Server = module["Server"]

class Protocol:  # Autobahn closed it; Daphne has not heard yet (onClose not called)
    def handle_reply(self, message):
        raise Disconnected("Attempt to send on a closed protocol")

async def main():
    server = Server.__new__(Server)  # only handle_reply is exercised
    protocol = Protocol()
    server.connections = {protocol: {}}
    try:
        await server.handle_reply(protocol, {"type": "websocket.send", "text": "x"})
    except Exception as exc:
        print(json.dumps({"raised": type(exc).__name__, "oserror": isinstance(exc, OSError)}))

asyncio.run(main())
"""


def test_a_send_on_a_closed_connection_raises_an_oserror() -> None:
    # The ASGI spec's answer, which the consumers read as "the client is gone" (chat.consumers).
    assert outcome_of(CLOSED_SEND_SCRIPT) == {"raised": "ClosedConnectionError", "oserror": True}


FLOOD_APP = """
import asyncio, os, pathlib

async def app(scope, receive, send):
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})

    async def flood():  # far more than the client's buffers and Twisted's bufferSize hold
        for _ in range(256):
            await send({"type": "websocket.send", "bytes": b"x" * 65536})

    flooding = asyncio.ensure_future(flood())
    while (await receive())["type"] != "websocket.disconnect":
        pass
    flooding.cancel()
    pathlib.Path(os.environ["DISCONNECTED_FILE"]).write_text("disconnected")
"""


def test_a_connection_closed_while_its_sends_wait_is_closed_and_its_app_told(tmp_path) -> None:
    # The client stops reading, so the app's sends wait (the write buffer is full), then closes: Daphne
    # answers the close and ends the connection once the buffer is written out. Twisted ends no
    # connection while a registered producer is paused (ITransport.loseConnection): SendFlow relies on
    # Autobahn unregistering it before it drops a connection (WebSocketProtocol.dropConnection).
    # Without that, the socket would stay open with its reading stopped, never notice the peer
    # leave, and its application would never get websocket.disconnect.
    (tmp_path / "flood_app.py").write_text(FLOOD_APP)
    disconnected = tmp_path / "disconnected"
    port = free_port()
    argv = [sys.executable, str(DEPLOY / "bin" / "run_daphne.py"), "-b", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "DISCONNECTED_FILE": str(disconnected), "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "daphne.log"
    with running([*argv, "flood_app:app"], env, tmp_path, log):
        ws = websocket_when_up(f"ws://127.0.0.1:{port}/", log, [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        time.sleep(1)  # the flood fills the buffers on both ends; the client reads nothing yet
        ws.send_close()
        ws.sock.settimeout(10)
        received = 0
        try:
            while chunk := ws.sock.recv(1 << 20):
                received += len(chunk)
        except TimeoutError:
            raise AssertionError(
                f"the server never ended the connection ({received} bytes read)\n{log_tail(log)}"
            ) from None
        deadline = time.monotonic() + 5
        while not disconnected.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert disconnected.exists(), f"the application was never told\n{log_tail(log)}"


COUNTING_APP = """
import os, pathlib, uuid

async def app(scope, receive, send):
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
    (pathlib.Path(os.environ["DISCONNECTED_DIR"]) / uuid.uuid4().hex).touch()
"""

RESETS = 20


def test_a_connection_reset_right_after_a_message_is_ended_and_its_app_told(tmp_path) -> None:
    # The peer's last bytes and its reset arrive together, as when Nginx closes an upstream
    # connection that Daphne then writes to: the socket is readable and in error at once. On uvloop
    # (DAPHNE_LOOP=uvloop), the poll's error runs Twisted's reader once (it reads the bytes, not the
    # error) and closes the poll for good: Twisted never reads again, the connection is never lost,
    # its application never hears of it, and the next write raises "the handler is closed" (16
    # and 19 of these 20 connections in two runs). On asyncio's loop, Twisted reads the reset and ends
    # every one.
    (tmp_path / "counting_app.py").write_text(COUNTING_APP)
    told = tmp_path / "disconnected"
    told.mkdir()
    port = free_port()
    argv = [sys.executable, str(DEPLOY / "bin" / "run_daphne.py"), "-b", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "DISCONNECTED_DIR": str(told), "PYTHONPATH": str(tmp_path)}
    env.pop("DAPHNE_LOOP", None)  # the start file's default
    log = tmp_path / "daphne.log"
    with running([*argv, "counting_app:app"], env, tmp_path, log):
        websocket_when_up(f"ws://127.0.0.1:{port}/", log).close()
        for _ in range(RESETS):
            ws = websocket_when_up(
                f"ws://127.0.0.1:{port}/",
                log,
                [(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))],
            )
            ws.send("the last words")
            ws.sock.close()  # linger 0: a reset, right behind the frame
        deadline = time.monotonic() + 10
        while len(list(told.iterdir())) < RESETS + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(told.iterdir())) == RESETS + 1, (
            f"{RESETS + 1 - len(list(told.iterdir()))} connections never ended\n{log_tail(log)}"
        )
