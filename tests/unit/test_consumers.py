"""WebSocket consumers through the full ASGI application (origin, host and auth middleware included)."""

import asyncio
import contextlib
import json

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from chat import consumers, rooms
from chat.consumers import room_group
from chat.models import Message
from config.asgi import application
from core import consumers as portable
from django.db import OperationalError

from tests.unit.conftest import close_communicators, communicator

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _clients_closed():
    yield
    await close_communicators()


TIMEOUT = 3


async def connect(path: str, **kwargs):
    client = communicator(path, **kwargs)
    connected, _ = await client.connect(timeout=TIMEOUT)
    assert connected, f"handshake to {path} refused"
    return client


async def join(room: str, name: str = "alice"):
    client = await connect(f"/ws/chat/{room}/?name={name}")
    history = await client.receive_json_from(timeout=TIMEOUT)
    assert history["type"] == "chat.history"
    return client, history


async def send(client, payload) -> None:
    await client.send_to(text_data=json.dumps(payload))


# --- Echo -------------------------------------------------------------------------------------------


async def test_echo_round_trip():
    client = await connect("/ws/echo/")
    await send(client, {"message": "hello ✓"})
    assert await client.receive_json_from(timeout=TIMEOUT) == {"message": "hello ✓"}
    await client.disconnect()


# Each bad frame, and the error code it is answered with; the socket stays open after every one.
BAD_FRAMES = [
    pytest.param({"text_data": "not json"}, "invalid_json", id="text-not-json"),
    pytest.param({"text_data": "[1, 2]"}, "not_an_object", id="json-array"),
    pytest.param({"text_data": '"just a string"'}, "not_an_object", id="json-string"),
    pytest.param({"text_data": "null"}, "not_an_object", id="json-null"),
    pytest.param({"text_data": "{}"}, "missing_message", id="missing-message"),
    pytest.param({"text_data": '{"text": "hi"}'}, "missing_message", id="wrong-field"),
    pytest.param({"text_data": '{"message": 42}'}, "invalid_message", id="number-message"),
    pytest.param({"text_data": '{"message": null}'}, "invalid_message", id="null-message"),
    pytest.param({"text_data": '{"message": ["a"]}'}, "invalid_message", id="list-message"),
    pytest.param({"text_data": '{"message": "   "}'}, "empty_message", id="blank-message"),
    pytest.param(
        {"text_data": json.dumps({"message": "x" * 2001})}, "message_too_long", id="oversized-message"
    ),
    pytest.param({"bytes_data": b'{"message": "hi"}'}, "binary_not_supported", id="binary-frame"),
]


@pytest.mark.parametrize("path", ["/ws/echo/", "/ws/chat/badinput/"])
@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(path, frame, code):
    client = await connect(path)
    if "chat" in path:
        await client.receive_json_from(timeout=TIMEOUT)  # history
    await client.send_to(**frame)
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["detail"]
    # Still open and serving:
    await send(client, {"message": "still here"})
    reply = await client.receive_json_from(timeout=TIMEOUT)
    assert reply["message"] == "still here"
    await client.disconnect()


async def test_message_of_exactly_the_limit_is_accepted(settings):
    client = await connect("/ws/echo/")
    text = "y" * settings.CHAT_MESSAGE_MAX_CHARS
    await send(client, {"message": text})
    assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == text
    await client.disconnect()


# --- Handshake refusals -------------------------------------------------------------------------------

REFUSED_HANDSHAKES = [
    pytest.param("/ws/echo/", {"origin": b"http://evil.example.com"}, id="foreign-origin"),
    pytest.param("/ws/echo/", {"origin": None}, id="no-origin"),
    pytest.param("/ws/echo/", {"host": b"evil.example.com"}, id="bad-host"),
    pytest.param("/ws/chat/" + "r" * 101 + "/", {}, id="room-too-long"),
    pytest.param("/ws/chat/a b/", {}, id="room-with-space"),
    pytest.param("/ws/chat/x';DROP TABLE chat_message;--/", {}, id="room-with-sql"),
    pytest.param("/ws/chat/café/", {}, id="room-non-ascii"),
    pytest.param("/ws/chat/../x/", {}, id="room-dot-dot-slash"),
    pytest.param("/ws/nowhere/", {}, id="unknown-path"),
]


