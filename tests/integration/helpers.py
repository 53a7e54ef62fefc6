"""Small real-socket clients for the integration tests: every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness import AppServer

RECV_TIMEOUT = 10.0  # seconds for one frame when nothing is expected to be slow
DEPENDENCY_TIMEOUT = 20.0  # seconds for an answer that may wait on a dead dependency (5 s in the app)
RECOVERY_TIMEOUT = 45.0  # seconds for /readyz to come back after a dependency does


def http(app: AppServer) -> httpx.Client:
    return httpx.Client(base_url=app.url, timeout=httpx.Timeout(20.0))


def whoami(app: AppServer, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """What the app saw of this request (server, client address, scheme, HTTP version)."""
    with http(app) as client:
        response = client.get("/api/whoami", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def ws_connect(
    app: AppServer,
    path: str,
    *,
    origin: str | None = "default",
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> ClientConnection:
    """A WebSocket to the app, with the browser's Origin for this site unless told otherwise.

    ``host`` sends another Host header (the TCP connection still goes to the app).
    """
    url = f"ws://{host}:{app.port}{path}" if host else app.ws_url + path
    return await connect(
        url,
        host="127.0.0.1",
        port=app.port,
        origin=app.origin if origin == "default" else origin,  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=RECV_TIMEOUT,
        close_timeout=5,
        max_size=2**22,
        ping_interval=None,
    )


async def handshake_status(app: AppServer, path: str, **options: Any) -> int:
    """The HTTP status of a handshake the server is expected to refuse."""
    try:
        ws = await ws_connect(app, path, **options)
    except InvalidStatus as refused:
        return refused.response.status_code
    await ws.close()
    return 101


async def recv_json(ws: ClientConnection, within: float = RECV_TIMEOUT) -> dict[str, Any]:
    """The next data frame as JSON (heartbeat frames skipped), within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no frame within {within:g}s")
        raw = await asyncio.wait_for(ws.recv(), remaining)
        frame = json.loads(raw)
        if frame.get("type") != "heartbeat":
            return frame


async def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], within: float = RECV_TIMEOUT
) -> dict[str, Any]:
    """Frames are read (and dropped) until one matches ``predicate``."""
    deadline = time.monotonic() + within
    while True:
        frame = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if predicate(frame):
            return frame


async def send_json(ws: ClientConnection, payload: dict[str, Any]) -> None:
    await ws.send(json.dumps(payload))


async def join(app: AppServer, room: str, name: str | None = None) -> tuple[ClientConnection, list[dict]]:
    """A chat socket in ``room``, and the history the server sent first."""
    query = f"?name={quote(name)}" if name else ""
    ws = await ws_connect(app, f"/ws/chat/{room}/{query}")
    try:
        history = await recv_json(ws)
    except BaseException:
        await ws.close()
        raise
    assert history["type"] == "chat.history", history
    assert history["room"] == room
    return ws, history["messages"]


async def say(ws: ClientConnection, text: str) -> dict[str, Any]:
    """Send a chat message; return this socket's copy of the broadcast (its acknowledgement)."""
    await send_json(ws, {"message": text})
    return await recv_until(ws, lambda frame: frame.get("message") == text or frame.get("type") == "error")


async def frames_until_closed(ws: ClientConnection, within: float) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes the socket, and its close code; TimeoutError if it stays open."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"socket still open after {within:g}s; frames: {frames}")
        try:
            raw = await asyncio.wait_for(ws.recv(), remaining)
        except ConnectionClosed:
            return frames, ws.close_code
        frame = json.loads(raw)
        if frame.get("type") != "heartbeat":
            frames.append(frame)


def wait_for_readyz(app: AppServer, status: int, timeout: float = RECOVERY_TIMEOUT) -> dict[str, Any]:
    """Poll /readyz until it answers ``status``; return its body."""
    deadline = time.monotonic() + timeout
    last: object = None
    with http(app) as client:
        while True:
            try:
                response = client.get("/readyz")
                last = (response.status_code, response.text)
                if response.status_code == status:
                    return response.json()
            except httpx.HTTPError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise AssertionError(f"/readyz did not answer {status} within {timeout:g}s; last: {last}")
            time.sleep(0.5)


def unique(prefix: str) -> str:
    """A room name no other test uses."""
    return f"{prefix}-{time.monotonic_ns()}"
