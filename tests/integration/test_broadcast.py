"""Two app server processes on one Redis and one PostgreSQL: a room spans both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.harness import AppServer, PostgresServer, RedisServer
from tests.integration.helpers import join, recv_until, say, unique

pytestmark = pytest.mark.integration


@pytest.fixture(params=[("uvicorn", "daphne"), ("hypercorn", "granian")], ids="+".join)
def two_processes(
    request: pytest.FixtureRequest, redis_server: RedisServer, postgres_server: PostgresServer
) -> Iterator[tuple[AppServer, AppServer]]:
    with ExitStack() as stack:
        servers = tuple(
            stack.enter_context(AppServer(name, redis_url=redis_server.url, database_url=postgres_server.url))
            for name in request.param
        )
        yield servers  # type: ignore[misc]


async def test_each_process_receives_the_other_ones_messages(
    two_processes: tuple[AppServer, AppServer],
) -> None:
    first_app, second_app = two_processes
    room = unique("shared")
    first, _ = await join(first_app, room, name=first_app.server)
    second, _ = await join(second_app, room, name=second_app.server)
    async with first, second:
        from_first = await say(first, f"hello from {first_app.server}")
        assert from_first["type"] == "chat.message"
        assert await recv_until(second, lambda frame: frame.get("id") == from_first["id"]) == from_first

        from_second = await say(second, f"hello from {second_app.server}")
        assert from_second["type"] == "chat.message"
        assert await recv_until(first, lambda frame: frame.get("id") == from_second["id"]) == from_second

    # Both processes read the same history from the shared database.
    for app in two_processes:
        ws, history = await join(app, room)
        async with ws:
            assert [message["id"] for message in history] == [from_first["id"], from_second["id"]]
