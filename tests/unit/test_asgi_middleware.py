"""RefusedHandshakeMiddleware and deny: a refused handshake ends at once, whatever the server sends."""

import asyncio

import pytest
from core.asgi_middleware import RefusedHandshakeMiddleware, deny

SCOPE = {"type": "websocket", "path": "/ws/x/", "headers": []}


async def denier(scope, receive, send):
    """Refuses like Channels' WebsocketDenier: close before accept, then wait for the disconnect."""
    await receive()
    await send({"type": "websocket.close"})
    assert (await receive())["type"] == "websocket.disconnect"


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


async def test_a_refusing_app_gets_its_disconnect_and_returns():
    receive, send, sent = server_without_disconnect()
    app = RefusedHandshakeMiddleware(denier)
    await asyncio.wait_for(app(SCOPE, receive, send), timeout=5)
    assert sent == [{"type": "websocket.close"}]


async def test_without_it_the_denier_waits_forever():
    """The failure this middleware exists for: the test above is not passing by accident."""
    receive, send, sent = server_without_disconnect()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(denier(SCOPE, receive, send), timeout=0.5)
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


async def test_returns_to_the_server_at_once_even_if_the_refusing_app_lingers():
    """Granian answers 403 only once the application returns: a slow wind-down must not delay it."""
    receive, send, sent = server_without_disconnect()
    wound_down = asyncio.Event()

    async def lingering(scope, app_receive, app_send):
        await app_receive()
        await app_send({"type": "websocket.close"})
        try:
            await asyncio.sleep(3600)  # a slow clean-up (a channel-layer read being cancelled, say)
        finally:
            wound_down.set()

    await asyncio.wait_for(RefusedHandshakeMiddleware(lingering)(SCOPE, receive, send), timeout=1)
    assert sent == [{"type": "websocket.close"}]
    assert not wound_down.is_set()  # still winding down, in the background


async def test_deny_refuses_and_returns_without_the_channel_layer(monkeypatch):
    import channels.layers

    def no_layer(*args, **kwargs):
        raise AssertionError("a refusal must not touch the channel layer")

    monkeypatch.setattr(channels.layers, "get_channel_layer", no_layer)
    receive, send, sent = server_without_disconnect()
    await asyncio.wait_for(deny(SCOPE, receive, send), timeout=1)
    assert sent == [{"type": "websocket.close"}]


async def test_a_server_stop_reaches_an_accepted_app_and_its_normal_end_comes_back():
    """Daphne cancels the connection's task on SIGTERM: the app sees it, closes, and returns."""
    stopped = asyncio.Event()
    accepted = asyncio.Event()
    sent: list[dict] = []

    async def receive():
        if not sent:
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)
        if message["type"] == "websocket.accept":
            accepted.set()

    async def consumer(scope, app_receive, app_send):
        await app_receive()
        await app_send({"type": "websocket.accept"})
        try:
            await app_receive()
        except asyncio.CancelledError:
            await app_send({"type": "websocket.close", "code": 1012})
            stopped.set()  # and returns normally, as PortableConsumer does

    connection = asyncio.ensure_future(RefusedHandshakeMiddleware(consumer)(SCOPE, receive, send))
    await asyncio.wait_for(accepted.wait(), timeout=1)
    connection.cancel()
    await asyncio.wait_for(asyncio.shield(connection), timeout=1)
    assert stopped.is_set()
    assert not connection.cancelled()
    assert sent == [{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1012}]
