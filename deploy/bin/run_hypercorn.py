#!/usr/bin/env python3
"""Hypercorn's command line, with corrections to its WebSockets and its idle connections.

1. A message buffer that stops growing at its limit. Hypercorn collects a message's data in a buffer
   and closes the connection with 1009 once the buffer is over ``websocket_max_message_size``. It
   keeps writing the rest of the message into that buffer all the same, as the client goes on
   sending it: a client announcing a 32 MiB frame costs the server 32 MiB and more, whatever the
   limit. Forty such clients at once took an app container from 115 MiB to over 700 MiB, and one
   process was killed for memory with every socket it held.

   The buffer here refuses what comes after the limit without storing it, so a message costs at
   most the limit plus one read. The close frame (1009) goes out as before, at the first read over
   the limit. Covered by tests/deploy/test_run_hypercorn.py (the buffer) and tests/security (many
   clients at once, each sending a message far over the limit, on every variant).

2. A connection let go as soon as its WebSocket is over. Each WebSocket has a task that pings the
   client every ``websocket_ping_interval`` seconds, and the connection ends only once every task of
   it has: when the client left without a close frame (a reset, or the end of its connection), the
   ping task slept out its interval first, and the connection's socket (for an ended connection,
   in CLOSE_WAIT) and tasks waited with it. In the soak, Hypercorn held about 200 sockets and 800
   tasks more than Uvicorn for the same clients, and let go of them up to 20 s late. The ping task
   here wakes when the stream closes. Covered by tests/deploy/test_run_hypercorn.py.

3. An idle keep-alive connection let go as soon as its client closes it. A connection waiting for its
   next request has a task that closes it after ``keep_alive_timeout``, and the connection ends only
   once that task has too: when the client (Nginx, which closes idle upstream connections after a
   second) ended the connection first, its socket sat in CLOSE_WAIT for the rest of
   ``KEEPALIVE_TIMEOUT`` (75 s). In the soak, each app container held about 60 such sockets under
   two HTTP users. That task ends here once the client has ended the connection. Covered by
   tests/deploy/test_run_hypercorn.py.

Run it with Hypercorn's usual arguments: ``run_hypercorn.py --config hypercorn.toml
config.asgi:application``.
"""

import asyncio
import contextlib
import sys

from hypercorn.__main__ import main
from hypercorn.asyncio import run, tcp_server
from hypercorn.protocol import h2, h11, ws_stream
from wsproto.events import Message, Ping


class BoundedWebsocketBuffer(ws_stream.WebsocketBuffer):
    def extend(self, event: Message) -> None:
        if self.length > self.max_length:  # refused already: the rest of the message is not kept
            raise ws_stream.FrameTooLargeError
        super().extend(event)


class PromptlyEndedWSStream(ws_stream.WSStream):
    """A WebSocket stream whose ping task ends as soon as the stream is closed.

    For Hypercorn's asyncio workers (the stack runs ``worker_class = "uvloop"``): the wait is an
    asyncio event where Hypercorn's own sleep goes through its worker context.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._ended = asyncio.Event()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def closed(self) -> bool:  # Hypercorn sets it wherever the stream ends; the ping task waits on it
        return self._ended.is_set()

    @closed.setter
    def closed(self, value: bool) -> None:
        if value:
            self._ended.set()
        else:
            self._ended.clear()

    async def _send_pings(self) -> None:
        while not self.closed:
            await self._send_wsproto_event(Ping())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), self.config.websocket_ping_interval)


class PromptlyClosedTCPServer(tcp_server.TCPServer):
    """A connection whose client has ended it waits for its streams only, not for its idle timeout."""

    async def _read_data(self) -> None:
        await super()._read_data()  # returns at the end of the client's data (or a read error)
        await self.idle_task.stop()


# WSStream looks the buffer class up in its module each time it opens a WebSocket; the HTTP/1.1 and
# HTTP/2 protocols look the stream class up in theirs.
ws_stream.WebsocketBuffer = BoundedWebsocketBuffer  # type: ignore[misc]
h11.WSStream = h2.WSStream = PromptlyEndedWSStream  # type: ignore[misc]
run.TCPServer = PromptlyClosedTCPServer  # type: ignore[misc]  # what the asyncio worker serves with

if __name__ == "__main__":
    sys.exit(main())
