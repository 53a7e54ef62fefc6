"""Gunicorn settings file of the gunicorn-asgi variant (``gunicorn -c``): WebSockets on SIGTERM.

On SIGTERM, Gunicorn's ASGI worker stops accepting and waits up to its graceful timeout for open
connections, WebSockets included, which do not end on their own; the arbiter kills the worker with
SIGKILL at that same deadline. Clients would see their sockets dropped without a close frame after
20 s, and their room memberships would stay in Redis. This hook makes the worker's SIGTERM do what
Uvicorn's does: every open WebSocket is closed at once with 1012 (service restart) and leaves its
room (``core.consumers.stop_connections``), then the worker drains HTTP requests as before.

It also makes the worker refuse a message over ``--websocket-max-message-size`` by a closing
handshake. The worker reads the frame's announced length, sends 1009 and closes the TCP connection
at once, while the client is still sending the message: a socket closed with unread data in it sends
a reset, which drops the close frame on its way (of twenty clients sending 16 MiB each at once, most
saw no close code). Here the rest of the refused frame is read and thrown away as it arrives, then
frames are read on until the client answers the close, for ``CLOSE_TIMEOUT`` seconds at most.
Covered by tests/security (many clients at once, each far over the limit, on every variant).

And it keeps Gunicorn's ``--backlog`` (2048) on the listening socket. The worker hands the socket to
``loop.create_server`` without a backlog, and asyncio and uvloop both call ``listen()`` again with
their own default, 100: a worker busy for a moment with a burst of WebSocket handshakes then left
new connections unanswered, and Nginx gave them a 504 after its 2 s connect timeout (41 of 2,000
handshakes opened at 200 a second in the bench). Uvicorn's Gunicorn worker had the same bug and fixed
it by passing the backlog (encode/uvicorn#544). The other servers listen with 2048 (Daphne and
Hypercorn through deploy/bin/prefork.py, Uvicorn by its own default) or 1024 (Granian's default).
"""

import asyncio
import signal
import struct
from typing import Any

from gunicorn.asgi import websocket

CLOSE_TIMEOUT = 10.0  # seconds for a client to answer a 1009, as on Uvicorn and Daphne (test_close_waits.py)
MASKING_KEY_BYTES = 4


def announced_length(reads: list[bytes]) -> int:
    """A frame's payload length, from its header and extended length as read (RFC 6455 section 5.2)."""
    length = reads[0][1] & 0x7F
    if length == 126:
        return int(struct.unpack("!H", reads[1])[0])
    if length == 127:
        return int(struct.unpack("!Q", reads[1])[0])
    return length


class WebSocketProtocol(websocket.WebSocketProtocol):
    _frame_reads: list[bytes]
    _refused_bytes: int | None = None  # what is left of a frame refused with 1009

    async def _read_exact(self, n: int) -> bytes | None:
        data = await super()._read_exact(n)
        if data:
            self._frame_reads.append(data)
        return data

    async def _send_close(self, code: int, reason: str = "") -> None:
        if code == websocket.CLOSE_MESSAGE_TOO_BIG and not self._close_sent:
            self._refused_bytes = MASKING_KEY_BYTES + announced_length(self._frame_reads)
        await super()._send_close(code, reason)

    async def _read_frame(self) -> tuple[int, bytes] | None:
        self._frame_reads = []
        frame = await super()._read_frame()
        if frame is not None or self._refused_bytes is None:
            return frame
        refused, self._refused_bytes = self._refused_bytes, None
        try:
            return await asyncio.wait_for(self._after_refusal(refused), CLOSE_TIMEOUT)
        except TimeoutError:
            return None  # the worker closes the connection, as it did at once before

    async def _after_refusal(self, refused: int) -> tuple[int, bytes] | None:
        """The refused frame's rest dropped as it arrives (never buffered whole), then the next frame."""
        while refused:
            self._data_event.clear()  # before looking: data that arrives after sets it again
            if self._buffer:
                dropped = min(refused, len(self._buffer))
                del self._buffer[:dropped]
                refused -= dropped
                continue
            if self._eof:
                return None
            self._resume_reading()
            await self._data_event.wait()
        return await self._read_frame()


# The worker imports the class from its module each time a WebSocket opens (gunicorn.asgi.protocol).
websocket.WebSocketProtocol = WebSocketProtocol  # type: ignore[misc]


def keep_backlog(loop: Any, backlog: int) -> None:
    """Make ``loop.create_server`` listen with ``backlog`` unless it is given one."""
    create_server = loop.create_server

    def create_server_with_backlog(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("backlog", backlog)
        return create_server(*args, **kwargs)

    loop.create_server = create_server_with_backlog


def post_worker_init(worker: Any) -> None:
    loop = getattr(worker, "loop", None)  # only the ASGI worker runs an event loop
    if loop is None:
        return
    keep_backlog(loop, worker.cfg.backlog)  # the worker creates its servers after this hook
    from core.consumers import stop_connections  # the worker has loaded the app (and Django) by now

    def on_sigterm() -> None:
        closing = stop_connections()
        worker.log.info("SIGTERM: closing %d WebSocket(s) with 1012, then draining HTTP", closing)
        worker.handle_exit_signal()

    # Replaces the worker's own SIGTERM handler, which on_sigterm then calls.
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
