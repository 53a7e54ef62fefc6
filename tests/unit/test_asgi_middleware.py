"""RefusedHandshakeMiddleware: a refused handshake ends even when the server sends no disconnect."""

import asyncio

import pytest
from channels.security.websocket import WebsocketDenier
from core.asgi_middleware import RefusedHandshakeMiddleware

# The denier is a Channels consumer: it closes old database connections before each message.
pytestmark = pytest.mark.django_db(transaction=True)

SCOPE = {"type": "websocket", "path": "/ws/x/", "headers": []}


def server_without_disconnect():
    """A server's receive/send that, like Granian at times, never delivers websocket.disconnect."""
    sent: list[dict] = []
    connect_given = False

    async def receive():
        nonlocal connect_given
        if not connect_given:
            connect_given = True
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()  # nothing more, ever

    async def send(message):
        sent.append(message)

    return receive, send, sent


async def test_channels_denier_returns_after_refusing():
    receive, send, sent = server_without_disconnect()
    app = RefusedHandshakeMiddleware(WebsocketDenier.as_asgi())
    await asyncio.wait_for(app(SCOPE, receive, send), timeout=5)
    assert sent == [{"type": "websocket.close"}]


async def test_without_it_the_denier_waits_forever():
    """The failure this middleware exists for: the test above is not passing by accident."""
    receive, send, sent = server_without_disconnect()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(WebsocketDenier.as_asgi()(SCOPE, receive, send), timeout=0.5)
    assert sent == [{"type": "websocket.close"}]


async def test_accepted_socket_messages_pass_through():
    messages = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    seen: list[dict] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        pass

    async def app(scope, app_receive, app_send):
        seen.append(await app_receive())
        await app_send({"type": "websocket.accept"})
        seen.append(await app_receive())
        await app_send({"type": "websocket.close", "code": 1000})  # after accept: a normal close
        seen.append(await app_receive())

    await asyncio.wait_for(RefusedHandshakeMiddleware(app)(SCOPE, receive, send), timeout=5)
    assert [message["type"] for message in seen] == [
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
    ]
    assert seen[2]["code"] == 1000
