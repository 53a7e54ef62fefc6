#!/usr/bin/env python3
"""Hypercorn's command line, with a WebSocket message buffer that stops growing at its limit.

Hypercorn collects a message's data in a buffer and closes the connection with 1009 once the buffer
is over ``websocket_max_message_size``. It keeps writing the rest of the message into that buffer
all the same, as the client goes on sending it: a client announcing a 32 MiB frame costs the server
32 MiB and more, whatever the limit. Forty such clients at once took an app container from 115 MiB
to over 700 MiB, and one process was killed for memory with every socket it held.

The buffer here refuses what comes after the limit without storing it, so a message costs at most
the limit plus one read. The close frame (1009) goes out as before, at the first read over the
limit. Covered by tests/deploy/test_run_hypercorn.py (the buffer) and tests/security (many clients
at once, each sending a message far over the limit, on every variant). Run it with Hypercorn's usual
arguments: ``run_hypercorn.py --config hypercorn.toml config.asgi:application``.
"""

import sys

from hypercorn.__main__ import main
from hypercorn.protocol import ws_stream
from wsproto.events import Message


class BoundedWebsocketBuffer(ws_stream.WebsocketBuffer):
    def extend(self, event: Message) -> None:
        if self.length > self.max_length:  # refused already: the rest of the message is not kept
            raise ws_stream.FrameTooLargeError
        super().extend(event)


# WSStream looks the class up in its module each time it opens a WebSocket.
ws_stream.WebsocketBuffer = BoundedWebsocketBuffer  # type: ignore[misc]

if __name__ == "__main__":
    sys.exit(main())
