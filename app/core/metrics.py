"""The app's metrics: every definition in one place, and the small calls the app makes.

Each server process counts into files of ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode: one memory-mapped file per process and metric type), set by the start files
(deploy/servers/common.sh); one exporter per container (core/metrics_exporter.py) adds them up on
``METRICS_PORT``. Without that variable (``METRICS=0``, ``make dev``, the unit tests) the same calls
count in this process's memory and nothing serves them.

The hot path pays one counter increment and one histogram observation per HTTP request (about
4 µs together in multiprocess mode, timed alone: 2 % of a core serving 5000 requests a second), and
one counter increment per WebSocket frame (about 1 µs). Labelled children are looked up once per
label set (``_child``), not on every call. The bench is where the real overhead is measured.

Labels are bounded: route names (never paths), a fixed set of methods, status classes, error codes
and close codes; no room name, no client address.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

NAMESPACE = "realtime_django"

# Seconds; finer than the client's default buckets below 10 ms, where /api/ping answers.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- Definitions -----------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered by Django, by route name, method, status class and handler "
    "(fast: core/fastpath, django: Django's own ASGIHandler or WSGIHandler)",
    ["route", "method", "status", "handler"],
    namespace=NAMESPACE,
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the first middleware to the response, by route name",
    ["route"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)

WS_CONNECTIONS = Gauge(
    "websocket_connections",
    "WebSocket connections open now, by route",
    ["route"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
WS_ACCEPTED = Counter(
    "websocket_handshakes_accepted_total",
    "WebSocket handshakes accepted, by route",
    ["route"],
    namespace=NAMESPACE,
)
WS_REFUSED = Counter(
    "websocket_handshakes_refused_total",
    "WebSocket handshakes refused by the app (HTTP 403), by reason: host, origin, route (no such path), "
    "room_name. Handshakes over Nginx's rate limit are refused by Nginx (429) and never reach the app",
    ["reason"],
    namespace=NAMESPACE,
)
WS_FRAMES_RECEIVED = Counter(
    "websocket_frames_received_total",
    "WebSocket data frames received, by route",
    ["route"],
    namespace=NAMESPACE,
)
WS_FRAMES_SENT = Counter(
    "websocket_frames_sent_total",
    "WebSocket data frames sent (replies, errors, history, broadcasts, heartbeats), by route",
    ["route"],
    namespace=NAMESPACE,
)
WS_ERROR_FRAMES = Counter(
    "websocket_error_frames_total", 'Frames {"type": "error"} sent, by code', ["code"], namespace=NAMESPACE
)
WS_CLOSES = Counter(
    "websocket_closes_total",
    "WebSocket connections closed after their handshake, by route, close code and side "
    "(app: the app closed with that code; peer: the client, or the server on its behalf, closed first)",
    ["route", "code", "side"],
    namespace=NAMESPACE,
)
WS_TOO_SLOW = Counter(
    "websocket_too_slow_total",
    "Chat sockets closed because they fell more than CHANNEL_LAYER_CAPACITY broadcasts behind their room",
    namespace=NAMESPACE,
)
CHAT_STORED = Counter(
    "chat_messages_stored_total", "Chat messages stored in the database", namespace=NAMESPACE
)
CHAT_BROADCASTS = Counter(
    "chat_broadcasts_total",
    "Chat messages broadcast to their room through the channel layer",
    namespace=NAMESPACE,
)
CHAT_FANOUT = Histogram(
    "chat_fanout_delivery_seconds",
    "Time from a room broadcast (group_send) to its send on each socket of the room",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)

LAYER_FAILURES = Counter(
    "channel_layer_failures_total",
    "Channel-layer calls that failed or timed out, by operation (join, renew, receive, leave, group_send)",
    ["operation"],
    namespace=NAMESPACE,
)
READINESS_CHECKS = Counter(
    "readiness_checks_total",
    "Dependency checks of /readyz, by dependency and result (ok, error, timeout)",
    ["dependency", "result"],
    namespace=NAMESPACE,
)
DB_POOL_SIZE = Gauge(
    "db_pool_connections",
    "Connections held by the database pools (open or being opened)",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
DB_POOL_AVAILABLE = Gauge(
    "db_pool_available_connections",
    "Idle connections ready in the database pools",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "db_pool_waiting_requests",
    "Requests waiting for a connection from the database pools",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
ASYNCIO_TASKS = Gauge(
    "asyncio_tasks",
    "asyncio tasks not yet done on the event loops the app runs on, sampled every few seconds in each "
    "server process (a count that only grows under steady load is a leak)",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
DB_POOL_ERRORS = Counter(
    "db_pool_errors_total",
    "Database pool errors, by kind (request: no connection within DATABASE_POOL_TIMEOUT; "
    "connection: a connection attempt failed)",
    ["kind"],
    namespace=NAMESPACE,
)


@functools.cache
def _child(metric: Any, *labels: str) -> Any:
    """The metric's child for these label values, made once (labels() validates on every call)."""
    return metric.labels(*labels)


