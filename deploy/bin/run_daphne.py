#!/usr/bin/env python3
"""Daphne's command line, with two corrections to how it closes WebSockets.

Daphne runs on Autobahn, whose application-facing ``sendClose`` only accepts close code 1000 or
3000-4999, and which by default answers an oversized message by dropping the TCP connection. RFC
6455 lets a server send 1008 (policy), 1009 (too big), 1011 and 1013 (try again later), and the
stack documents those codes for every server; so:

1. ``serverClose`` (the ASGI ``websocket.close`` message) sends the close frame directly, for any
   code the application chose;
2. the factory is set to ``failByDrop=False``, so a message over ``--websocket-max-message-size``
   gets a 1009 close frame instead of a reset connection.

Both are covered by tests/integration (close codes per server); run it with Daphne's usual
arguments: ``run_daphne.py --fd 3 config.asgi:application``.
"""

from typing import Any

from daphne import server, ws_protocol
from daphne.cli import CommandLineInterface


class WebSocketProtocol(ws_protocol.WebSocketProtocol):
    def serverClose(self, code: int | None = None) -> None:  # noqa: N802 - Daphne's name
        self.sendCloseFrame(code=1000 if code is None else int(code), isReply=False)


class WebSocketFactory(ws_protocol.WebSocketFactory):
    protocol = WebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:  # noqa: N802 - Autobahn's name
        super().setProtocolOptions(failByDrop=False, **options)


server.WebSocketFactory = WebSocketFactory  # the name daphne.server builds its factory from

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
