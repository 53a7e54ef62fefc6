"""A raw ASGI hello-world: the fastest any ASGI app can answer, for the bench's ceiling.

Every HTTP request gets the same small JSON as the app's ``/api/ping``; every WebSocket text frame is
sent back as it came, which is what ``/ws/echo/`` does for the echo scenario's probes. Each HTTP
answer carries ``x-bench-ceiling`` so the bench can check that this, not Django, is what replied. No
framework, no middleware, no origin check: nothing but the server's own cost.
"""

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BODY = b'{"pong": true}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"x-bench-ceiling", b"asgi-hello"),
]


async def answer_http(receive: Receive, send: Send) -> None:
    message = await receive()
    while message.get("more_body"):  # read the whole request before answering
        message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def echo_websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        elif message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await answer_http(receive, send)
    elif scope["type"] == "websocket":
        await echo_websocket(receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