@pytest.mark.parametrize(("path", "headers"), REFUSED_HANDSHAKES)
async def test_handshake_refused(path, headers):
    client = communicator(path, **headers)
    connected, _ = await client.connect(timeout=TIMEOUT)
    assert not connected
    await client.disconnect()


async def test_room_of_exactly_100_characters_is_accepted():
    client, history = await join("r" * 100)
    assert history["room"] == "r" * 100
    await client.disconnect()


def test_group_names_stay_within_the_layer_limit():
    assert len(room_group("r" * 100)) < 100
    assert room_group("a") != room_group("b")


# --- Chat -------------------------------------------------------------------------------------------------


async def test_history_on_connect_is_the_last_messages_in_order(settings):
    settings.CHAT_HISTORY_SIZE = 3
    await Message.objects.abulk_create(Message(room="history", user="bob", body=f"m{i}") for i in range(5))
    client, history = await join("history")
    assert history["room"] == "history"
    assert [m["message"] for m in history["messages"]] == ["m2", "m3", "m4"]
    first = history["messages"][0]
    assert set(first) == {"type", "id", "room", "message", "user", "sent_at"}
    await client.disconnect()


async def test_message_is_stored_then_broadcast_to_every_member_sender_included():
    alice, _ = await join("two-clients", "alice")
    bob, _ = await join("two-clients", "bob")
    await send(alice, {"message": "hi bob"})
    to_alice = await alice.receive_json_from(timeout=TIMEOUT)
    to_bob = await bob.receive_json_from(timeout=TIMEOUT)
    assert to_alice == to_bob
    assert to_alice["type"] == "chat.message"
    assert to_alice["room"] == "two-clients"
    assert to_alice["message"] == "hi bob"
    assert to_alice["user"] == "alice"
    stored = await Message.objects.aget(id=to_alice["id"])
    assert stored.body == "hi bob"
    assert to_alice["sent_at"] == stored.sent_at.isoformat()
    await alice.disconnect()
    await bob.disconnect()


async def test_a_broadcast_sent_while_the_history_is_read_follows_the_history(monkeypatch):
    early = {"type": "chat.message", "id": 10**9, "room": "early", "message": "sent during the join"}
    original = consumers.ChatConsumer.__dict__["_history"]  # the database_sync_to_async wrapper

    async def history_with_a_broadcast_meanwhile(self):
        await consumers.chat_rooms(get_channel_layer()).broadcast(room_group("early"), early)
        return await original(self)

    monkeypatch.setattr(consumers.ChatConsumer, "_history", history_with_a_broadcast_meanwhile)
    client, _ = await join("early")  # asserts that the history comes first
    assert await client.receive_json_from(timeout=TIMEOUT) == early
    await client.disconnect()


