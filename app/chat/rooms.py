"""Room fan-out: one channel-layer membership per process and room, shared by its sockets there.

channels-redis delivers a group message to every member channel on its own. With each socket a
member, one broadcast to the 250 sockets a process holds in a room is 250 reads from Redis in a
row (four round trips each, under the process's receive lock), and the last socket gets the
message hundreds of milliseconds after the first. Here a process joins each room once, reads each
broadcast once, and hands it to its sockets of that room in memory.

The process reads all its rooms through one channel and one read, which runs until the layer
fails: a room that closes leaves its group and nothing else. To channels-redis all the channels of
a process are one Redis key, and a read cancelled after Redis popped a message, before its reply
was parsed, loses that message, whichever room it was for (django/channels#1683,
channels_redis#366): with a read per room, cancelled when the room closed, the other rooms of the
process missed broadcasts under churn, silently (tests/unit/test_rooms.py, on Redis under make
test-services). One read also wakes one task per message, where a read per room woke every room's.
So each broadcast carries its group (``RoomHub.broadcast``), by which the read finds its room.

The room's sockets share each broadcast as one ``Broadcast``, which is encoded as a JSON text
frame once, by whichever socket sends it first.

The membership is a lease, renewed every third of the layer's group expiry while the room has a
socket in the process, so a dead process's membership drops out within that expiry. When the
layer fails (the read, or a room's renewal), every socket of the rooms concerned gets a
``layer.failed`` event and the process forgets those rooms; the next socket to join starts a new
membership (and, after a failed read, a new channel and read).

Only public channel-layer calls are used (``new_channel``, ``group_add``, ``group_discard``,
``group_send``, ``receive``), so it works on every layer: Redis core or pub/sub, and the in-memory
one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from core import metrics

logger = logging.getLogger(__name__)

LAYER_FAILED = "layer.failed"  # the room's membership is gone: its sockets close and reconnect
ROOM_OVERFLOW = "room.overflow"  # the socket fell too far behind its room: it closes and reconnects
ROUTE_KEY = "room_group"  # a broadcast's group, by which the process's read finds its room

# Abandoned layer calls still being cancelled (a reference keeps each task alive until it ends).
_abandoned: set[asyncio.Task[Any]] = set()


def cancel_until_done(task: asyncio.Task[Any], every: float = 0.5, attempts: int = 20) -> None:
    """Cancel ``task``, again every ``every`` seconds while it swallows the cancellation.

    On Python 3.11, asyncio.wait_for inside redis-py's connect returns instead of raising when its
    inner future finishes at the moment it is cancelled, so a Redis call can outlive one cancel.
    Never used on a read: a cancelled read can lose a message (see the module's docstring).
    """

    async def keep_cancelling() -> None:
        for _ in range(attempts):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return
        logger.warning("a channel-layer call outlived %d cancellations", attempts)

    keeper = asyncio.ensure_future(keep_cancelling())
    _abandoned.add(keeper)
    keeper.add_done_callback(_abandoned.discard)
    # Nobody awaits the call any more: take its outcome so that asyncio does not log it.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


def wire_text(event: Mapping[str, Any]) -> str:
    """An event as the JSON text frame the clients get: without its send time, kept for the metrics."""
    return json.dumps({key: value for key, value in event.items() if key != metrics.BROADCAST_TIME_KEY})


class Broadcast(dict[str, Any]):
    """One message read from the room's group: the event, as the layer delivered it, shared by every
    socket of the room in this process (none of them changes it)."""

    __slots__ = ("_text",)

    @property
    def text(self) -> str:
        """The event as a JSON text frame, encoded once for all the sockets that send it."""
        try:
            return self._text
        except AttributeError:
            self._text: str = wire_text(self)
            return self._text


def membership_renewal_interval(layer: Any) -> float:
    """A third of the layer's group expiry: a membership survives two failed renewals in a row."""
    return max(1.0, float(getattr(layer, "group_expiry", 86400)) / 3)


class Member:
    """One socket's place in a room: the room's events for it, in order."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._overflowed = False

    async def next_event(self) -> dict[str, Any]:
        return await self._events.get()

    def deliver(self, event: dict[str, Any]) -> None:
        """Queue ``event``; a socket more than ``capacity`` events behind gets ``room.overflow``.

        The layer itself drops messages for a full channel silently; a socket that far behind is
        told instead, and closes and reconnects, which gives it the history again.
        """
        if self._overflowed:
            return
        if self._events.qsize() >= self.room.capacity:
            self._overflowed = True
            while not self._events.empty():
                self._events.get_nowait()
            event = {"type": ROOM_OVERFLOW, "behind": self.room.capacity}
        self._events.put_nowait(event)

    def fail(self, error: str) -> None:
        """Queue ``layer.failed`` after whatever the room delivered before it failed."""
        self._events.put_nowait({"type": LAYER_FAILED, "error": error})


class Room:
    """This process's membership of one group, and its sockets in it."""

    def __init__(self, hub: RoomHub, group: str) -> None:
        self.hub = hub
        self.group = group
        self.capacity = hub.capacity
        self.members: set[Member] = set()
        self.channel: str | None = None  # the hub's channel, once it is in the group
        self.failed = False
        self.closed = False
        self._opening: asyncio.Future[None] | None = None
        self._renewal: asyncio.Task[None] | None = None

    async def opened(self) -> None:
        """Join the group (once, whoever asks first); raises what the layer raised."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def _open(self) -> None:
        hub = self.hub
        # The room's last socket may have left just now: its group_discard would undo this join.
        await hub.left(self.group)
        try:
            channel = await hub.channel()
            await hub.bounded(hub.layer.group_add(self.group, channel))
        except Exception:
            metrics.layer_failure("join")
            raise
        self.channel = channel
        if self.closed or self.failed:
            # The last socket left while the room was joining, and the cancel close() sent was lost:
            # on Python 3.11, asyncio.wait_for returns the result of a call that finishes at the moment
            # it is cancelled. Or the read failed meanwhile. Leave now, rather than renew for no socket.
            await self._leave()
            return
        hub.read(channel)
        self._renewal = asyncio.ensure_future(self._renew(membership_renewal_interval(hub.layer)))

    def deliver(self, event: dict[str, Any]) -> None:
        """One broadcast the process read for this room, to each of its sockets."""
        broadcast = Broadcast(event)
        for member in list(self.members):
            member.deliver(broadcast)

    async def _renew(self, interval: float) -> None:
        """Re-join every ``interval`` seconds: the layer forgets members older than its group expiry."""
        assert self.channel is not None
        while True:
            await asyncio.sleep(interval)
            try:
                await self.hub.bounded(self.hub.layer.group_add(self.group, self.channel))
            except Exception as exc:
                metrics.layer_failure("renew")
                self.fail(exc)
                return

    def fail(self, exc: BaseException) -> None:
        """The membership is lost: tell every socket, and let the next joiner start a new one."""
        if self.failed:
            return
        self.failed = True
        self.hub.forget(self)
        error = f"{type(exc).__name__}: {exc}"
        for member in list(self.members):
            member.fail(error)
        if self._renewal is not None and self._renewal is not asyncio.current_task():
            cancel_until_done(self._renewal)

    async def close(self) -> None:
        """Stop renewing and leave the group (the last socket of the room has left)."""
        self.closed = True
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._renewal is not None and not self._renewal.done():
            cancel_until_done(self._renewal)  # a group_add: nothing is lost by cancelling it
        if self.failed or self.channel is None:
            return  # nothing to leave (yet: see _open); a lost membership expires in the layer on its own
        await self._leave()

    async def _leave(self) -> None:
        assert self.channel is not None
        try:
            await self.hub.bounded(self.hub.layer.group_discard(self.group, self.channel))
        except Exception as exc:
            metrics.layer_failure("leave")
            logger.warning("could not leave room", extra={"group": self.group, "error": f"{exc!r}"})


class RoomHub:
    """The rooms of one channel layer in this process, and the one read of their broadcasts
    (see ``hub_for``)."""

    def __init__(self, layer: Any, timeout: float, capacity: int) -> None:
        self.layer = layer
        self.timeout = timeout  # seconds for any layer call
        self.capacity = capacity  # broadcasts a socket may fall behind
        self._rooms: dict[str, Room] = {}
        self._channel: str | None = None  # every room's membership, read by _read
        self._reader: asyncio.Task[None] | None = None
        self._leaving: dict[str, asyncio.Task[None]] = {}  # rooms still leaving their group, by group

    def bounded(self, awaitable: Any) -> Any:
        """A layer call that gives up after ``timeout`` seconds: a dead Redis never hangs a room."""
        return asyncio.wait_for(awaitable, self.timeout)

    async def broadcast(self, group: str, event: Mapping[str, Any]) -> None:
        """Send ``event`` to every socket of ``group``, in every process that has the room."""
        await self.layer.group_send(group, {**event, ROUTE_KEY: group})

    async def join(self, group: str) -> Member:
        """A place in ``group`` for one socket; raises when the layer cannot be joined."""
        room = self._rooms.get(group)
        if room is None:
            room = self._rooms[group] = Room(self, group)
        member = Member(room)
        room.members.add(member)  # before awaiting: a concurrent last leave keeps the room
        try:
            await room.opened()
        except BaseException as exc:
            if isinstance(exc, Exception):
                room.fail(exc)  # the layer refused: every socket waiting for this room is told
            await self.leave(member)
            raise
        return member

    async def leave(self, member: Member) -> None:
        room = member.room
        room.members.discard(member)
        if room.members:
            return
        self.forget(room)
        leaving = self._leaving[room.group] = asyncio.ensure_future(room.close())

        def done(_: asyncio.Task[None]) -> None:
            if self._leaving.get(room.group) is leaving:
                del self._leaving[room.group]

        leaving.add_done_callback(done)
        await asyncio.shield(leaving)  # a socket cancelled while leaving does not stop the room's leave

    async def left(self, group: str) -> None:
        """Once the room of ``group`` that was closing, if any, has left the group."""
        leaving = self._leaving.get(group)
        if leaving is not None:
            await asyncio.wait({leaving})  # how it ended is its own business (close logs it)

    async def channel(self) -> str:
        """The process's channel: every room's membership."""
        if self._channel is None:
            channel = await self.bounded(self.layer.new_channel())
            if self._channel is None:  # not meanwhile by a room opening beside this one
                self._channel = channel
        return self._channel

    def read(self, channel: str) -> None:
        """Read ``channel`` from now on, unless it is read already (the first room to join starts it)."""
        if self._reader is None and channel == self._channel:
            self._reader = asyncio.ensure_future(self._read(channel))

    async def _read(self, channel: str) -> None:
        """Every broadcast to this process's rooms, each to its room, until the layer fails."""
        while True:
            try:
                event = await self.layer.receive(channel)
            except Exception as exc:
                metrics.layer_failure("receive")
                self._read_failed(exc)
                return
            room = self._rooms.get(event.pop(ROUTE_KEY, None))  # None: the room closed since
            if room is not None:
                room.deliver(event)

    def _read_failed(self, exc: BaseException) -> None:
        """Every room loses its membership; the next socket to join starts a new channel and read."""
        self._channel = self._reader = None
        for room in list(self._rooms.values()):
            room.fail(exc)

    def forget(self, room: Room) -> None:
        if self._rooms.get(room.group) is room:
            del self._rooms[room.group]

    def room(self, group: str) -> Room | None:
        """This process's room for ``group``, while it has sockets."""
        return self._rooms.get(group)

    def __len__(self) -> int:
        return len(self._rooms)


# One hub per channel layer: a layer (and so a hub) per process in production, per test in tests.
_hubs: weakref.WeakKeyDictionary[Any, RoomHub] = weakref.WeakKeyDictionary()


def hub_for(layer: Any, timeout: float, capacity: int) -> RoomHub:
    """The hub of ``layer``, made on first use with ``timeout`` and ``capacity``."""
    hub = _hubs.get(layer)
    if hub is None:
        hub = _hubs[layer] = RoomHub(layer, timeout, capacity)
    return hub
