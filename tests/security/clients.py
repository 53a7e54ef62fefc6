"""Clients that talk to the stack the way a hostile one would, and report what they got back.

Requests that a library would tidy up (raw spaces, non-ASCII bytes, a forged Host, a header that is too
long, a trickle) are written byte by byte on a plain socket. Each probe returns a short answer string,
the same words the case table expects, so a failure shows the answer the stack really gave. Every wait
is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from loadtests.lib.memory import pid_memory, process_tree
from tests.nginx import access_log
from tests.security.stack import HOST, Limits, Stack

RECV_TIMEOUT = 10.0  # seconds for an answer that nothing should delay
LOG_TIMEOUT = 20.0  # seconds for a line to show up in a container's log
ECHO = "/ws/echo/"


def chat_room() -> str:
    return f"/ws/chat/sec-{uuid.uuid4().hex[:12]}/"


class HandshakePacer:
    """Keeps WebSocket handshakes below Nginx's per-address rate (limit_req on /ws/).

    Every client of these tests reaches Nginx from one address, so without pacing a refusal could be
    the rate limit's instead of the case's own answer.
    """

    def __init__(self) -> None:
        self.last = 0.0
        self.lock = threading.Lock()

    def wait(self, limits: Limits) -> None:
        with self.lock:
            interval = 1.25 / limits.ws_handshakes_per_second
            delay = self.last + interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.last = time.monotonic()


PACER = HandshakePacer()


# --- Plain sockets ---------------------------------------------------------------------------------


def open_socket(
    stack: Stack, timeout: float = RECV_TIMEOUT, receive_buffer: int | None = None
) -> socket.socket:
    """A connection to the stack's published port; ``receive_buffer`` bytes of kernel buffer if given
    (set before connecting, so that the window the client announces is that small from the start)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    try:
        sock.connect((HOST, stack.port))
    except BaseException:
        sock.close()
        raise
    context = stack.ssl_context()
    return context.wrap_socket(sock, server_hostname=HOST) if context else sock


def request_bytes(
    stack: Stack,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    host: str | None = None,
    close: bool = True,
) -> bytes:
    """The request head exactly as given: the target is sent as UTF-8, unencoded and unnormalised."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'{HOST}:{stack.port}'}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket, within: float = RECV_TIMEOUT) -> tuple[int, bytes]:
    """The status and the bytes read so far, once the response head is complete (or the peer closed)."""
    data = b""
    deadline = time.monotonic() + within
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data.startswith(b"HTTP/"):
        raise AssertionError(f"no HTTP response: {data[:200]!r}")
    return int(data.split(b" ", 2)[1]), data


def exchange(stack: Stack, head: bytes, body: bytes = b"", within: float = RECV_TIMEOUT) -> tuple[int, bytes]:
    """Sends one request and reads the whole response (the request asked for Connection: close)."""
    with open_socket(stack) as sock:
        # Nginx may answer (413) before the body is sent; the answer is what counts.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + body)
        status, data = read_head(sock, within)
        deadline = time.monotonic() + within
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    return status, data


def http_answer(
    stack: Stack,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    host: str | None = None,
) -> str:
    status, _ = exchange(stack, request_bytes(stack, method, target, headers, host=host), body)
    return f"HTTP {status}"


def handshake(
    stack: Stack,
    target: str,
    *,
    origin: str | None = "site",
    host: str | None = None,
    receive_buffer: int | None = None,
) -> tuple[int, socket.socket]:
    """A WebSocket handshake; the status, and the socket (open after a 101: the caller closes it)."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Version", "13"),
    ]
    if origin is not None:
        headers.append(("Origin", stack.origin if origin == "site" else origin))
    PACER.wait(stack.limits)
    sock = open_socket(stack, receive_buffer=receive_buffer)
    try:
        sock.sendall(request_bytes(stack, "GET", target, headers, host=host, close=False))
        status, _ = read_head(sock)
    except BaseException:
        sock.close()
        raise
    return status, sock


def handshake_answer(stack: Stack, target: str, **options: Any) -> str:
    status, sock = handshake(stack, target, **options)
    sock.close()
    return f"HTTP {status}"


# --- WebSocket conversations ------------------------------------------------------------------------


@contextlib.contextmanager
def ws_open(stack: Stack, path: str) -> Iterator[ClientConnection]:
    """A WebSocket as the site's page opens it. No compression, so a frame's size is the message's."""
    PACER.wait(stack.limits)
    with connect(
        stack.ws_url + path,
        origin=stack.origin,  # type: ignore[arg-type]
        ssl=stack.ssl_context(),
        compression=None,
        proxy=None,
        open_timeout=RECV_TIMEOUT,
        close_timeout=5,
        max_size=None,
        max_queue=None,
    ) as ws:
        yield ws


