"""Gunicorn settings file of the gunicorn-asgi variant (``gunicorn -c``): WebSockets on SIGTERM.

On SIGTERM, Gunicorn's ASGI worker stops accepting and waits up to its graceful timeout for open
connections, WebSockets included, which do not end on their own; the arbiter kills the worker with
SIGKILL at that same deadline. Clients would see their sockets dropped without a close frame after
20 s, and their room memberships would stay in Redis. This hook makes the worker's SIGTERM do what
Uvicorn's does: every open WebSocket is closed at once with 1012 (service restart) and leaves its
room (``core.consumers.stop_connections``), then the worker drains HTTP requests as before.
"""

import signal
from typing import Any


def post_worker_init(worker: Any) -> None:
    loop = getattr(worker, "loop", None)  # only the ASGI worker runs an event loop
    if loop is None:
        return
    from core.consumers import stop_connections  # the worker has loaded the app (and Django) by now

    def on_sigterm() -> None:
        closing = stop_connections()
        worker.log.info("SIGTERM: closing %d WebSocket(s) with 1012, then draining HTTP", closing)
        worker.handle_exit_signal()

    # Replaces the worker's own SIGTERM handler, which on_sigterm then calls.
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
