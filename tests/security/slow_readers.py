"""Sockets that never read, in a room under broadcast.

A chat member whose client stops reading (a phone in a tunnel, a stuck tab, a hostile client) still gets
every broadcast of its room. Once the kernel's buffers between it and the server are full, what the server
does with the rest decides whether its memory is bounded: a server whose send waits for the socket lets
the app see the member fall behind (it closes the socket with ``too_slow`` once the room's queue of
CHANNEL_LAYER_CAPACITY broadcasts is full); a server that queues every frame in its own process grows by
every broadcast times every slow socket, until something kills it.

The probe: SLOW_READERS raw sockets join one room with a tiny receive buffer and never read; WRITERS
well-behaved members send MESSAGES large messages into the room as fast as the per-socket rate limit
lets them, each reading everything the room sends. Then it checks that the servers' memory stayed
bounded, no process restarted and every writer received every message. How each slow socket ended is
printed, not checked: closed with ``too_slow`` (its room's queue overflowed), closed by a ping the
client never answered, or still open and caught up once it read at last (its server and the kernel
buffers held everything it was behind). A socket that never reads at all is closed by Nginx
``send_timeout`` (30 s) after its last write to the client went through.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.security.clients import ServerProcesses, chat_room, handshake, join
from tests.security.stack import Stack

SLOW_READERS = 10
SLOW_READER_BUFFER = 4096  # bytes of kernel receive buffer: the client side holds almost nothing
WRITERS = 8
MESSAGES = 1500  # more than CHANNEL_LAYER_CAPACITY (1000): a member that cannot keep up overflows
MARKER_CHARS = 33  # a uuid4 hex and a space, ahead of the text: whose message it is
# Characters outside ASCII, up to CHAT_MESSAGE_MAX_CHARS (2,000) with the marker: the app's JSON escapes
# each as 12 bytes, so every broadcast frame is about 24 KB, and 1,500 of them are 36 MB per socket, far
# more than the kernel buffers between a socket and the server (a few MB).
MESSAGE_TEXT = "\U0001f4e3" * (2000 - MARKER_CHARS)
# Memory the broadcast may legitimately take: each process's room queue holds at most
# CHANNEL_LAYER_CAPACITY broadcasts, shared by all its members (24 MB), plus the frames in flight; the
# six variants grew by 72 to 89 MiB. A server that queues every frame for every slow socket grows by up
# to SLOW_READERS x 36 MB instead: Daphne did, by 323 MiB, until deploy/bin/run_daphne.py.
SLOW_READERS_GROWTH = 160 * 1024 * 1024
WRITER_RATE = 18.0  # messages per second per writer, under the app's WS_RATE_PER_SECOND (20)
READ_WITHIN = 10.0  # seconds for reading what the slow sockets were sent, once the broadcast is over
SLOW_READERS_ANSWER = "memory bounded, every message delivered to the readers, nothing restarted"


@contextlib.contextmanager
def slow_reader(stack: Stack, room: str) -> Iterator[socket.socket]:
    """A member of ``room`` that reads nothing after its handshake, with a receive buffer of a few KB."""
    status, sock = handshake(stack, room, receive_buffer=SLOW_READER_BUFFER)
    with sock:
        assert status == 101, f"slow reader refused: HTTP {status}"
        yield sock


def ending(sock: socket.socket, deadline: float) -> str:
    """What the slow socket has, read at last: everything the server buffered for it, then either its
    close (``closed``, ``closed after too_slow``) or ``open, caught up`` when nothing ends it by
    ``deadline``."""
    tail = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return "closed after too_slow" if b'"too_slow"' in tail else "closed"
        tail = (tail + chunk)[-4096:]  # the error frame is among the last ones before the close
    return "open, caught up"


class Writer:
    """A member that sends its share of the messages, paced, and reads every frame of the room."""

    def __init__(self, ws: ClientConnection, share: int) -> None:
        self.ws = ws
        self.share = share
        self.sent: set[str] = set()
        self.received: set[int] = set()  # the database ids of the chat messages it got
        self.own: set[str] = set()  # its own messages, acknowledged with their id
        self.problem = ""

    def send_all(self) -> None:
        started = time.monotonic()
        try:
            for number in range(self.share):
                time.sleep(max(started + number / WRITER_RATE - time.monotonic(), 0))
                marker = uuid.uuid4().hex
                self.sent.add(marker)
                self.ws.send(json.dumps({"message": f"{marker} {MESSAGE_TEXT}"}))
        except ConnectionClosed as closed:
            self.problem = f"writer closed while sending: {closed}"

    def read_until(self, expected: int, deadline: float) -> None:
        try:
            while len(self.received) < expected or len(self.own) < len(self.sent):
                frame = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
                if frame.get("type") == "chat.message":
                    self.received.add(frame["id"])
                    marker = frame["message"].split(" ", 1)[0]
                    if marker in self.sent:
                        self.own.add(marker)
                elif frame.get("type") == "error":
                    self.problem = f"writer got an error: {frame}"
        except TimeoutError:
            pass
        except ConnectionClosed as closed:
            self.problem = f"writer closed: {closed}"


def slow_readers_answer(stack: Stack) -> str:
    """SLOW_READERS_ANSWER, or what happened instead."""
    servers = ServerProcesses(stack)
    pids, baseline = servers.pids(), servers.rss()
    peak = baseline
    room = chat_room()
    with contextlib.ExitStack() as sockets:
        slow = [sockets.enter_context(slow_reader(stack, room)) for _ in range(SLOW_READERS)]
        share = MESSAGES // WRITERS
        writers = [Writer(sockets.enter_context(join(stack, room)), share) for _ in range(WRITERS)]
        deadline = time.monotonic() + MESSAGES / (WRITERS * WRITER_RATE) + 60
        threads = [threading.Thread(target=writer.send_all, daemon=True) for writer in writers]
        threads += [
            threading.Thread(target=writer.read_until, args=(share * WRITERS, deadline), daemon=True)
            for writer in writers
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, servers.rss())
            time.sleep(0.1)
        read_by = time.monotonic() + READ_WITHIN
        endings = Counter(ending(sock, read_by) for sock in slow)
        peak = max(peak, servers.rss())
    found = []
    growth = peak - baseline
    if growth > SLOW_READERS_GROWTH:
        found.append(f"the servers grew by {growth >> 20} MiB")
    delivered = {len(writer.received) for writer in writers}
    stored = set().union(*(writer.received for writer in writers))
    if delivered != {len(stored)} or any(len(w.own) != len(w.sent) for w in writers):
        found.append(f"writers got {sorted(delivered)} of {len(stored)} messages")
    found += [writer.problem for writer in writers if writer.problem]
    if servers.pids() != pids:
        found.append(f"processes restarted: {sorted(pids - servers.pids())} gone")
    print(  # the figures, for the README (pytest -rP shows them)
        f"{stack.server}: {SLOW_READERS} slow readers, {len(stored)} broadcasts of "
        f"{len(json.dumps(MESSAGE_TEXT)) >> 10} KiB: {dict(endings)}, peak growth {growth / 2**20:.0f} MiB"
    )
    return "; ".join(found) or SLOW_READERS_ANSWER