def recv_json(ws: ClientConnection, within: float = RECV_TIMEOUT) -> dict[str, Any]:
    """The next data frame as JSON, heartbeat frames skipped; TimeoutError when none comes in time."""
    deadline = time.monotonic() + within
    while True:
        frame = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if frame.get("type") != "heartbeat":
            return frame


def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], within: float = RECV_TIMEOUT
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        frame = recv_json(ws, max(deadline - time.monotonic(), 0.01))
        if predicate(frame):
            return frame


def close_code(closed: ConnectionClosed) -> int | None:
    return closed.rcvd.code if closed.rcvd else None


def next_frame(ws: ClientConnection, within: float = RECV_TIMEOUT) -> dict[str, Any] | str:
    """The next data frame, or how the socket ended: "closed <code>" once the server's close frame is in.

    A server may keep the TCP connection open for a while after its close frame (Uvicorn's websockets
    protocol waits up to its close timeout while the client's earlier frames are still queued); the
    close frame is the answer, so it counts as soon as it has arrived.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            return recv_json(ws, min(1.0, max(deadline - time.monotonic(), 0.01)))
        except ConnectionClosed as closed:
            return f"closed {close_code(closed)}"
        except TimeoutError:
            received = ws.protocol.close_rcvd
            if received is not None:
                return f"closed {received.code}"
            if time.monotonic() >= deadline:
                raise


def still_open(ws: ClientConnection) -> str:
    """'socket open' when a valid message still gets its echo (or chat acknowledgement)."""
    marker = f"still open {uuid.uuid4().hex}"
    try:
        ws.send(json.dumps({"message": marker}))
    except ConnectionClosed as closed:
        return f"then closed {close_code(closed)}"
    deadline = time.monotonic() + RECV_TIMEOUT
    try:
        while isinstance(frame := next_frame(ws, max(deadline - time.monotonic(), 0.01)), dict):
            if frame.get("message") == marker:
                return "socket open"
    except TimeoutError:
        return "then silence"
    return f"then {frame}"


@contextlib.contextmanager
def join(stack: Stack, path: str) -> Iterator[ClientConnection]:
    """Opens a socket; on a chat room, reads the history frame that comes first."""
    with ws_open(stack, path) as ws:
        if path.startswith("/ws/chat/"):
            history = recv_json(ws)
            assert history["type"] == "chat.history", history
        yield ws


def chat_is_stored_and_broadcast(stack: Stack, text: str) -> None:
    """Two members of a new room: the sender's acknowledgement carries the database id, and the
    other member gets the same message."""
    room = chat_room()
    with join(stack, room) as alice, join(stack, room) as bob:
        alice.send(json.dumps({"message": text}))
        ack = recv_until(alice, lambda frame: frame.get("message") == text)
        assert isinstance(ack["id"], int)
        assert recv_until(bob, lambda frame: frame.get("message") == text) == ack


Payload = str | bytes | Callable[[Limits], str | bytes]


def frame_answer(stack: Stack, path: str | Callable[[], str], payload: Payload) -> str:
    """Sends one frame on a fresh socket: the error frame it gets and whether the socket stays open,
    or the code it is closed with."""
    data = payload(stack.limits) if callable(payload) else payload
    with join(stack, path() if callable(path) else path) as ws:
        with contextlib.suppress(ConnectionClosed):  # closed while sending: the close code tells
            ws.send(data)
        try:
            frame = next_frame(ws)
        except TimeoutError:
            return "no answer"
        if isinstance(frame, str):
            return frame
        if frame.get("type") != "error":
            return f"answered {frame}"
        return f"error {frame['code']}, {still_open(ws)}"


def flood_answer(stack: Stack) -> str:
    """Frames as fast as the socket takes them: more than the burst plus the refusals before closing."""
    limits = stack.limits
    codes: list[str] = []
    with join(stack, ECHO) as ws:
        with contextlib.suppress(ConnectionClosed):
            for number in range(limits.ws_rate_burst + limits.ws_rate_strikes + 100):
                ws.send(json.dumps({"message": f"flood {number}"}))
        try:
            while isinstance(frame := next_frame(ws), dict):
                if frame.get("type") == "error":
                    codes.append(frame["code"])
            ending = frame
        except TimeoutError:
            ending = "still open"
    if codes and set(codes) == {"rate_limited"}:
        return f"rate_limited errors, then {ending}"
    return f"errors {sorted(set(codes))}, then {ending}"


# Many clients at once from one address (what Nginx's default per-address limits let through), each
# sending one message far over the servers' limit: a server that stores what follows the limit grows by
# all of it (Hypercorn did, until deploy/bin/run_hypercorn.py), and may be killed for memory.
OVERSIZED_CLIENTS = 20
OVERSIZED_BYTES = 16 * 1024 * 1024  # each: 256 times the default WS_MAX_MESSAGE_BYTES
OVERSIZED_WITHIN = 15.0  # seconds for every close to arrive: every server answers as soon as it reads
OVERSIZED_GROWTH = 64 * 1024 * 1024  # the servers' peak memory over their baseline, all clients together
# Granian has no message size setting: its WebSocket library reads every frame up to its own 16 MiB
# frame limit whole, and only then can the app refuse the message. What that costs is bounded by the
# frame limit, once in Granian and once as the app's copy, per client.
GRANIAN_FRAME_LIMIT = 16 * 1024 * 1024
OVERSIZED_GROWTH_OF = {"granian": OVERSIZED_CLIENTS * 2 * GRANIAN_FRAME_LIMIT}


class ServerProcesses:
    """The processes of the containers serving /ws/, read from the host: their ids and summed RSS."""

    def __init__(self, stack: Stack) -> None:
        self.roots = [
            stack.inspect(container)["State"]["Pid"] for container in stack.containers(stack.ws_service)
        ]

    def pids(self) -> set[int]:
        return {pid for root in self.roots for pid in process_tree(root)}

    def rss(self) -> int:
        return sum(pid_memory(root) for root in self.roots)


def oversized_flood_answer(stack: Stack) -> str:
    """Every client closed with 1009 in time, the servers' memory bounded, no process restarted; or
    what happened instead."""
    servers = ServerProcesses(stack)
    pids, baseline = servers.pids(), servers.rss()
    peak = baseline
    message = "x" * OVERSIZED_BYTES
    answers: list[str] = []
    slowest = 0.0

    def send_and_read(ws: ClientConnection) -> None:
        nonlocal slowest
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):  # closed while sending: the close code tells
            ws.send(message)
        try:
            answer = next_frame(ws, within=OVERSIZED_WITHIN)
        except TimeoutError:
            answer = "no answer"
        slowest = max(slowest, time.monotonic() - started)
        answers.append(answer if isinstance(answer, str) else f"answered {answer}")

    with contextlib.ExitStack() as sockets:
        clients = [sockets.enter_context(join(stack, ECHO)) for _ in range(OVERSIZED_CLIENTS)]
        senders = [threading.Thread(target=send_and_read, args=(ws,), daemon=True) for ws in clients]
        for sender in senders:
            sender.start()
        while any(sender.is_alive() for sender in senders):
            peak = max(peak, servers.rss())
            time.sleep(0.1)
    found = []
    if answers != [TOO_BIG] * OVERSIZED_CLIENTS:
        found.append(f"answers {sorted(set(answers))}")
    if slowest > OVERSIZED_WITHIN:
        found.append(f"the slowest close after {slowest:.1f} s")
    growth = peak - baseline
    if growth > OVERSIZED_GROWTH_OF.get(stack.server, OVERSIZED_GROWTH):
        found.append(f"the servers grew by {growth >> 20} MiB")
    if servers.pids() != pids:
        found.append(f"processes restarted: {sorted(pids - servers.pids())} gone")
    print(  # the figures, for the README (pytest -rP shows them)
        f"{stack.server}: {OVERSIZED_CLIENTS} clients x {OVERSIZED_BYTES >> 20} MiB: {Counter(answers)}, "
        f"slowest close {slowest:.1f} s, peak growth {growth / 2**20:.0f} MiB"
    )
    return "; ".join(found) or OVERSIZED_ANSWER


OVERSIZED_ANSWER = "every one closed 1009 in time, memory bounded, no process restarted"
TOO_BIG = "closed 1009"


# --- HTTP through a client library (well-formed requests) ------------------------------------------


@contextlib.contextmanager
def http_client(stack: Stack) -> Iterator[httpx.Client]:
    context = stack.ssl_context()
    with httpx.Client(
        base_url=stack.base_url, verify=context or True, timeout=RECV_TIMEOUT, trust_env=False
    ) as client:
        yield client


def whoami(stack: Stack, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with http_client(stack) as client:
        response = client.get("/api/whoami", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def forged_forwarding_answer(stack: Stack) -> str:
    honest = whoami(stack)
    forged = whoami(
        stack,
        {
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "http" if stack.tls else "https",
            "X-Real-IP": "6.6.6.6",
            "Forwarded": "for=6.6.6.6;proto=https",
            "X-Forwarded-Host": "evil.example",
        },
    )
    scheme = "https" if stack.tls else "http"
    believed = (forged["client_ip"], forged["scheme"])
    if believed == (honest["client_ip"], scheme) and honest["scheme"] == scheme:
        return "ignored: the real client address and scheme"
    return f"believed: {forged} (an honest request: {honest})"


def nginx_access_log(stack: Stack) -> list[dict[str, Any]]:
    """Nginx's JSON access-log lines, once every request made so far is in them."""
    access_log.wait_until_flushed()
    return access_log.entries(stack.logs("nginx"))


