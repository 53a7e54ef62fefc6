"""What any WebSocket consumer needs to behave the same under every server the stack runs.

The servers differ where Channels assumes one behaviour: Granian loses a close sent while a read of
the client is pending and ends the connection the moment the app closes it, Daphne and Hypercorn
stop a connection by cancelling it without a ``websocket.disconnect``, Gunicorn's ASGI worker holds
WebSockets open on SIGTERM, Granian and Gunicorn's worker send no pings. ``PortableConsumer`` makes
each of these come out the same; the application's consumers (chat/consumers.py) build on it and add
only their own protocol.
"""

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from core import metrics

# 1012, service restart: the server is stopping (a restart, a deploy), the client reconnects now.
SERVICE_RESTART = 1012
ABNORMAL_CLOSURE = 1006  # no close frame: the connection was lost (RFC 6455, 7.1.5)

# The channel layer alias of these consumers: it names no layer in CHANNEL_LAYERS, so Channels gives
# them none and opens no channel per socket. A consumer that talks to others reads what it needs
# itself (chat reads its room, chat/rooms.py).
NO_OWN_CHANNEL = "consumers-read-no-channel-of-their-own"

# Seconds a connection stopped by its server waits for the client to answer its close frame.
CLOSE_HANDSHAKE_TIMEOUT = 2.0

# The tasks of this process's open WebSocket connections, for servers that stop without telling them.
_connections: "weakref.WeakSet[asyncio.Task[Any]]" = weakref.WeakSet()


def stop_connections() -> int:
    """Stop every open WebSocket of this process the way Daphne does on SIGTERM: cancel its task,
    so that it closes with 1012 and runs its ``disconnect`` (``PortableConsumer._stopped_by_server``).

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
        self._disconnect: dict[str, Any] | None = None  # read by drain(), for the consumer's next read

    async def __call__(self) -> dict[str, Any]:
        if self._disconnect is not None:
            return self._disconnect
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

    async def drain(self, quiet: float, limit: float) -> None:
        """Read and drop the client's frames until none has come for ``quiet`` seconds, or ``limit``
        seconds have passed. Call it only with no read pending (inside ``paused()``).

        Granian (2.8) ends the TCP connection as soon as the app closes, without waiting for the
        client's close frame. Frames the client sent that Granian has not read yet make that end a
        reset, and a reset destroys what the proxy had not passed on yet: the client then gets
        neither the close frame nor the error frames before it, only a dropped connection (a client
        closed for flooding did, under load). Drained first, the socket closes with nothing unread.
        A disconnect read here is what the consumer's next read gets.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while self._disconnect is None:
                    try:
                        async with asyncio.timeout(quiet):
                            message = await self._receive()
                    except TimeoutError:
                        return  # the client is quiet
                    if message["type"] == "websocket.disconnect":
                        self._disconnect = message


class PortableConsumer(AsyncWebsocketConsumer):
    """An ``AsyncWebsocketConsumer`` that closes, stops and keeps alive the same way on every server.

    Handlers run one at a time, as in Channels' own loop, also for events a subclass takes from
    elsewhere (``dispatch``); work beside the connection (``start_background``) ends with it.
    """

    channel_layer_alias = NO_OWN_CHANNEL
    metrics_route = "other"  # the route's name in the metrics (core/metrics.py)
    _close_sent = False  # this side closed the socket already (the server completes the handshake)
    _open = False  # accepted, and counted among the open connections until it ends
    _disconnected = False  # disconnect() has run (or is running)

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
        except Exception:
            await self._ended_by_failure()
            raise
        finally:
            # However it ended (disconnect, a server's cancellation, a failure): no longer open.
            if self._open:
                self._open = False
                metrics.ws_ended(self.metrics_route)

    async def _stopped_by_server(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """The server cancelled this connection: it is stopping, and sends no websocket.disconnect.

        Daphne cancels every connection on SIGTERM (and so does the gunicorn-asgi variant's hook);
        Hypercorn does when its graceful timeout ends. Close with 1012 (service restart) so the
        client reconnects to another replica at once, and run ``disconnect()`` so the consumer lets
        go of what it holds (chat: its room membership). This is the connection's last act, so it
        ends normally instead of re-raising: Daphne waits for all cancelled connections only as long
        as none of them raises.
        """
        self._stop_background()
        if self._close_sent:
            await self.disconnect(SERVICE_RESTART)
            return
        with contextlib.suppress(Exception):  # the socket may be gone already
            await self.close(code=SERVICE_RESTART)
        await self.disconnect(SERVICE_RESTART)
        # Then wait, briefly, for the client's answer to the close frame. Daphne tears every
        # connection down as soon as all the cancelled ones have returned; a socket closed with the
        # client's answer still unread is reset, and the reset can destroy the close frame on its way.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_HANDSHAKE_TIMEOUT):
                while (await receive())["type"] != "websocket.disconnect":
                    pass

    async def _ended_by_failure(self) -> None:
        """A handler raised: let go of what the consumer holds, as a disconnect would.

        Nothing else would: no websocket.disconnect follows. The usual cause is a client that left
        while a handler was sending to it: Uvicorn's send then raises ClientDisconnected (an
        OSError), and a chat socket that went away between its join and its history would keep its
        room, its layer membership and the room's reader and renewal tasks for the process's life.
        """
        self._stop_background()
        if not self._disconnected:
            with contextlib.suppress(Exception):
                await self.disconnect(ABNORMAL_CLOSURE)

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
        closing_open_socket = self._open and not self._close_sent  # before accept, a close refuses
        if closing_open_socket:
            sent = 1000 if code is None or isinstance(code, bool) else code  # Channels sends none: 1000
            metrics.ws_closed(self.metrics_route, sent, "app")
        self._close_sent = True
        async with self._client_receive.paused():
            if closing_open_socket and settings.WS_QUIET_BEFORE_CLOSE > 0:  # Granian's start file
                await self._client_receive.drain(settings.WS_QUIET_BEFORE_CLOSE, CLOSE_HANDSHAKE_TIMEOUT)
            await super().close(code, reason)

    def start_background(self, work: Awaitable[None]) -> None:
        """Run ``work`` beside the connection; it is cancelled when the connection ends."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stop_background(self) -> None:
        for task in list(self._background):
            task.cancel()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self._open = True
        metrics.ws_accepted(self.metrics_route)
        # Granian and Gunicorn's ASGI worker have no ping setting: their start files set
        # WS_APP_HEARTBEAT, and the app keeps idle sockets alive through Nginx's read timeout itself.
        if settings.WS_APP_HEARTBEAT > 0:
            self.start_background(self._beat(settings.WS_APP_HEARTBEAT))

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        metrics.ws_frame_received(self.metrics_route)
        await super().websocket_receive(message)

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        await super().send(text_data, bytes_data, close)
        metrics.ws_frame_sent(self.metrics_route)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self._open and not self._close_sent:  # the peer closed first (or the connection was lost)
            metrics.ws_closed(self.metrics_route, message.get("code"), "peer")
        self._stop_background()
        self._disconnected = True  # Channels' handler runs disconnect() next
        await super().websocket_disconnect(message)

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.send_json({"type": "heartbeat"})

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))
