"""The channel layer sharded over two Redis (REDIS_URL lists both): chat in rooms on either shard, and
/readyz when one of them stops.

One server is enough: the sharding is channels-redis', the same under every server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.harness import AppServer, PostgresServer, RedisServer
from tests.integration.helpers import http, join, recv_until, say, wait_for_readyz

pytestmark = pytest.mark.integration

ROOMS = [f"shard-{number}" for number in range(8)]  # fixed names: which shard each lands on is fixed too
OUTAGE_READYZ_TIMEOUT = 15.0
CONSISTENT_POLLS = 8  # requests spread over the server's processes


@dataclass
class ShardedStack:
    app: AppServer
    shards: list[RedisServer]


@pytest.fixture
def sharded(postgres_server: PostgresServer) -> Iterator[ShardedStack]:
    with RedisServer() as first, RedisServer() as second:
        urls = f"{first.url},{second.url}"
        with AppServer("uvicorn", redis_url=urls, database_url=postgres_server.url) as app:
            yield ShardedStack(app, [first, second])


def group_keys(shard: RedisServer) -> list[bytes]:
    with redis.Redis.from_url(shard.url) as client:
        return client.keys("*group*")


async def test_rooms_on_both_shards_chat(sharded: ShardedStack) -> None:
    async with contextlib.AsyncExitStack() as sockets:
        pairs = []
        for room in ROOMS:
            alice, _ = await join(sharded.app, room)
            bob, _ = await join(sharded.app, room)
            pairs.append((await sockets.enter_async_context(alice), await sockets.enter_async_context(bob)))
        # Every room's membership is in Redis while its sockets are open, spread over both shards.
        assert [len(group_keys(shard)) > 0 for shard in sharded.shards] == [True, True]
        assert sum(len(group_keys(shard)) for shard in sharded.shards) == len(ROOMS)
        for room, (alice, bob) in zip(ROOMS, pairs, strict=True):
            sent = await say(alice, f"hello {room}")
            assert sent["type"] == "chat.message", sent
            assert await recv_until(bob, lambda frame, sent=sent: frame.get("id") == sent["id"]) == sent


def test_readyz_fails_while_either_shard_is_down(sharded: ShardedStack) -> None:
    assert wait_for_readyz(sharded.app, 200)["checks"]["channel_layer"] == "ok"
    for shard in sharded.shards:
        shard.stop()
        body = wait_for_readyz(sharded.app, 503, timeout=OUTAGE_READYZ_TIMEOUT)
        assert body["checks"] == {"database": "ok", "channel_layer": "failing"}
        # From every process, whichever shard its own channels are on.
        with http(sharded.app) as client:
            assert {client.get("/readyz").status_code for _ in range(CONSISTENT_POLLS)} == {503}
        shard.start()  # same port: the app is not restarted
        assert wait_for_readyz(sharded.app, 200)["checks"]["channel_layer"] == "ok"
