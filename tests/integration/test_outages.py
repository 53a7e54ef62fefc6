"""Dependency outages: Redis or PostgreSQL stops and comes back on the same port, the app does not restart.

Each test gets its own app server and its own instance of the dependency it stops; the other
dependency is the session's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.harness import SERVERS, AppServer, PostgresServer, RedisServer
from tests.integration.helpers import (
    DEPENDENCY_TIMEOUT,
    frames_until_closed,
    join,
    recv_until,
    say,
    send_json,
    unique,
    wait_for_readyz,
    ws_connect,
)

pytestmark = pytest.mark.integration

OUTAGE_READYZ_TIMEOUT = 15.0  # /readyz answers within READINESS_TIMEOUT (2 s); polled a few times
CLIENT_BUSY_SECONDS = 1.5  # longer than Autobahn's default close handshake timeout (1 s)
RECONNECT_ATTEMPTS = 5  # a client reconnects after 1013 (try again later)


@dataclass
class Stack:
    app: AppServer
    redis: RedisServer
    postgres: PostgresServer


@contextlib.contextmanager
def app_on(server: str, redis: RedisServer, postgres: PostgresServer) -> Iterator[Stack]:
    with AppServer(server, redis_url=redis.url, database_url=postgres.url) as app:
        yield Stack(app, redis, postgres)


@pytest.fixture(params=SERVERS)
def redis_outage(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> Iterator[Stack]:
    """An app server on a Redis of its own (to stop), and the session's PostgreSQL."""
    with RedisServer() as redis, app_on(request.param, redis, postgres_server) as stack:
        yield stack


@pytest.fixture(params=SERVERS)
def postgres_outage(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Stack]:
    """An app server on a PostgreSQL of its own (to stop), and the session's Redis."""
    with PostgresServer() as postgres, app_on(request.param, redis_server, postgres) as stack:
        yield stack


async def refused_with_1013(app: AppServer, room: str, code: str) -> None:
    """A new chat connection is accepted, then gets an error frame ``code`` and a 1013 close."""
    ws = await ws_connect(app, f"/ws/chat/{room}/")
    async with ws:
        frames, close_code = await frames_until_closed(ws, within=DEPENDENCY_TIMEOUT)
    assert close_code == 1013, (close_code, frames)
    assert [frame.get("code") for frame in frames if frame.get("type") == "error"] == [code], frames


async def join_after_recovery(app: AppServer, room: str) -> tuple[object, list[dict], int]:
    """Join like a client does after an outage: reconnect on 1013, a bounded number of times."""
    for attempt in range(1, RECONNECT_ATTEMPTS + 1):
        ws = await ws_connect(app, f"/ws/chat/{room}/")
        first = await recv_until(ws, lambda frame: True)
        if first.get("type") == "chat.history":
            return ws, first["messages"], attempt
        frames, code = await frames_until_closed(ws, within=DEPENDENCY_TIMEOUT)
        assert code == 1013, (first, frames, code)
    raise AssertionError(f"no chat connection after {RECONNECT_ATTEMPTS} attempts")


async def say_before_the_outage(ws: ClientConnection) -> dict[str, Any]:
    """A message sent while every dependency runs: stored and broadcast."""
    before = await say(ws, "before the outage")
    assert before["type"] == "chat.message", before
    return before


# --- Redis ----------------------------------------------------------------------------------------


async def test_redis_outage_and_recovery(redis_outage: Stack) -> None:
    app, redis = redis_outage.app, redis_outage.redis
    room = unique("redis")
    ws, _ = await join(app, room)
    async with ws:
        before = await say_before_the_outage(ws)

    redis.stop()
    body = wait_for_readyz(app, 503, timeout=OUTAGE_READYZ_TIMEOUT)
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "channel_layer": "failing"}
    assert set(body["errors"]) == {"channel_layer"}

    await refused_with_1013(app, room, "layer_unavailable")

    redis.start()  # same port, same URL: the app is not restarted
    assert wait_for_readyz(app, 200)["checks"] == {"database": "ok", "channel_layer": "ok"}

    ws, history, _ = await join_after_recovery(app, room)
    async with ws:  # type: ignore[attr-defined]
        assert before["id"] in [message["id"] for message in history]
        after = await say(ws, "after the outage")  # type: ignore[arg-type]
        assert after["type"] == "chat.message"
        assert after["id"] > before["id"]


async def test_first_chat_connection_after_redis_recovery(redis_outage: Stack) -> None:
    app, redis = redis_outage.app, redis_outage.redis
    room = unique("stale")
    ws, _ = await join(app, room)
    async with ws:
        await say_before_the_outage(ws)
    redis.stop()
    wait_for_readyz(app, 503, timeout=OUTAGE_READYZ_TIMEOUT)
    redis.start()
    wait_for_readyz(app, 200)
    _ws, _history, attempts = await join_after_recovery(app, room)
    async with _ws:  # type: ignore[attr-defined]
        assert attempts == 1


