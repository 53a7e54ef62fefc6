"""WebSocket consumers: echo, and chat rooms broadcast through the channel layer.

A chat message is stored in the database first, then broadcast to the room, the sender included.
The sender's copy is its acknowledgement, so an acknowledged message is always in the database;
a message that could not be stored is answered with ``storage_unavailable`` and never broadcast.

A chat socket does not join the channel layer's group itself: its process joins each room once
and fans each broadcast out to its sockets in memory (chat/rooms.py). No consumer reads a channel
of its own, so Channels opens none for them.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from core import metrics
from core.consumers import PortableConsumer
from django.conf import settings

from chat.models import Message
from chat.protocol import (
    ClientMessage,
    CloseCode,
    ErrorCode,
    ProtocolError,
    display_name,
    error_frame,
    is_valid_room,
    parse_client_frame,
)
from chat.ratelimit import TokenBucket
from chat.rooms import Broadcast, Member, RoomHub, hub_for, wire_text

logger = logging.getLogger(__name__)
T = TypeVar("T")


class DependencyError(Exception):
    """The database or the channel layer failed or did not answer in time."""

    def __init__(self, code: ErrorCode, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.code = code


async def within_deadline(awaitable: Awaitable[T], code: ErrorCode) -> T:
    """Await a database or layer call, bounded by WS_DEPENDENCY_TIMEOUT: a dead dependency never hangs.

    Any failure becomes a ``DependencyError`` carrying the error code the client will see.
    """
    try:
        return await asyncio.wait_for(awaitable, timeout=settings.WS_DEPENDENCY_TIMEOUT)
    except Exception as exc:
        raise DependencyError(code, exc) from exc


def layer_call(awaitable: Awaitable[T]) -> Awaitable[T]:
    return within_deadline(awaitable, ErrorCode.LAYER_UNAVAILABLE)


def storage_call(awaitable: Awaitable[T]) -> Awaitable[T]:
    return within_deadline(awaitable, ErrorCode.STORAGE_UNAVAILABLE)


class GuardedConsumer(PortableConsumer):
    """Size and rate limits, frame validation and error frames shared by the app's consumers.

    Subclasses implement ``handle_message`` for valid messages. What makes a consumer behave the
    same on every server (closes, stops, heartbeats) is ``core.consumers.PortableConsumer``'s.
    """

    _closing = False  # an error close is on its way: report a dead dependency once

    async def _unavailable(self, exc: DependencyError) -> None:
        logger.warning("dependency unavailable, closing", extra={"error": str(exc)})
        await self.close_with_error(exc.code, "the service is temporarily unavailable; reconnect later")

    async def close_with_error(self, code: ErrorCode, detail: str) -> None:
        """Send one error frame and close with 1013: the client reconnects later, and gets history."""
        if self._closing:
            return
        self._closing = True
        await self.send_error(code, detail)
        await self.close(code=CloseCode.TRY_AGAIN_LATER)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.bucket = TokenBucket(settings.WS_RATE_PER_SECOND, settings.WS_RATE_BURST)
        self.strikes = 0
        await super().websocket_connect(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(bytes_data) if text_data is None else len(text_data.encode())
        if size > settings.WS_MAX_MESSAGE_BYTES:
            # What the servers with a size setting do themselves: close with "message too big".
            await self.close(code=CloseCode.MESSAGE_TOO_BIG)
            return
        if not self.bucket.allow():
            await self._refuse_flood()
            return
        if text_data is None:
            await self.send_error(ErrorCode.BINARY_NOT_SUPPORTED, "binary frames are not accepted; send text")
            return
        try:
            message = parse_client_frame(text_data, settings.CHAT_MESSAGE_MAX_CHARS)
        except ProtocolError as error:
            await self.send_error(error.code, error.detail)
            return
        await self.handle_message(message)

    async def handle_message(self, message: ClientMessage) -> None:
        raise NotImplementedError

    async def send_error(self, code: ErrorCode, detail: str) -> None:
        await self.send(text_data=error_frame(code, detail))
        metrics.ws_error_frame(code.value)

    async def _refuse_flood(self) -> None:
        self.strikes += 1
        if self.strikes > settings.WS_RATE_STRIKES:
            logger.warning("closing flooding client", extra={"client": self.scope.get("client")})
            await self.close(code=CloseCode.POLICY_VIOLATION)
            return
        await self.send_error(
            ErrorCode.RATE_LIMITED,
            f"more than {settings.WS_RATE_PER_SECOND:g} frames/s; this frame was dropped",
        )


class EchoConsumer(GuardedConsumer):
    """Sends every valid message straight back.

    It talks to no other connection and uses no channel layer: no Redis call per socket, and echo
    keeps working while Redis is down.
    """

    metrics_route = "echo"

    async def handle_message(self, message: ClientMessage) -> None:
        await self.send_json({"message": message.text})


def chat_rooms(layer: Any) -> RoomHub:
    """This process's chat rooms on ``layer`` (one hub per layer)."""
    return hub_for(layer, settings.WS_DEPENDENCY_TIMEOUT, settings.CHANNEL_LAYER_CAPACITY)