async def test_chat_sockets_open_no_channel_of_their_own(monkeypatch):
    layer = get_channel_layer()
    opened: list[str] = []
    original = layer.new_channel

    async def counted(*args, **kwargs):
        opened.append(await original(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(layer, "new_channel", counted)
    clients = [(await join("one-channel", name))[0] for name in ("alice", "bob", "carol")]
    await send(clients[0], {"message": "hello all"})
    for client in clients:
        assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "hello all"
    assert len(opened) == 1  # the process's, for the three sockets and every room
    for client in clients:
        await client.disconnect()


async def test_a_broadcast_waits_for_the_handler_running_on_its_socket(monkeypatch):
    """Room events and client frames reach their handlers one at a time, as in Channels' loop."""
    storing = asyncio.Event()
    release = asyncio.Event()
    original = consumers.ChatConsumer.__dict__["_store"]  # the database_sync_to_async wrapper

    async def slow_store(self, text):
        storing.set()
        await release.wait()
        return await original(self, text)

    monkeypatch.setattr(consumers.ChatConsumer, "_store", slow_store)
    alice, _ = await join("one-at-a-time", "alice")
    await send(alice, {"message": "first"})
    await asyncio.wait_for(storing.wait(), TIMEOUT)
    other = {"type": "chat.message", "id": 10**9, "room": "one-at-a-time", "message": "second"}
    await consumers.chat_rooms(get_channel_layer()).broadcast(room_group("one-at-a-time"), other)
    assert await alice.receive_nothing(timeout=0.2)  # the handler storing "first" still runs
    release.set()
    assert (await alice.receive_json_from(timeout=TIMEOUT))["message"] == "second"
    assert (await alice.receive_json_from(timeout=TIMEOUT))["message"] == "first"
    await alice.disconnect()


async def test_a_room_event_that_fails_is_logged_and_closes_1011(caplog):
    client, _ = await join("bad-event")
    room = consumers.chat_rooms(get_channel_layer()).room(room_group("bad-event"))
    assert room is not None
    [member] = room.members
    member.deliver({"type": "no.such.event"})
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1011}
    assert any(record.message == "room event failed" for record in caplog.records)


async def test_rooms_are_isolated():
    red, _ = await join("red")
    blue, _ = await join("blue")
    await send(red, {"message": "for red only"})
    assert (await red.receive_json_from(timeout=TIMEOUT))["message"] == "for red only"
    assert await blue.receive_nothing(timeout=0.3)
    await red.disconnect()
    await blue.disconnect()


async def test_message_is_in_the_database_before_it_is_broadcast(monkeypatch):
    layer = get_channel_layer()
    original = layer.group_send
    seen: list[bool] = []

    async def checking_group_send(group, message):
        seen.append(await Message.objects.filter(id=message["id"]).aexists())
        return await original(group, message)

    monkeypatch.setattr(layer, "group_send", checking_group_send)
    client, _ = await join("ordering")
    await send(client, {"message": "persist me"})
    await client.receive_json_from(timeout=TIMEOUT)
    assert seen == [True]
    await client.disconnect()


async def test_reconnect_gets_the_message_in_history():
    client, _ = await join("reconnect")
    await send(client, {"message": "remember me"})
    sent = await client.receive_json_from(timeout=TIMEOUT)
    await client.disconnect()
    again, history = await join("reconnect")
    assert sent in history["messages"]
    await again.disconnect()


@pytest.mark.parametrize(
    ("query", "user"),
    [
        ("name=carol", "carol"),
        ("name=", "anonymous"),
        ("name=<script>", "anonymous"),
        ("name=" + "n" * 33, "anonymous"),
    ],
)
async def test_display_name(query, user):
    client = await connect(f"/ws/chat/names/?{query}")
    await client.receive_json_from(timeout=TIMEOUT)
    await send(client, {"message": "hi"})
    assert (await client.receive_json_from(timeout=TIMEOUT))["user"] == user
    await client.disconnect()


# --- Flooding ---------------------------------------------------------------------------------------------


async def test_flood_is_rate_limited_then_closed(settings):
    settings.WS_RATE_PER_SECOND = 0.001  # no refill during the test
    settings.WS_RATE_BURST = 2
    settings.WS_RATE_STRIKES = 3
    client = await connect("/ws/echo/")
    for _ in range(2):
        await send(client, {"message": "ok"})
        assert await client.receive_json_from(timeout=TIMEOUT) == {"message": "ok"}
    for _ in range(3):
        await send(client, {"message": "too many"})
        assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "rate_limited"
    await send(client, {"message": "one more"})
    closed = await client.receive_output(timeout=TIMEOUT)
    assert closed == {"type": "websocket.close", "code": 1008}


def flood_settings(settings, quiet: float) -> None:
    settings.WS_RATE_PER_SECOND = 0.001
    settings.WS_RATE_BURST = 1
    settings.WS_RATE_STRIKES = 1
    settings.WS_QUIET_BEFORE_CLOSE = quiet


async def outputs_until_the_close(client) -> list[dict]:
    outputs = [await client.receive_output(timeout=TIMEOUT)]
    while outputs[-1]["type"] != "websocket.close":
        outputs.append(await client.receive_output(timeout=TIMEOUT))
    return outputs


async def test_with_quiet_before_close_the_flood_is_read_to_its_end_before_the_close(settings):
    # Granian's start file sets WS_QUIET_BEFORE_CLOSE: a close that leaves frames unread there is a
    # reset, which loses the close frame. Sent all at once, the flood is read whole before the close.
    flood_settings(settings, quiet=0.05)
    client = await connect("/ws/echo/")
    for number in range(20):
        await send(client, {"message": f"flood {number}"})
    outputs = await outputs_until_the_close(client)
    assert client.input_queue.empty()  # every frame read: nothing left for a reset to destroy
    assert outputs[-1] == {"type": "websocket.close", "code": 1008}
    assert [json.loads(o["text"])["code"] for o in outputs[1:-1]] == ["rate_limited"]


async def test_without_quiet_before_close_the_close_goes_out_at_once(settings):
    flood_settings(settings, quiet=0.0)
    client = await connect("/ws/echo/")
    for number in range(20):
        await send(client, {"message": f"flood {number}"})
    assert (await outputs_until_the_close(client))[-1] == {"type": "websocket.close", "code": 1008}
    assert not client.input_queue.empty()  # the rest of the flood is the server's to drop


async def test_a_client_that_never_goes_quiet_is_closed_within_the_bound(settings, monkeypatch):
    flood_settings(settings, quiet=0.2)
    monkeypatch.setattr(portable, "CLOSE_HANDSHAKE_TIMEOUT", 0.5)
    client = await connect("/ws/echo/")

    async def flood_forever() -> None:
        for number in range(10_000):
            await send(client, {"message": f"flood {number}"})
            await asyncio.sleep(0.01)

    flooding = asyncio.ensure_future(flood_forever())
    try:
        started = asyncio.get_running_loop().time()
        assert (await outputs_until_the_close(client))[-1] == {"type": "websocket.close", "code": 1008}
        assert asyncio.get_running_loop().time() - started < TIMEOUT
    finally:
        flooding.cancel()


# --- Dependencies down ---------------------------------------------------------------------------------


async def test_storage_down_reports_the_message_as_not_stored(monkeypatch):
    client, _ = await join("db-down")

    def fail(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(Message.objects, "create", fail)
    await send(client, {"message": "lost?"})
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "storage_unavailable"
    assert await client.receive_nothing(timeout=0.3)  # nothing was broadcast
    assert not await Message.objects.filter(body="lost?").aexists()
    monkeypatch.undo()
    await send(client, {"message": "retry"})  # the socket is still usable
    assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "retry"
    await client.disconnect()


async def test_layer_down_on_send_acknowledges_the_stored_message_then_closes_1013(monkeypatch):
    client, _ = await join("layer-down-send")
    layer = get_channel_layer()

    async def fail(*args, **kwargs):
        raise ConnectionError("redis is gone")

    monkeypatch.setattr(layer, "group_send", fail)
    await send(client, {"message": "stored anyway"})
    ack = await client.receive_json_from(timeout=TIMEOUT)
    assert ack["type"] == "chat.message"
    assert await Message.objects.filter(id=ack["id"], body="stored anyway").aexists()
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "layer_unavailable"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}


@pytest.mark.parametrize(
    ("target", "code"),
    [("group_add", "layer_unavailable"), ("history", "storage_unavailable")],
)
async def test_dependency_down_on_connect_closes_1013(monkeypatch, target, code):
    async def fail(*args, **kwargs):
        raise ConnectionError("gone")

    if target == "group_add":
        monkeypatch.setattr(get_channel_layer(), "group_add", fail)
    else:
        monkeypatch.setattr(consumers.ChatConsumer, "_history", lambda self: fail())
    client = await connect("/ws/chat/down-on-connect/")
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error == {"type": "error", "code": code, "detail": error["detail"]}
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}


