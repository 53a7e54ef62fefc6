"""A WebSocket without traffic stays usable: every server at once, one idle period for all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack

import pytest

from tests.harness import SERVERS, AppServer, PostgresServer, RedisServer
from tests.integration.helpers import join, say, unique

pytestmark = pytest.mark.integration

# Longer than channels-redis' 5 s blocking read, twice (redis-py's default socket timeout is also
# 5 s: the layer's must be above it); far below the servers' 20 s pings.
IDLE_SECONDS = 12


@pytest.fixture
def every_server(redis_server: RedisServer, postgres_server: PostgresServer) -> Iterator[list[AppServer]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(AppServer(name, redis_url=redis_server.url, database_url=postgres_server.url))
            for name in SERVERS
        ]


# All servers in one test: one idle period covers them all.
async def test_idle_chat_sockets_stay_open(every_server: list[AppServer]) -> None:
    async with AsyncExitStack() as stack:
        sockets = {}
        for app in every_server:
            ws, _ = await join(app, unique(f"idle-{app.server}"))
            sockets[app.server] = await stack.enter_async_context(ws)
        await asyncio.sleep(IDLE_SECONDS)
        survivors = {}
        for server, ws in sockets.items():
            try:
                survivors[server] = (await say(ws, "still there?"))["type"]
            except Exception as exc:
                survivors[server] = f"{type(exc).__name__}: {exc}"
    assert survivors == dict.fromkeys(SERVERS, "chat.message")
