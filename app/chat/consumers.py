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
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
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
from chat.rooms import Broadcast, Member, RoomHub, hub_for

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


# The channel layer alias of every consumer here: it names no layer in CHANNEL_LAYERS, so Channels
# gives them none and opens no channel per socket. Echo talks to no other socket; chat reads its room.
NO_OWN_CHANNEL = "consumers-read-no-channel-of-their-own"

# Seconds a connection stopped by its server waits for the client to answer its close frame.
CLOSE_HANDSHAKE_TIMEOUT = 2.0

# The tasks of this process's open WebSocket connections, for servers that stop without telling them.
_connections: "weakref.WeakSet[asyncio.Task[Any]]" = weakref.WeakSet()


def stop_connections() -> int:
    """Stop every open WebSocket of this process the way Daphne does on SIGTERM: cancel its task,
    so that it closes with 1012 and leaves its room (``GuardedConsumer._stopped_by_server``).

    For a server's own SIGTERM hook (deploy/bin/gunicorn_asgi_conf.py). Returns how many it stopped.
    """
    running = [task for task in _connections if not task.done() and not task.get_loop().is_closed()]
    for task in running:
        task.cancel()
    return len(running)


class ClientReceive:
    """The server's ``receive()``, with a way to take back the read in flight while a close goes out.

    Channels keeps a read of the client pending all the time, so a close the app sends from a
    channel-layer event (Redis failed) goes out while that read waits. Granian (2.8) then ends the
    pending read with a disconnect but never sends the close frame: the client hangs, neither told
    nor closed. ``paused()`` cancels the pending read before the close and starts a new one after it,
    which then gets the disconnect. On the queue-based servers (Uvicorn, Daphne, Hypercorn) a
    cancelled read loses nothing: the next read gets the message. On Granian a frame caught halfway
    is dropped; its sender is being closed and never gets the acknowledgement, so it counts as not
    sent. tests/integration/test_outages.py checks the close on every server.
    """

    def __init__(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._receive = receive
        self._pending: asyncio.Task[dict[str, Any]] | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()

    async def __call__(self) -> dict[str, Any]:
        while True:
            await self._resumed.wait()
            self._pending = asyncio.ensure_future(self._receive())
            try:
                return await self._pending
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the consumer itself is ending
                # paused(): read again once the close has gone out
            finally:
                self._pending = None

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        pending = self._pending
        self._resumed.clear()
        try:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.wait({pending})
            yield
        finally:
            self._resumed.set()


class GuardedConsumer(AsyncWebsocketConsumer):
    """Size and rate limits, frame validation and heartbeats shared by every consumer.

    Subclasses implement ``handle_message`` for valid messages. Handlers run one at a time, as in
    Channels' own loop, also for events a subclass takes from elsewhere (``dispatch``).
    """

    channel_layer_alias = NO_OWN_CHANNEL
    _closing = False  # an error close is on its way: report a dead dependency once
    _close_sent = False  # this side closed the socket already (the server completes the handshake)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handling = asyncio.Lock()  # held by the handler that runs (dispatch)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self._background: set[asyncio.Task[None]] = set()
        task = asyncio.current_task()
        if task is not None:
            _connections.add(task)
        self._client_receive = ClientReceive(receive)
        try:
            await super().__call__(scope, self._client_receive, send)
        except asyncio.CancelledError:
            await self._stopped_by_server(receive)

    async def _stopped_by_server(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """The server cancelled this connection: it is stopping, and sends no websocket.disconnect.

        Daphne cancels every connection on SIGTERM (and so does the gunicorn-asgi variant's hook);
        Hypercorn does when its graceful timeout ends. Close with 1012 (service restart) so the
        client reconnects to another replica at once, and run ``disconnect()`` so the room
        membership leaves the layer. This is the connection's last act, so it ends normally instead
        of re-raising: Daphne waits for all cancelled connections only as long as none of them raises.
        """
        self._stop_background()
        if self._close_sent:
            await self.disconnect(CloseCode.SERVICE_RESTART)
            return
        with contextlib.suppress(Exception):  # the socket may be gone already
            await self.close(code=CloseCode.SERVICE_RESTART)
        await self.disconnect(CloseCode.SERVICE_RESTART)
        # Then wait, briefly, for the client's answer to the close frame. Daphne tears every
        # connection down as soon as all the cancelled ones have returned; a socket closed with the
        # client's answer still unread is reset, and the reset can destroy the close frame on its way.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_HANDSHAKE_TIMEOUT):
                while (await receive())["type"] != "websocket.disconnect":
                    pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' ``AsyncConsumer.dispatch`` without its database clean-up before every event.

        Channels runs ``close_old_connections()`` through ``sync_to_async`` before each handler, for
        handlers that use the ORM directly. These consumers reach the database only through
        ``database_sync_to_async``, which closes stale connections around each call itself, so here
        the hop is pure cost: a thread hand-off per event per socket, all queued on the one
        thread-sensitive thread (one broadcast to 500 members of a process is 500 hand-offs in a
        row). ``ASGI_FAST_PATH=0`` restores Channels' own dispatch; tests/unit/test_dispatch.py
        fails when Channels changes the method this replaces.
        """
        async with self._handling:
            if not settings.ASGI_FAST_PATH:
                await super().dispatch(message)
                return
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            await handler(message)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self._close_sent = True
        async with self._client_receive.paused():
            await super().close(code, reason)

    def start_background(self, work: Awaitable[None]) -> None:
        """Run ``work`` beside the connection; it is cancelled when the connection ends."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stop_background(self) -> None:
        for task in list(self._background):
            task.cancel()

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

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        if settings.WS_APP_HEARTBEAT > 0:
            self.start_background(self._beat(settings.WS_APP_HEARTBEAT))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._stop_background()
        await super().websocket_disconnect(message)

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.send_json({"type": "heartbeat"})

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
            await self.send(text_data=error.as_frame())
            return
        await self.handle_message(message)

    async def handle_message(self, message: ClientMessage) -> None:
        raise NotImplementedError

    async def send_error(self, code: ErrorCode, detail: str) -> None:
        await self.send(text_data=error_frame(code, detail))

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))

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

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        if not is_valid_room(self.room):
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
        await self.close_with_error(ErrorCode.TOO_SLOW, "too far behind the room; reconnect for the history")

    async def handle_message(self, message: ClientMessage) -> None:
        try:
            stored = await storage_call(self._store(message.text))
        except DependencyError as exc:
            logger.warning("message not stored", extra={"room": self.room, "error": str(exc)})
            await self.send_error(ErrorCode.STORAGE_UNAVAILABLE, "message not stored; send it again")
            return
        event = stored.as_event()
        try:
            await layer_call(self.layer.group_send(self.group, event))
        except DependencyError as exc:
            # Stored but not broadcast: acknowledge it to the sender (it is in the database and in
            # everyone's history), then close so the client reconnects once the layer is back.
            await self.send_json(event)
            await self._unavailable(exc)

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A broadcast from the room (type ``chat.message``), encoded once for all its sockets."""
        await self.send(text_data=event.text if isinstance(event, Broadcast) else json.dumps(event))

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