# --- HTTP ------------------------------------------------------------------------------------------

# Any other method (a client may send any token) is counted as "other": the label stays bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = ("", "1xx", "2xx", "3xx", "4xx", "5xx")  # by status // 100


def status_class(status: int) -> str:
    return STATUS_CLASSES[status // 100] if 100 <= status < 600 else "other"


def http_request(route: str, method: str, status: int, handler: str, seconds: float) -> None:
    """One answered request. ``route`` is the URL pattern's name, ``none`` when nothing matched."""
    _child(
        HTTP_REQUESTS, route, method if method in KNOWN_METHODS else "other", status_class(status), handler
    ).inc()
    _child(HTTP_DURATION, route).observe(seconds)


# --- WebSockets ------------------------------------------------------------------------------------

# Close codes counted by their number; any other (a client may close with 3000-4999) is "other".
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013})


def close_code_label(code: int | None) -> str:
    return str(code) if code in KNOWN_CLOSE_CODES else "other"


def ws_accepted(route: str) -> None:
    _child(WS_ACCEPTED, route).inc()
    _child(WS_CONNECTIONS, route).inc()


def ws_ended(route: str) -> None:
    """An accepted connection is over (whoever ended it): it is no longer open."""
    _child(WS_CONNECTIONS, route).dec()


def ws_refused(reason: str) -> None:
    _child(WS_REFUSED, reason).inc()


def ws_frame_received(route: str) -> None:
    _child(WS_FRAMES_RECEIVED, route).inc()


def ws_frame_sent(route: str) -> None:
    _child(WS_FRAMES_SENT, route).inc()


def ws_error_frame(code: str) -> None:
    _child(WS_ERROR_FRAMES, code).inc()


def ws_closed(route: str, code: int | None, side: str) -> None:
    _child(WS_CLOSES, route, close_code_label(code), side).inc()


def ws_too_slow() -> None:
    WS_TOO_SLOW.inc()


# --- Chat ------------------------------------------------------------------------------------------

# The key of a broadcast event that carries its send time (time.time(), comparable across the
# processes and replicas of one host, and across hosts whose clocks are synchronised). It is
# dropped from the frame the clients get (chat/rooms.py, wire_text).
BROADCAST_TIME_KEY = "broadcast_at"


def chat_stored() -> None:
    CHAT_STORED.inc()