async def test_silent_dependency_is_bounded_by_the_deadline(monkeypatch, settings):
    settings.WS_DEPENDENCY_TIMEOUT = 0.2

    async def hang(*args, **kwargs):
        await asyncio.sleep(30)

    monkeypatch.setattr(get_channel_layer(), "group_add", hang)
    client = await connect("/ws/chat/hangs/")
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "layer_unavailable"
    assert (await client.receive_output(timeout=TIMEOUT))["code"] == 1013


# --- Size limit and heartbeat ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/echo/", "/ws/chat/sizes/"])
async def test_message_over_the_size_limit_is_closed_1009(settings, path):
    settings.WS_MAX_MESSAGE_BYTES = 100
    client = await connect(path)
    if "chat" in path:
        await client.receive_json_from(timeout=TIMEOUT)
    exactly = '{"message": "' + "z" * (100 - 15) + '"}'
    assert len(exactly.encode()) == 100
    await client.send_to(text_data=exactly)
    assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "z" * 85
    await client.send_to(text_data=exactly[:-2] + 'z"}')  # one byte more
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1009}


async def test_binary_over_the_size_limit_is_closed_1009(settings):
    settings.WS_MAX_MESSAGE_BYTES = 100
    client = await connect("/ws/echo/")
    await client.send_to(bytes_data=b"b" * 101)
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1009}