def room_group(room: str) -> str:
    """Channel-layer group of a room. Hashed: group names must stay under 100 characters."""
    return "chat." + hashlib.blake2s(room.encode(), digest_size=16).hexdigest()


class ChatConsumer(GuardedConsumer):
    """One chat room: history on connect, store-then-broadcast on each message.

    Its events come from its room (chat/rooms.py), read by a task of its own beside Channels' loop
    over the client's frames: a broadcast costs the socket one step of that task, where Channels'
    loop took a wait on both sources and a new task per event.
    """

    room: str
    group: str
    user_name: str
    layer: Any  # the default channel layer: the room's group lives there
    member: Member | None = None
    metrics_route = "chat"

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        if not is_valid_room(self.room):
            metrics.ws_refused("room_name")
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        self.group = room_group(self.room)
        self.user_name = self._user_name()
        self.layer = get_channel_layer()
        await self.accept()
        try:
            # Join first, then read history: nothing sent in between is missed (clients dedupe by id).
            self.member = member = await layer_call(self._rooms().join(self.group))
            history = await storage_call(self._history())
        except DependencyError as exc:
            await self._unavailable(exc)
            return
        await self.send_json({"type": "chat.history", "room": self.room, "messages": history})
        # Broadcasts that arrived meanwhile wait in the room's queue: they follow the history.
        self.start_background(self._forward_room_events(member))

    def _rooms(self) -> RoomHub:
        return chat_rooms(self.layer)

    async def _forward_room_events(self, member: Member) -> None:
        """The room's events, in order, each to its handler, while the socket is open.

        A send the server refuses means the client is gone (its disconnect follows). Anything else
        is a bug: it is logged, and the socket closes with 1011 as when a handler raises in
        Channels' own loop.
        """
        try:
            while True:
                await self.dispatch(await member.next_event())
        except OSError as exc:
            logger.debug("socket gone during a broadcast", extra={"room": self.room, "error": repr(exc)})
        except Exception:
            logger.exception("room event failed", extra={"room": self.room})
            with contextlib.suppress(Exception):
                await self.close(code=CloseCode.INTERNAL_ERROR)

    async def layer_failed(self, event: dict[str, Any]) -> None:
        """The room's membership is gone (Redis failed)."""
        await self._unavailable(DependencyError(ErrorCode.LAYER_UNAVAILABLE, RuntimeError(event["error"])))

    async def disconnect(self, code: int) -> None:
        # Leave once, whether the server or a cancellation got here first.
        member, self.member = self.member, None
        if member is not None:
            await self._rooms().leave(member)

    async def room_overflow(self, event: dict[str, Any]) -> None:
        """This socket fell more than CHANNEL_LAYER_CAPACITY broadcasts behind its room (a slow client)."""
        logger.warning("slow socket, closing", extra={"room": self.room, "behind": event["behind"]})
        metrics.ws_too_slow()
        await self.close_with_error(ErrorCode.TOO_SLOW, "too far behind the room; reconnect for the history")

    async def handle_message(self, message: ClientMessage) -> None:
        try:
            stored = await storage_call(self._store(message.text))
        except DependencyError as exc:
            logger.warning("message not stored", extra={"room": self.room, "error": str(exc)})
            await self.send_error(ErrorCode.STORAGE_UNAVAILABLE, "message not stored; send it again")
            return
        metrics.chat_stored()
        event = stored.as_event()
        try:
            await layer_call(self._rooms().broadcast(self.group, metrics.stamped_broadcast(event)))
        except DependencyError as exc:
            metrics.layer_failure("group_send")
            # Stored but not broadcast: acknowledge it to the sender (it is in the database and in
            # everyone's history), then close so the client reconnects once the layer is back.
            await self.send_json(event)
            await self._unavailable(exc)

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A broadcast from the room (type ``chat.message``), encoded once for all its sockets."""
        await self.send(text_data=event.text if isinstance(event, Broadcast) else wire_text(event))
        metrics.fanout_delivered(event)

    def _user_name(self) -> str:
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return user.get_username()[:64]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        return display_name((query.get("name") or [None])[0])

    @database_sync_to_async
    def _history(self) -> list[dict[str, object]]:
        recent = Message.objects.filter(room=self.room).order_by("-id")[: settings.CHAT_HISTORY_SIZE]
        return [message.as_event() for message in reversed(recent)]

    @database_sync_to_async
    def _store(self, text: str) -> Message:
        return Message.objects.create(room=self.room, user=self.user_name, body=text)
