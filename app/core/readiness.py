"""Real round trips to each dependency, for /readyz."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from core import metrics

logger = logging.getLogger(__name__)


def _database_round_trip() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # Hand the connection back to the pool (or close it): this runs outside the request cycle's
        # own cleanup when called from a thread.
        connection.close()


async def check_database() -> None:
    await sync_to_async(_database_round_trip, thread_sensitive=False)()


async def check_channel_layer() -> None:
    """Send a message to a fresh channel and read it back.

    The channel has the default prefix on purpose: channels-redis serves every process-local
    channel of a prefix through one blocking read shared by the process, so a channel of its own
    prefix would wait behind the consumers' read (up to 5 s) while any WebSocket is open.
    """
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel()
    try:
        await layer.send(channel, {"type": "readyz.ping"})
        message = await layer.receive(channel)
    finally:
        await _stop_listening(layer, channel)
    if message.get("type") != "readyz.ping":
        raise RuntimeError(f"unexpected reply {message!r}")
    await _ping_every_shard(layer)


async def _ping_every_shard(layer: Any) -> None:
    """A layer sharded over several Redis (REDIS_URL lists more than one): the round trip above went
    through the shard of this process's channels only, and a room whose group hashes to another
    one fails while that one is down; each of the others answers a PING. (channels-redis' core
    layer; its pub/sub layer keeps its shards' connections to itself.)"""
    shards = getattr(layer, "ring_size", 1)
    if shards > 1 and hasattr(layer, "connection"):
        for index in range(shards):
            await layer.connection(index).ping()


async def _stop_listening(layer: Any, channel: str) -> None:
    """End the probe channel the way a consumer's channel ends: its pending receive is cancelled.

    The layers have no call to delete a channel; RedisPubSubChannelLayer unsubscribes a channel
    from Redis only when a receive on it is cancelled, so without this every probe would leave a
    subscription behind. The other layers just drop the channel's empty buffer.
    """
    pending = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)  # let the receive start waiting
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
}


async def _run(name: str, check: Callable[[], Awaitable[None]]) -> tuple[str, str | None]:
    try:
        await asyncio.wait_for(check(), timeout=settings.READINESS_TIMEOUT)
    except TimeoutError:
        error = f"no answer within {settings.READINESS_TIMEOUT:g}s"
        metrics.readiness_check(name, "timeout")
    except Exception as exc:  # every failure is reported, none is raised
        error = f"{type(exc).__name__}: {exc}".strip()
        metrics.readiness_check(name, "error")
    else:
        metrics.readiness_check(name, "ok")
        return name, None
    logger.warning("readiness check failed", extra={"dependency": name, "error": error})
    return name, error


async def failing_dependencies() -> dict[str, str]:
    """Run every check concurrently; map each failing dependency to its error."""
    results = await asyncio.gather(*(_run(name, check) for name, check in CHECKS.items()))
    return {name: error for name, error in results if error is not None}
