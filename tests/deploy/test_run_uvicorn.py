"""deploy/bin/run_uvicorn.py: a message over --ws-max-size gets its 1009 to every client, however many
send one at once, with two workers as in production."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from stackctl import free_port
from tests.deploy.helpers import DEPLOY

CLIENTS = 20
MESSAGE = "x" * (16 * 1024 * 1024)  # 256 times the limit below (stock Uvicorn lost 16 of 20 closes)
LIMIT = 65_536

# Accepts every WebSocket and waits for its end: the server alone answers the oversized message.
APP = """
async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "echo_app.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(DEPLOY / "bin" / "run_uvicorn.py"), "echo_app:app", "--port", str(port),
         "--workers", "2", "--ws", "wsproto", "--ws-max-size", str(LIMIT), "--lifespan", "off"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with connect(f"ws://127.0.0.1:{port}/", open_timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "run_uvicorn.py did not start"
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def close_code(port: int) -> int | str | None:
    with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None, close_timeout=5) as ws:
        with contextlib.suppress(ConnectionClosed):  # refused while sending: the close code tells
            ws.send(MESSAGE)
        try:
            ws.recv(timeout=15)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None  # None: no close frame arrived
        except TimeoutError:
            return "no answer"
    return "answered"


def test_every_client_gets_1009(server: int) -> None:
    codes: list[int | str | None] = []
    clients = [threading.Thread(target=lambda: codes.append(close_code(server))) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert Counter(codes) == {1009: CLIENTS}
