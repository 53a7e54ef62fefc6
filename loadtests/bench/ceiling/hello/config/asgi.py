"""A raw ASGI hello-world: the fastest any ASGI app can answer, for the bench's ceiling.

Every HTTP request gets the same small JSON as the app's ``/api/ping``; every WebSocket text frame is
sent back as it came, which is what ``/ws/echo/`` does for the echo scenario's probes, and a
``/ws/chat/<room>/`` socket is a room member as in the app's chat, the fan-out scenario's (its frames'
shape, no storage, no Redis): each ``{"message": ...}`` goes, as a ``chat.message`` frame encoded
once, to every socket of the room in this process. The history frame a member gets on joining names
this process, so the generator expects a message only at the room's members in the sender's
process (a server runs several).

Each HTTP answer carries ``x-bench-ceiling`` so the bench can check that this, not Django, replied. No
framework, no middleware, no origin check: nothing but the server's own cost.
"""

import itertools
import json
import uuid
from collections import defaultdict
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


CHAT_PREFIX = "/ws/chat/"
PROCESS = uuid.uuid4().hex[:12]  # names this process to the generator
ROOMS: defaultdict[str, set[Send]] = defaultdict(set)  # room -> the send of each member here
MESSAGE_IDS = itertools.count(1)


async def chat_websocket(room: str, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send(
        {"type": "websocket.send", "text": json.dumps({"type": "chat.history", "room": room, "messages": [],
                                                       "process": PROCESS})}
    )  # fmt: skip
    members = ROOMS[room]
    members.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            frame = {
                "type": "websocket.send",
                "text": json.dumps(
                    {"type": "chat.message", "id": next(MESSAGE_IDS), "room": room, "user": "bench",
                     "message": json.loads(text).get("message", "")}
                ),
            }  # fmt: skip
            for member in list(members):
                try:
                    await member(frame)
                except OSError:  # that member is gone; its own handler leaves the room
                    members.discard(member)
    finally:
        members.discard(send)
        if not members:
            ROOMS.pop(room, None)


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
    elif scope["type"] == "websocket" and scope["path"].startswith(CHAT_PREFIX):
        await chat_websocket(scope["path"][len(CHAT_PREFIX) :].strip("/"), receive, send)
    elif scope["type"] == "websocket":
        await echo_websocket(receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