def app_logs(stack: Stack) -> str:
    return "\n".join(stack.logs(service) for service in stack.app_services)


def wait_for_app_log(stack: Stack, text: str) -> bool:
    deadline = time.monotonic() + LOG_TIMEOUT
    while time.monotonic() < deadline:
        if text in app_logs(stack):
            return True
        time.sleep(0.5)
    return False


# --- Slow clients and many connections --------------------------------------------------------------

SLOW_CLIENTS = 3


def _trickle(stack: Stack, target: str, lines: int, outcome: dict[str, str]) -> None:
    """Sends a request head one line per second; records who gave up first."""
    try:
        with open_socket(stack) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}:{stack.port}\r\n".encode())
            for number in range(lines):
                time.sleep(1)
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and not sock.recv(65536):
                    outcome[target] = "closed by the server"
                    return
                sock.sendall(f"X-Slow-{number}: x\r\n".encode())
            outcome[target] = "the client ran out of lines first"
    except (ConnectionResetError, BrokenPipeError):
        outcome[target] = "closed by the server"
    except (OSError, ssl.SSLError) as error:
        outcome[target] = f"failed: {error!r}"


def slow_headers_answer(stack: Stack) -> str:
    """Clients that trickle their request head: Nginx times them out, the app never sees them."""
    marker = f"/slow-header-{uuid.uuid4().hex}"
    targets = [f"{marker}-{number}" for number in range(SLOW_CLIENTS)]
    lines = int(stack.limits.client_header_timeout) * 3 + 10  # far longer than Nginx waits
    outcome: dict[str, str] = {}
    threads = [threading.Thread(target=_trickle, args=(stack, t, lines, outcome)) for t in targets]
    for thread in threads:
        thread.start()
    # Meanwhile, everyone else is served.
    time.sleep(1)
    with http_client(stack) as client:
        served = client.get("/healthz").status_code
    for thread in threads:
        thread.join(lines + 30)
    # A control request, sent whole, does reach the app's access log: the log check below can see.
    control = f"{marker}-control"
    with http_client(stack) as client:
        client.get(control)
    if not wait_for_app_log(stack, control):
        return "the app's access log does not show requests (cannot tell)"
    seen = [target for target in targets if target in app_logs(stack)]
    statuses = {entry["uri"]: entry["status"] for entry in nginx_access_log(stack) if entry["uri"] in targets}
    problems = [f"{t}: {outcome.get(t)}" for t in targets if outcome.get(t) != "closed by the server"]
    if served != 200:
        problems.append(f"a healthy client got {served}")
    if seen:
        problems.append(f"the app saw {seen}")
    if sorted(statuses.values()) != [408] * SLOW_CLIENTS:
        problems.append(f"Nginx logged {statuses}")
    return "; ".join(problems) if problems else "closed by Nginx (408), never reached the app"


