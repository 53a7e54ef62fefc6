"""Clients of the stack under test: a bounded HTTP load, and chat WebSockets that keep a record.

Every load here is bounded in time and in count and stops by itself; the only target is the
stack's published port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import httpx
import websockets
from chat.consumers import room_group
from websockets.exceptions import ConnectionClosed, WebSocketException

OPEN_TIMEOUT = 10.0  # seconds for a handshake (shared CPUs, replicas restarting)
FRAME_TIMEOUT = 15.0  # seconds for an expected frame


def unique_room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def group_key(room: str) -> str:
    """The Redis key of a room's member set: channels-redis' default prefix, then the app's group."""
    return f"asgi:group:{room_group(room)}"


def close_code(exc: ConnectionClosed) -> int | None:
    """The close code the server sent; None when the connection ended without a close frame."""
    return exc.rcvd.code if exc.rcvd is not None else None


# --- HTTP load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no HTTP answer (connection error, timeout)
    error: str = ""
    served_by: str = ""  # the replica's hostname (/api/whoami)
    retried: bool = False  # sent again after its keep-alive connection closed before any answer

    @property
    def ok(self) -> bool:
        return self.status == 200


class RequestTrace:
    """httpcore's trace of one request: the events it went through, by name."""

    def __init__(self) -> None:
        self.events: set[str] = set()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self.events.add(event)

    @property
    def crossed_keepalive_close(self) -> bool:
        """The request went out on a reused connection (none was opened for it) and no answer
        header came back: the one case a client may send it again unasked."""
        opened = "connection.connect_tcp.started" in self.events
        answered = "http11.receive_response_headers.complete" in self.events
        return not opened and not answered