async def test_heartbeat_frames_when_enabled(settings):
    settings.WS_APP_HEARTBEAT = 0.05
    client = await connect("/ws/echo/")
    assert await client.receive_json_from(timeout=TIMEOUT) == {"type": "heartbeat"}
    assert await client.receive_json_from(timeout=TIMEOUT) == {"type": "heartbeat"}
    await client.disconnect()


async def test_no_heartbeat_by_default():
    client = await connect("/ws/echo/")
    assert await client.receive_nothing(timeout=0.2)
    await client.disconnect()


# --- Channel-layer reads that fail ----------------------------------------------------------------


def layer_reads_fail_on(monkeypatch) -> asyncio.Event:
    """The layer's reads wait for the returned event, then fail the way they do when Redis dies."""
    redis_dies = asyncio.Event()

    async def receive(channel):
        await redis_dies.wait()
        raise ConnectionError("Connection closed by server.")

    monkeypatch.setattr(get_channel_layer(), "receive", receive)
    return redis_dies


async def test_failed_layer_read_gets_an_error_frame_and_a_1013_close(monkeypatch):
    """Redis dying under an open socket: the room's layer read fails, the client is told."""
    redis_dies = layer_reads_fail_on(monkeypatch)
    client, _ = await join("layer-read-fails")
    redis_dies.set()
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error"
    assert error["code"] == "layer_unavailable"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}


def reads_in_flight_at_close(app):
    """``app`` wrapped to record how many reads of the client were pending at each close it sent."""
    pending = 0
    at_close: list[int] = []

    async def wrapped(scope, receive, send):
        async def counted_receive():
            nonlocal pending
            pending += 1
            try:
                return await receive()
            finally:
                pending -= 1

        async def watched_send(message):
            if message["type"] == "websocket.close":
                at_close.append(pending)
            await send(message)

        await app(scope, counted_receive, watched_send)

    return wrapped, at_close


async def test_a_close_from_a_layer_event_goes_out_with_no_read_pending(monkeypatch):
    """Granian drops a close sent while a read of the client is pending: none is, at any close."""
    redis_dies = layer_reads_fail_on(monkeypatch)
    app, reads_at_close = reads_in_flight_at_close(application)
    client = await connect("/ws/chat/paused-read/?name=alice", app=app)
    assert (await client.receive_json_from(timeout=TIMEOUT))["type"] == "chat.history"
    redis_dies.set()
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "layer_unavailable"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}
    assert reads_at_close == [0]
    await client.disconnect()  # the read taken back is resumed: the consumer gets the disconnect
    await client.wait(timeout=TIMEOUT)


SENT_DURING_THE_CLOSE = {"type": "websocket.receive", "text": "sent during the close"}


async def test_a_paused_read_loses_no_message():
    queue: asyncio.Queue[dict] = asyncio.Queue()
    reads = portable.ClientReceive(queue.get)
    reader = asyncio.ensure_future(reads())
    await asyncio.sleep(0)
    async with reads.paused():
        await queue.put(SENT_DURING_THE_CLOSE)
        await asyncio.sleep(0.01)
        assert not reader.done()  # no read while paused
    assert await asyncio.wait_for(reader, TIMEOUT) == SENT_DURING_THE_CLOSE


async def test_a_read_cancelled_by_its_consumer_is_cancelled():
    reads = portable.ClientReceive(asyncio.Event().wait)
    reader = asyncio.ensure_future(reads())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_a_disconnect_read_while_draining_is_the_next_read():
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for message in (SENT_DURING_THE_CLOSE, {"type": "websocket.disconnect", "code": 1000}):
        queue.put_nowait(message)
    reads = portable.ClientReceive(queue.get)
    await asyncio.wait_for(reads.drain(quiet=TIMEOUT, limit=2 * TIMEOUT), TIMEOUT / 2)  # no waiting
    assert await asyncio.wait_for(reads(), TIMEOUT) == {"type": "websocket.disconnect", "code": 1000}


async def test_a_socket_too_far_behind_its_room_gets_an_error_frame_and_a_1013_close():
    client, _ = await join("slow-reader")
    room = consumers.chat_rooms(get_channel_layer()).room(room_group("slow-reader"))
    assert room is not None
    [member] = room.members
    for n in range(room.capacity + 1):  # all at once: the socket reads none of them in between
        member.deliver({"type": "chat.message", "id": n})
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "too_slow"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}


