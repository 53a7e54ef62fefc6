#!/usr/bin/env python3
"""Uvicorn's command line, with a message over ``--ws-max-size`` refused by a close handshake.

Uvicorn's wsproto protocol answers a message over the limit with a 1009 close frame and closes the
TCP connection in the same instant, while the client is still sending the rest of the message. A
socket closed with unread data in it sends a reset, and a reset makes the peer's kernel drop what
it has received and not yet read: the close frame with it. Of twenty clients sending 16 MiB each at
once, sixteen saw their connection end without any close code.

Here the refusal is the closing handshake every other close of Uvicorn's already is: the 1009 frame,
then the rest of the message read and thrown away (not parsed into a buffer) until the client
answers the close or Uvicorn's close timeout ends. The check comes before the buffer takes the data,
so a refused message costs no more than the limit. Covered by tests/deploy/test_run_uvicorn.py and
tests/security (many clients at once, each sending a message far over the limit, on every variant).
Run it with Uvicorn's usual arguments: ``run_uvicorn.py --ws wsproto config.asgi:application``.
"""

import sys

import wsproto
from uvicorn.main import main
from uvicorn.protocols.websockets import wsproto_impl
from wsproto import events


class WSProtocol(wsproto_impl.WSProtocol):
    def handle_message(self, event: events.TextMessage | events.BytesMessage) -> None:
        room = self.buffer.max_length - self.buffer.length
        size = len(event.data)
        # The limit counts UTF-8 bytes: at most 4 a character, so most text needs no encoding here.
        if isinstance(event, events.TextMessage) and 4 * size > room:
            size = len(event.data.encode())
        if size <= room:
            super().handle_message(event)
            return
        self.close_sent = True  # from here on only the client's close frame is read (handle_events)
        reason = f"Message exceeds the maximum size ({self.config.ws_max_size} bytes)"
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1009, "reason": reason})
        if self.transport.is_closing():
            return
        self.transport.write(self.conn.send(wsproto.events.CloseConnection(code=1009, reason=reason)))
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)


# Uvicorn imports its protocol class by name ("wsproto": wsproto_impl:WSProtocol) when it starts.
wsproto_impl.WSProtocol = WSProtocol  # type: ignore[misc]

if __name__ == "__main__":
    sys.exit(main())