async def test_open_chat_socket_during_redis_outage(redis_outage: Stack) -> None:
    """An open socket gets an error frame or a 1013 close within a few seconds, never a hang."""
    app, redis = redis_outage.app, redis_outage.redis
    ws, _ = await join(app, unique("open-redis"))
    async with ws:
        await say(ws, "before the outage")
        redis.stop()
        with contextlib.suppress(ConnectionClosed):
            await send_json(ws, {"message": "during the outage"})
        frames, code = await frames_until_closed(ws, within=DEPENDENCY_TIMEOUT)
    errors = [frame for frame in frames if frame.get("type") == "error"]
    assert code == 1013, (code, frames)
    assert errors, frames


async def test_quiet_chat_socket_is_closed_during_redis_outage(redis_outage: Stack) -> None:
    """A socket that sends nothing learns of the outage from its failed layer read: the error frame
    and the 1013 close go out while the server still has a read of the client in flight."""
    app, redis = redis_outage.app, redis_outage.redis
    ws, _ = await join(app, unique("quiet-redis"))
    async with ws:
        redis.stop()
        frames, code = await frames_until_closed(ws, within=DEPENDENCY_TIMEOUT)
    assert code == 1013, (code, frames)
    assert [frame["code"] for frame in frames if frame.get("type") == "error"] == ["layer_unavailable"]


async def test_client_slow_to_answer_the_close_still_gets_it(redis_outage: Stack) -> None:
    """A client whose loop is busy when the close arrives (a phone, a busy tab) answers it late, and
    still reads the error frame and the 1013 that came before: the server waits for its answer
    instead of resetting the connection, which would destroy both unread when the client writes
    next (Daphne's Autobahn reset it after 1 s: deploy/bin/run_daphne.py)."""
    app, redis = redis_outage.app, redis_outage.redis
    ws, _ = await join(app, unique("slow-redis"))
    async with ws:
        redis.stop()
        # Blocking on purpose: this client's loop reads and answers nothing meanwhile.
        time.sleep(CLIENT_BUSY_SECONDS)  # noqa: ASYNC251
        with contextlib.suppress(ConnectionClosed):  # then it sends, before reading what came
            await send_json(ws, {"message": "sent by a client that has not read the close yet"})
        frames, code = await frames_until_closed(ws, within=DEPENDENCY_TIMEOUT)
    assert code == 1013, (code, frames)
    assert [frame["code"] for frame in frames if frame.get("type") == "error"] == ["layer_unavailable"]


# --- PostgreSQL -----------------------------------------------------------------------------------


async def test_postgres_outage_and_recovery(postgres_outage: Stack) -> None:
    app, postgres = postgres_outage.app, postgres_outage.postgres
    room = unique("postgres")
    ws, _ = await join(app, room)
    async with ws:
        before = await say_before_the_outage(ws)
        postgres.stop()
        await send_json(ws, {"message": "during the outage"})
        error = await recv_until(ws, lambda frame: frame.get("type") == "error", within=DEPENDENCY_TIMEOUT)
        assert error["code"] == "storage_unavailable"

    body = wait_for_readyz(app, 503, timeout=OUTAGE_READYZ_TIMEOUT)
    assert body["checks"]["database"] == "failing"
    assert "database" in body["errors"]

    await refused_with_1013(app, room, "storage_unavailable")

    postgres.start()  # same port, same data: the app is not restarted
    assert wait_for_readyz(app, 200)["checks"] == {"database": "ok", "channel_layer": "ok"}

    ws, history, _ = await join_after_recovery(app, room)
    async with ws:  # type: ignore[attr-defined]
        assert [message["id"] for message in history] == [before["id"]]
        after = await say(ws, "after the outage")  # type: ignore[arg-type]
        assert after["type"] == "chat.message"

    with postgres.connect() as conn:
        bodies = conn.execute("SELECT body FROM chat_message WHERE room = %s ORDER BY id", (room,)).fetchall()
    # The refused message was never stored; the others were.
    assert bodies == [("before the outage",), ("after the outage",)]


def test_postgres_data_survives_the_restart(postgres_outage: Stack) -> None:
    postgres = postgres_outage.postgres
    postgres.stop()
    postgres.start()
    with postgres.connect() as conn:
        assert conn.execute("SELECT count(*) FROM api_item").fetchone() == (100,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url.replace(postgres.password, "wrong"), connect_timeout=3)