async def test_echo_joins_no_channel_layer(monkeypatch):
    """Echo needs no other connection: a broken layer does not affect it."""
    layer = get_channel_layer()

    async def broken(*args, **kwargs):
        raise ConnectionError("redis is gone")

    monkeypatch.setattr(layer, "receive", broken)
    monkeypatch.setattr(layer, "new_channel", broken)
    client = await connect("/ws/echo/")
    await send(client, {"message": "still echoing"})
    assert await client.receive_json_from(timeout=TIMEOUT) == {"message": "still echoing"}
    await client.disconnect()


# --- Server shutdown and membership leases ----------------------------------------------------------


async def eventually(condition, within: float = TIMEOUT) -> None:
    """Wait until the coroutine function ``condition`` returns true."""
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def members(room: str) -> dict[str, float]:
    """A room's members in the configured layer: channel name -> time of its last (re)join.

    The in-memory layer keeps them in a dict, RedisChannelLayer in a sorted set scored by time
    (the suite runs on both: make test-unit and make test-services).
    """
    layer = get_channel_layer()
    group = room_group(room)
    if isinstance(layer, InMemoryChannelLayer):
        return dict(layer.groups.get(group, {}))
    if not isinstance(layer, RedisChannelLayer):
        pytest.skip(f"{type(layer).__name__} keeps no membership times")
    connection = layer.connection(layer.consistent_hash(group))
    stored = await connection.zrange(layer._group_key(group), 0, -1, withscores=True)
    return {channel.decode(): joined_at for channel, joined_at in stored}


async def add_member(room: str, channel: str, joined_at: float) -> None:
    """Put ``channel`` in a room as if it had (re)joined at ``joined_at``."""
    layer = get_channel_layer()
    group = room_group(room)
    if isinstance(layer, InMemoryChannelLayer):
        layer.groups.setdefault(group, {})[channel] = joined_at
    else:
        connection = layer.connection(layer.consistent_hash(group))
        await connection.zadd(layer._group_key(group), {channel: joined_at})


async def is_empty(room: str) -> bool:
    return await members(room) == {}


async def test_server_cancelling_a_chat_socket_closes_it_1012_and_leaves_the_room():
    """Daphne on SIGTERM (and Hypercorn, Gunicorn's ASGI worker after their graceful timeout)
    cancel the connection's task instead of sending websocket.disconnect."""
    client, _ = await join("server-stops")
    assert len(await members("server-stops")) == 1
    client.future.cancel()
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1012}
    await eventually(lambda: is_empty("server-stops"))
    # It waits for the client's answer to the close frame, then ends normally (not cancelled):
    # Daphne waits for every cancelled connection only as long as none of them raises.
    assert not client.future.done()
    await client.send_input({"type": "websocket.disconnect", "code": 1012})
    await asyncio.wait_for(client.future, TIMEOUT)
    assert not client.future.cancelled()


async def test_a_client_that_never_answers_the_close_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(portable, "CLOSE_HANDSHAKE_TIMEOUT", 0.1)
    client, _ = await join("silent-client")
    client.future.cancel()
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1012}
    await asyncio.wait_for(client.future, TIMEOUT)
    assert await members("silent-client") == {}


async def test_server_cancelling_an_echo_socket_closes_it_1012():
    client = await connect("/ws/echo/")
    client.future.cancel()
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1012}
    await client.send_input({"type": "websocket.disconnect", "code": 1012})
    await asyncio.wait_for(client.future, TIMEOUT)


async def test_stop_connections_closes_every_open_socket_1012_and_leaves_the_rooms():
    """What a server's SIGTERM hook calls (the gunicorn-asgi variant's)."""
    chat, _ = await join("stopped-by-hook")
    echo = await connect("/ws/echo/")
    assert portable.stop_connections() == 2
    for client in (chat, echo):
        assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1012}
        await client.send_input({"type": "websocket.disconnect", "code": 1012})
        await asyncio.wait_for(client.future, TIMEOUT)
    assert await members("stopped-by-hook") == {}
    assert portable.stop_connections() == 0


@pytest.mark.parametrize(
    ("group_expiry", "interval"),
    [(120, 40.0), (30, 10.0), (2, 1.0), (None, 28800.0)],
    ids=["default", "short", "floor-1s", "layer-without-expiry"],
)
def test_membership_renewal_interval(group_expiry, interval):
    layer = object() if group_expiry is None else type("Layer", (), {"group_expiry": group_expiry})()
    assert rooms.membership_renewal_interval(layer) == interval


