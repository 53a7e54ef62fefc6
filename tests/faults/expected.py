"""What each variant does with open WebSockets when its process is told to stop (SIGTERM).

One line per variant: the README's "Guarantees under faults" table says the same. A server that
does not run ``disconnect()`` leaves room memberships behind; they age out on their own (live
members renew theirs, CHANNEL_LAYER_GROUP_EXPIRY), which the tests check too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnSigterm:
    close_codes: frozenset[int | None]  # what clients receive (None: dropped without a close frame)
    # Memberships in Redis right after the stop (one per process and room): "none" (disconnect()
    # ran), "some", "all".
    members_left: str


ON_SIGTERM = {
    # Uvicorn closes every WebSocket with 1012 and sends websocket.disconnect at once.
    "uvicorn": OnSigterm(frozenset({1012}), "none"),
    "gunicorn": OnSigterm(frozenset({1012}), "none"),  # its WebSockets are the Uvicorn sidecar's
    # Daphne cancels every connection at once; the consumer closes with 1012 and leaves its room.
    "daphne": OnSigterm(frozenset({1012}), "none"),
    # deploy/bin/gunicorn_asgi_conf.py does on SIGTERM what Daphne does.
    "gunicorn-asgi": OnSigterm(frozenset({1012}), "none"),
    # Hypercorn keeps WebSockets open and serving for GRACEFUL_TIMEOUT, then cancels them (1012 and
    # disconnect() from the consumer). Its processes run under deploy/bin/prefork.py, which waits
    # past that timeout for every one of them.
    "hypercorn": OnSigterm(frozenset({1012}), "none"),
    # Granian drops every WebSocket at once, with no close frame; disconnect() runs only for the few
    # connections whose websocket.disconnect reaches the app before the worker exits, so a process
    # keeps its membership of the room unless every one of its sockets there left.
    "granian": OnSigterm(frozenset({None}), "some"),
}