def closed_or_reset(exc: httpx.HTTPError) -> bool:
    """The connection closed (a protocol error about an answer that never came) or was reset;
    not an answer the client could not parse."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return "without sending a response" in str(exc)
    return isinstance(exc, httpx.ReadError | httpx.WriteError)


class HttpLoad:
    """GET ``path`` from ``workers`` threads until stopped, at most ``duration`` seconds and
    ``max_requests`` requests in all. Each worker keeps one keep-alive connection to Nginx.

    Like a browser (and RFC 9112, 9.3.1), a worker sends a GET once more on a new connection when
    a *reused* keep-alive connection closed or was reset before the answer's headers: Nginx closes
    idle keep-alive connections when it reloads, and a request can cross that close on the wire
    (the peer's kernel answers a request that arrives after the close with a reset). The request
    was never processed; it counts as retried, not failed. The same error on a connection opened
    for the request, or after the answer began, is a failure. ``keepalive=False`` opens a
    connection per request instead, where the race cannot happen.
    """

    def __init__(
        self,
        base_url: str,
        path: str = "/api/whoami",
        workers: int = 4,
        pause: float = 0.02,
        duration: float = 300.0,
        max_requests: int = 60_000,
        keepalive: bool = True,
    ) -> None:
        self.base_url = base_url
        self.keepalive = keepalive
        self.path = path
        self.workers = workers
        self.pause = pause
        self.duration = duration
        self.max_requests = max_requests
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> HttpLoad:
        self._deadline = time.monotonic() + self.duration
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.outcomes

    def _work(self) -> None:
        limits = httpx.Limits() if self.keepalive else httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.base_url, timeout=30, limits=limits) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                self._record(self._one(client))
                time.sleep(self.pause)

    def _one(self, client: httpx.Client) -> Outcome:
        started = time.monotonic()
        retried = False
        try:
            trace = RequestTrace()
            try:
                response = client.get(self.path, extensions={"trace": trace})
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if not (trace.crossed_keepalive_close and closed_or_reset(exc)):
                    raise
                retried = True
                response = client.get(self.path)  # the pool opens a new connection
        except httpx.HTTPError as exc:
            return Outcome(started, time.monotonic(), None, f"{type(exc).__name__}: {exc}", retried=retried)
        served_by = ""
        if response.status_code == 200 and self.path == "/api/whoami":
            served_by = response.json().get("hostname", "")
        error = "" if response.status_code == 200 else response.text[:200]
        return Outcome(started, time.monotonic(), response.status_code, error, served_by, retried)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if not outcome.ok]


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    statuses = Counter(str(outcome.status) if outcome.status else outcome.error[:60] for outcome in outcomes)
    return {
        "requests": len(outcomes),
        "failed": len(failures(outcomes)),
        "retried": sum(outcome.retried for outcome in outcomes),
        "answers": dict(statuses),
    }


# --- WebSockets -------------------------------------------------------------------------------------


async def connect(ws_url: str, path: str, origin: str) -> Any:
    return await websockets.connect(ws_url + path, origin=origin, open_timeout=OPEN_TIMEOUT)


async def next_frame(ws: Any, within: float = FRAME_TIMEOUT) -> dict[str, Any]:
    """The next data frame as JSON, heartbeat frames skipped."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), within))
        if frame.get("type") != "heartbeat":
            return frame


async def join(ws_url: str, origin: str, room: str, name: str = "probe") -> tuple[Any, list[dict[str, Any]]]:
    """A chat socket in ``room`` and the history it was greeted with."""
    ws = await connect(ws_url, f"/ws/chat/{room}/?name={name}", origin)
    first = await next_frame(ws)
    if first.get("type") != "chat.history":
        await ws.close()
        raise AssertionError(f"expected the history first, got {first}")
    return ws, first["messages"]


async def frames_until_closed(ws: Any, within: float) -> tuple[list[dict[str, Any]], int | None]:
    """Every data frame until the server closes the socket, and its close code (None: no frame)."""
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(within):
            while True:
                frames.append(json.loads(await ws.recv()))
    except ConnectionClosed as exc:
        return frames, close_code(exc)


@dataclass
class Session:
    """One connection of a reconnecting client."""

    request_id: str  # Nginx's X-Request-ID for the handshake: its access log names the upstream
    opened: float  # time.monotonic(), once greeted with the history
    closed: float | None = None  # time.monotonic(); None while open


@dataclass
class ReconnectRecord:
    """What one reconnecting chat client went through."""

    connects: int = 0  # each one greeted with the room's history
    closes: list[int | None] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # the text of every chat.message received
    refused: list[str] = field(default_factory=list)  # handshakes that failed, and why
    connected: bool = False
    sessions: list[Session] = field(default_factory=list)


class ReconnectingClient:
    """A chat member that reconnects like the page does (backoff 0.25-0.5 s, doubling to 5 s), and
    records every close code and history. Runs until ``stop`` is set or ``lifetime`` ends."""

    def __init__(self, ws_url: str, origin: str, room: str, lifetime: float = 600.0) -> None:
        self.ws_url, self.origin, self.room, self.lifetime = ws_url, origin, room, lifetime
        self.record = ReconnectRecord()

    async def run(self, stop: asyncio.Event) -> ReconnectRecord:
        deadline = asyncio.get_running_loop().time() + self.lifetime
        attempt = 0
        while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
            try:
                ws, _ = await join(self.ws_url, self.origin, self.room)
            except (OSError, WebSocketException, TimeoutError, AssertionError) as exc:
                self.record.refused.append(type(exc).__name__)
                attempt += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
                continue
            attempt = 0
            self.record.connects += 1
            self.record.connected = True
            session = Session(ws.response.headers.get("X-Request-ID", ""), time.monotonic())
            self.record.sessions.append(session)
            code = await self._hold(ws, stop)
            session.closed = time.monotonic()
            if code == "stopped":  # still connected when the test ended
                break
            self.record.connected = False
            self.record.closes.append(code)
            await asyncio.sleep(0.25)
        return self.record

    async def _hold(self, ws: Any, stop: asyncio.Event) -> int | str | None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    receiving.cancel()
                    await ws.close()
                    return "stopped"
                try:
                    frame = json.loads(receiving.result())
                except ConnectionClosed as exc:
                    return close_code(exc)
                if frame.get("type") == "chat.message":
                    self.record.messages.append(frame["message"])
        finally:
            stopping.cancel()


def close_counts(records: list[ReconnectRecord]) -> dict[str, int]:
    return dict(Counter(str(code) for record in records for code in record.closes))


class Runner(Protocol):
    async def run(self, stop: asyncio.Event) -> object: ...


class InBackground:
    """Coroutines ``run(stop)`` on an event loop of their own (a thread), so that the test can run
    blocking docker commands meanwhile. ``with`` starts them; leaving the block sets ``stop`` and
    waits up to ``join_timeout`` seconds for them to end."""

    def __init__(self, runners: Sequence[Runner], join_timeout: float = 60) -> None:
        self._runners = runners
        self._join_timeout = join_timeout
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._started.wait(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self._join_timeout)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            self._started.set()
            await asyncio.gather(*(runner.run(self._stop) for runner in self._runners))

        self._loop.run_until_complete(main())
        self._loop.close()


class ClientsInBackground(InBackground):
    """Reconnecting chat clients in the background."""

    def __init__(self, ws_url: str, origin: str, room: str, count: int, lifetime: float = 600.0) -> None:
        self.clients = [ReconnectingClient(ws_url, origin, room, lifetime) for _ in range(count)]
        super().__init__(self.clients)

    @property
    def records(self) -> list[ReconnectRecord]:
        return [client.record for client in self.clients]

    def all_connected(self) -> bool:
        return all(record.connected for record in self.records)