def test_layers_get_the_configured_group_expiry(settings):
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["group_expiry"] == settings.CHANNEL_LAYER_GROUP_EXPIRY


async def test_live_member_renews_its_membership(monkeypatch):
    monkeypatch.setattr(rooms, "membership_renewal_interval", lambda layer: 0.05)
    client, _ = await join("renews")
    [(channel, joined_at)] = (await members("renews")).items()
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while (await members("renews"))[channel] == joined_at:
        assert asyncio.get_running_loop().time() < deadline, "the membership was never renewed"
        await asyncio.sleep(0.05)
    await client.disconnect()
    assert await members("renews") == {}


async def test_member_of_a_dead_process_ages_out_while_live_ones_stay(monkeypatch):
    """A membership nobody renews (its process was killed) is dropped once older than the expiry."""
    monkeypatch.setattr(rooms, "membership_renewal_interval", lambda layer: 0.05)
    layer = get_channel_layer()
    monkeypatch.setattr(layer, "group_expiry", 1)
    client, _ = await join("ghosts")
    [live] = await members("ghosts")
    await add_member("ghosts", "ghost.channel", joined_at=1.0)  # joined long ago, never renewed
    await asyncio.sleep(1.5)  # past the expiry: only renewals keep a membership
    await send(client, {"message": "hello"})  # a broadcast drops expired members
    assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "hello"
    assert list(await members("ghosts")) == [live]
    await client.disconnect()


async def test_failed_renewal_gets_an_error_frame_and_a_1013_close(monkeypatch):
    monkeypatch.setattr(rooms, "membership_renewal_interval", lambda layer: 0.05)
    client, _ = await join("renewal-fails")

    async def fail(*args, **kwargs):
        raise ConnectionError("redis is gone")

    monkeypatch.setattr(get_channel_layer(), "group_add", fail)
    error = await client.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "layer_unavailable"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}
    assert await client.receive_nothing(timeout=0.3)  # reported once, not once per failure


async def test_a_layer_read_that_swallows_its_cancellation_does_not_hold_the_connection(monkeypatch):
    """Python 3.11's asyncio.wait_for (inside redis-py's connect) can swallow a cancellation; the
    connection must end anyway. The process's read is not the socket's: it goes on (chat/rooms.py)."""
    finish = asyncio.Event()

    async def stubborn_receive(channel):
        # Swallowed, as asyncio.wait_for does when its inner future finishes at that very moment.
        with contextlib.suppress(asyncio.CancelledError):
            await finish.wait()
        await finish.wait()

    monkeypatch.setattr(get_channel_layer(), "receive", stubborn_receive)
    client, _ = await join("stubborn-read")
    await client.send_input({"type": "websocket.disconnect", "code": 1000})
    try:
        # The consumer ends on its own (a TimeoutError here: it still waits for the read).
        await asyncio.wait_for(asyncio.shield(client.future), TIMEOUT)
    finally:
        client.stop(exceptions=False)
        finish.set()


def test_the_restart_close_code_is_the_protocols() -> None:
    # core.consumers closes with it when the server stops a socket; the chat protocol documents it.
    from chat.protocol import CloseCode
    from core.consumers import SERVICE_RESTART

    assert CloseCode.SERVICE_RESTART == SERVICE_RESTART


async def test_a_client_gone_before_its_history_is_sent_leaves_the_room():
    """Uvicorn raises on a send to a client that went away (ClientDisconnected, an OSError) and sends
    no websocket.disconnect after it: the room's membership must be let go all the same."""

    def gone_at_the_history(app):
        async def wrapped(scope, receive, send):
            async def failing_send(message):
                if message["type"] == "websocket.send" and "chat.history" in (message.get("text") or ""):
                    raise OSError("client disconnected")  # what uvicorn's ClientDisconnected is
                await send(message)

            await app(scope, receive, failing_send)

        return wrapped

    client = communicator("/ws/chat/gone-early/", app=gone_at_the_history(application))
    connected, _ = await client.connect(timeout=3)
    assert connected
    with pytest.raises(OSError, match="client disconnected"):
        await client.wait(timeout=3)
    hub = consumers.chat_rooms(get_channel_layer())
    assert hub.room(room_group("gone-early")) is None, "a room kept for a socket that is gone"
    assert not await members("gone-early")