def stamped_broadcast(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` as it is sent to the room: with its send time, for the fan-out delivery time."""
    CHAT_BROADCASTS.inc()
    return {**event, BROADCAST_TIME_KEY: time.time()}


def fanout_delivered(event: Mapping[str, Any]) -> None:
    """A broadcast has been sent on one socket: observe how long after its send to the room."""
    sent = event.get(BROADCAST_TIME_KEY)
    if isinstance(sent, int | float):
        CHAT_FANOUT.observe(max(0.0, time.time() - sent))


# --- Dependencies ----------------------------------------------------------------------------------


def layer_failure(operation: str) -> None:
    _child(LAYER_FAILURES, operation).inc()


def readiness_check(dependency: str, result: str) -> None:
    _child(READINESS_CHECKS, dependency, result).inc()


# Seconds between two readings of the database pools' statistics (a thread per process).
POOL_SAMPLE_INTERVAL = 5.0


class PoolSampler:
    """Copies psycopg_pool's statistics of Django's pools into the gauges above, every few seconds.

    The pool keeps its figures in the process that owns it, and the exporter reads only the
    multiprocess files, so each process writes its own. Errors are cumulative in the pool: the
    counter is advanced by the difference since the last reading.
    """

    def __init__(self) -> None:
        self._errors = {"request": 0, "connection": 0}

    def sample(self) -> None:
        size = available = waiting = 0
        errors = {"request": 0, "connection": 0}
        for pool in _django_pools():
            stats = pool.get_stats()
            size += stats.get("pool_size", 0)
            available += stats.get("pool_available", 0)
            waiting += stats.get("requests_waiting", 0)
            errors["request"] += stats.get("requests_errors", 0)
            errors["connection"] += stats.get("connections_errors", 0)
        DB_POOL_SIZE.set(size)
        DB_POOL_AVAILABLE.set(available)
        DB_POOL_WAITING.set(waiting)
        for kind, total in errors.items():
            if total > self._errors[kind]:
                _child(DB_POOL_ERRORS, kind).inc(total - self._errors[kind])
            self._errors[kind] = total

    def run(self, interval: float = POOL_SAMPLE_INTERVAL) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a reading that fails must not end the sampling
                logger.exception("database pool statistics could not be read")
            try:
                ASYNCIO_TASKS.set(EVENT_LOOPS.pending_tasks())
            except Exception:
                logger.exception("asyncio tasks could not be counted")
            time.sleep(interval)


def _django_pools() -> list[Any]:
    """The psycopg pools Django has opened in this process (none before the first query).

    Django keeps them per alias on its PostgreSQL backend class (``_connection_pools``); reading
    ``connection.pool`` instead would open a pool that nothing asked for yet.
    """
    from django.db import connections

    pools = []
    for alias in connections:
        opened = getattr(type(connections[alias]), "_connection_pools", None) or {}
        if alias in opened:
            pools.append(opened[alias])
    return pools


# --- Event loops ----------------------------------------------------------------------------------

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class EventLoops:
    """The event loops the app has been called on in this process, and their unfinished tasks.

    No server offers a hook that names its loop, so the app notes the loop each call runs on
    (``watch_event_loop``); the sampler thread counts their tasks from outside. ``asyncio.all_tasks``
    copies the task set before reading it, which makes it safe to call from another thread.
    """

    def __init__(self) -> None:
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._last: asyncio.AbstractEventLoop | None = None

    def seen(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._last:  # one identity check per call; the set is touched once per loop
            self._last = loop
            self._loops.add(loop)

    def pending_tasks(self) -> int:
        return sum(len(asyncio.all_tasks(loop)) for loop in list(self._loops) if not loop.is_closed())


EVENT_LOOPS = EventLoops()


def watch_event_loop(app: ASGIApp) -> ASGIApp:
    """``app``, noting the loop of each call for the ``asyncio_tasks`` gauge."""
    seen = EVENT_LOOPS.seen

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen(asyncio.get_running_loop())
        await app(scope, receive, send)

    return application


_sampler_started = threading.Lock()
_sampler: threading.Thread | None = None


def start_pool_sampler() -> None:
    """Start this process's sampler of the pools and the event loops' tasks once (from the ASGI and
    WSGI entry points, in each worker)."""
    global _sampler
    with _sampler_started:
        if _sampler is None or not _sampler.is_alive():
            _sampler = threading.Thread(target=PoolSampler().run, name="db-pool-metrics", daemon=True)
            _sampler.start()