# Open sockets these tests keep to the stack while the cases run (the bystander, see test_hostile_input).
OTHER_OPEN_SOCKETS = 1
CONN_LIMIT_LOG = 'limiting connections by zone "ws_conn"'


def connection_limit_answer(stack: Stack) -> str:
    """Opens WebSockets from one address until Nginx refuses; then closes them and opens one more."""
    limit = stack.limits.ws_conn_per_ip
    refusals_before = stack.logs("nginx").count(CONN_LIMIT_LOG)
    held: list[socket.socket] = []
    refused = None
    try:
        while len(held) + OTHER_OPEN_SOCKETS <= limit + 2:
            status, sock = handshake(stack, ECHO)
            if status != 101:
                sock.close()
                refused = status
                break
            held.append(sock)
    finally:
        for sock in held:
            sock.close()
    opened = len(held) + OTHER_OPEN_SOCKETS
    by_limit_conn = stack.logs("nginx").count(CONN_LIMIT_LOG) > refusals_before
    again = 0
    deadline = time.monotonic() + RECV_TIMEOUT
    while again != 101 and time.monotonic() < deadline:  # Nginx counts a socket until it has closed
        again = int(handshake_answer(stack, ECHO).split()[1])
    if refused == 429 and opened == limit and by_limit_conn and again == 101:
        return "HTTP 429 from limit_conn at the limit, accepted again once closed"
    return f"{refused} after {opened} open (limit {limit}, limit_conn: {by_limit_conn}), then {again}"


# --- Static files -----------------------------------------------------------------------------------

LEAK_SIGNS = (b"root:x:0:0", b"PRIVATE KEY", b"proxy_set_header")


def static_answer(stack: Stack, target: str) -> str:
    status, data = exchange(stack, request_bytes(stack, "GET", target))
    leaked = [sign.decode() for sign in LEAK_SIGNS if sign in data]
    return f"HTTP {status}" + (f", leaked {leaked}" if leaked else "")
