#!/usr/bin/env python3
"""Daphne's command line, with corrections to how it closes WebSockets.

Daphne runs on Autobahn, whose application-facing ``sendClose`` only accepts close code 1000 or
3000-4999, and which by default answers an oversized message by dropping the TCP connection. RFC
6455 lets a server send 1008 (policy), 1009 (too big), 1011, 1012 (restart) and 1013 (try again
later), and the stack documents those codes for every server; so:

1. ``serverClose`` (the ASGI ``websocket.close`` message) sends the close frame directly, for any
   code the application chose;
2. the factory is set to ``failByDrop=False``, so a message over ``--websocket-max-message-size``
   gets a 1009 close frame instead of a reset connection, and waits ``CLOSE_HANDSHAKE_TIMEOUT``
   seconds (Autobahn's default: 1) for the client's answer to a close before it resets the
   connection: a reset destroys what the client has not read yet, so a client whose loop is busy
   for a second lost the error frame and the close code that came before it (1006 instead);
3. on SIGTERM, Daphne cancels every application instance before it closes the connections (each
   chat connection then closes with 1012 and leaves its room). Its own ``kill_all_applications``
   raises KeyError on an idle HTTP keep-alive connection (whose last instance it already reaped),
   and the shutdown then drops every WebSocket without cancelling anything: this one skips them.

4. the application's ``websocket.send`` waits while the connection's write buffer is over Twisted's
   ``bufferSize`` (64 KiB), as Uvicorn's does (Daphne returns at once and buffers every frame): a
   client that stops reading then holds back its chat member, whose room closes it with
   ``too_slow`` once CHANNEL_LAYER_CAPACITY broadcasts are queued, instead of growing Daphne's
   memory by every broadcast for as long as the socket lives.

5. a send on a connection that Autobahn has closed and Daphne has not yet seen go raises an OSError,
   as the ASGI spec asks of a send on a closed connection (and as the other servers do), not
   Autobahn's ``Disconnected``: the app then knows the client is gone (a race of every busy room
   with clients leaving; in the soak, a few a half hour, each logged as an error of the app).

The first two are covered by tests/integration (close codes per server), the third by
tests/deploy/test_run_daphne.py and tests/faults, the fourth by tests/deploy/test_run_daphne.py and
tests/security (sockets that never read, under broadcast), the fifth by
tests/deploy/test_run_daphne.py; run it with Daphne's usual arguments:
``run_daphne.py --fd 3 config.asgi:application``.

Daphne's Twisted reactor runs on asyncio's own loop, Daphne's and Twisted's choice.
``DAPHNE_LOOP=uvloop`` runs it on uvloop instead, faster in the bench but not safe: when a socket
is readable and in error at once (the peer's last bytes and its reset arrive together, as when Nginx
closes an upstream connection Daphne then writes to), uvloop runs Twisted's reader once and closes
its poll for good. Twisted reads the bytes, not the error, and never hears from the socket again: the
connection is never lost, its application never gets ``websocket.disconnect``, and its next write
raises "the handler is closed" (MagicStack/uvloop#552, twisted/twisted#11904). The soak showed it
under churn; tests/deploy/test_run_daphne.py shows it directly. ``daphne.server`` creates its loop
when it is imported, from the policy set here first.
"""

import asyncio
import logging
import os
from typing import Any

if (LOOP := os.environ.get("DAPHNE_LOOP") or "asyncio") == "uvloop":
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # before daphne.server makes its loop

from autobahn.exception import Disconnected
from daphne import server, ws_protocol
from daphne.cli import CommandLineInterface
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

logger = logging.getLogger("daphne.server")

# Seconds a close frame waits for the client's answer: the websockets library's default close_timeout.
# (A connection closed because the server stops waits less, within the stop grace period:
# core.consumers.CLOSE_HANDSHAKE_TIMEOUT.)
CLOSE_HANDSHAKE_TIMEOUT = 10  # as Uvicorn and gunicorn_asgi_conf.py wait (tests/deploy/test_close_waits.py)


@implementer(IPushProducer)
class SendFlow:
    """The connection's producer once it is a WebSocket: Twisted pauses it when the write buffer
    passes the transport's ``bufferSize`` and resumes it once the buffer is written out."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.writable.clear()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.writable.set()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name: the connection is gone, nothing waits
        self.writable.set()


class WebSocketProtocol(ws_protocol.WebSocketProtocol):
    send_flow: SendFlow

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        # The HTTP channel that read the upgrade request registered itself as the transport's
        # producer; after the upgrade, the sends of the application are what the buffer holds back.
        self.send_flow = SendFlow()
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self.transport.registerProducer(self.send_flow, True)
        super().connectionMade()

    def serverClose(self, code: int | None = None) -> None:  # noqa: N802 - Daphne's name
        self.sendCloseFrame(code=1000 if code is None else int(code), isReply=False)


class WebSocketFactory(ws_protocol.WebSocketFactory):
    protocol = WebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:  # noqa: N802 - Autobahn's name
        super().setProtocolOptions(failByDrop=False, closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT, **options)


class ClosedConnectionError(ConnectionError):
    """A send on a connection that is closed (an OSError, as the ASGI spec asks)."""


class Server(server.Server):
    async def handle_reply(self, protocol: Any, message: dict[str, Any]) -> None:
        """The application's ``send``: a WebSocket frame waits until the client has read enough."""
        flow = getattr(protocol, "send_flow", None)
        if flow is not None and message.get("type") == "websocket.send":
            await flow.writable.wait()
        try:
            await super().handle_reply(protocol, message)
        except Disconnected as exc:
            raise ClosedConnectionError(str(exc)) from exc

    def kill_all_applications(self) -> defer.Deferred[Any]:
        """Cancel every pending application instance and wait until all of them have ended."""
        pending = []
        for details in self.connections.values():
            instance = details.get("application_instance")  # None: an idle keep-alive connection
            if instance is not None and not instance.done():
                instance.cancel()
                pending.append(instance)
        logger.info("Killed %i pending application instances", len(pending))
        # return_exceptions: one instance that raises does not end the wait for the others.
        waiting = defer.Deferred.fromFuture(asyncio.gather(*pending, return_exceptions=True))
        waiting.addErrback(lambda _: None)
        return waiting


server.WebSocketFactory = WebSocketFactory  # the name daphne.server builds its factory from
CommandLineInterface.server_class = Server

if __name__ == "__main__":
    if LOOP not in ("asyncio", "uvloop"):
        raise SystemExit(f"DAPHNE_LOOP={LOOP!r}: asyncio or uvloop")
    if LOOP == "uvloop":
        logger.warning("DAPHNE_LOOP=uvloop: a connection reset right after its last bytes is never ended")
    CommandLineInterface.entrypoint()
