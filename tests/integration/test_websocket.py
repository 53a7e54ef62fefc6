"""WebSockets over real sockets, against every server: echo, chat rooms, refusals, bad frames."""

from __future__ import annotations

import contextlib
import json

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from tests.harness import AppServer
from tests.harness.app import WS_MAX_MESSAGE_BYTES
from tests.integration.helpers import (
    frames_until_closed,
    handshake_status,
    http,
    join,
    recv_json,
    recv_until,
    say,
    send_json,
    unique,
    ws_connect,
)

pytestmark = pytest.mark.integration


async def test_echo_round_trip(app_server: AppServer) -> None:
    async with await ws_connect(app_server, "/ws/echo/") as ws:
        for text in ("hello", "ünïcödé ✓", "x" * 2000):
            await send_json(ws, {"message": text})
            assert await recv_json(ws) == {"message": text}


async def test_chat_room_history_broadcast_and_storage(
    app_server: AppServer, database: psycopg.Connection
) -> None:
    room = unique("room")
    alice, history = await join(app_server, room, name="alice")
    async with alice:
        assert history == []
        bob, history = await join(app_server, room, name="bob")
        async with bob:
            assert history == []
            sent = await say(alice, "hello bob")
            assert sent["type"] == "chat.message"
            assert isinstance(sent["id"], int)
            assert sent["room"] == room
            assert sent["user"] == "alice"
            assert sent["sent_at"]
            received = await recv_until(bob, lambda frame: frame.get("type") == "chat.message")
            assert received == sent

            reply = await say(bob, "hi alice")
            assert reply["user"] == "bob"
            assert reply["id"] > sent["id"]
            assert await recv_until(alice, lambda frame: frame.get("id") == reply["id"]) == reply

    # Stored in PostgreSQL before it was broadcast.
    row = database.execute(
        'SELECT room, "user", body FROM chat_message WHERE id = %s', (sent["id"],)
    ).fetchone()
    assert row == (room, "alice", "hello bob")

    # A new connection gets both in its history, oldest first.
    carol, history = await join(app_server, room)
    async with carol:
        assert [message["id"] for message in history] == [sent["id"], reply["id"]]
        assert history[0] == sent


async def test_rooms_are_separate(app_server: AppServer) -> None:
    first, _ = await join(app_server, unique("first"))
    second, _ = await join(app_server, unique("second"))
    async with first, second:
        await say(first, "only in the first room")
        await send_json(second, {"message": "only in the second room"})
        # The next frame the second room sees is its own message, never the first room's.
        assert (await recv_json(second))["message"] == "only in the second room"


async def test_anonymous_and_invalid_display_names(app_server: AppServer) -> None:
    room = unique("names")
    anonymous, _ = await join(app_server, room, name="<script>")
    async with anonymous:
        assert (await say(anonymous, "who am i"))["user"] == "anonymous"


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("foreign origin", {"origin": "http://evil.example"}),
        ("missing origin", {"origin": None}),
        ("foreign host", {"host": "evil.example", "origin": "http://evil.example"}),
        ("foreign host, our origin", {"host": "evil.example"}),
    ],
)
async def test_handshake_refused(app_server: AppServer, case: str, options: dict) -> None:
    assert await handshake_status(app_server, "/ws/chat/lobby/", **options) == 403


@pytest.mark.parametrize("path", ["/ws/chat/bad!room/", f"/ws/chat/{'x' * 101}/", "/ws/nowhere/"])
async def test_bad_room_or_path_refused(app_server: AppServer, path: str) -> None:
    assert await handshake_status(app_server, path) == 403


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('{"text": "hi"}', "missing_message"),
        ('{"message": 42}', "invalid_message"),
        ('{"message": "   "}', "empty_message"),
        (json.dumps({"message": "x" * 2001}), "message_too_long"),
    ],
)
@pytest.mark.parametrize("path", ["/ws/echo/", "/ws/chat/errors/"])
async def test_bad_frames_get_an_error_frame_and_the_socket_stays_open(
    app_server: AppServer, path: str, frame: str, code: str
) -> None:
    async with await ws_connect(app_server, path) as ws:
        if "chat" in path:
            assert (await recv_json(ws))["type"] == "chat.history"
        await ws.send(frame)
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["detail"]
        await send_json(ws, {"message": "still here"})
        assert (await recv_until(ws, lambda f: "message" in f))["message"] == "still here"


@pytest.mark.parametrize("path", ["/ws/echo/", "/ws/chat/binary/"])
async def test_binary_frame_gets_an_error_frame(app_server: AppServer, path: str) -> None:
    async with await ws_connect(app_server, path) as ws:
        if "chat" in path:
            assert (await recv_json(ws))["type"] == "chat.history"
        await ws.send(b'{"message": "binary"}')
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["code"] == "binary_not_supported"
        await send_json(ws, {"message": "text works"})
        assert (await recv_until(ws, lambda f: "message" in f))["message"] == "text works"


async def test_message_over_the_size_limit_is_closed_with_1009(app_server: AppServer) -> None:
    async with await ws_connect(app_server, "/ws/echo/") as ws:
        with contextlib.suppress(ConnectionClosed):  # closed while sending: the code is what matters
            await ws.send("x" * (WS_MAX_MESSAGE_BYTES + 1))
        frames, code = await frames_until_closed(ws, within=10)
    assert code == 1009, (code, frames)


async def test_message_at_the_size_limit_is_accepted(app_server: AppServer) -> None:
    text = "x" * (WS_MAX_MESSAGE_BYTES - len('{"message": ""}'))
    async with await ws_connect(app_server, "/ws/echo/") as ws:
        await send_json(ws, {"message": text})
        # Longer than CHAT_MESSAGE_MAX_CHARS: refused by the protocol, but the socket stays open.
        assert (await recv_json(ws))["code"] == "message_too_long"


async def test_readyz_while_a_websocket_is_connected(app_server: AppServer) -> None:
    ws, _ = await join(app_server, unique("ready"))
    async with ws:
        with http(app_server) as client:
            response = client.get("/readyz")
        assert response.status_code == 200, response.text
