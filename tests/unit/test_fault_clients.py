"""The fault suite's HTTP load sends a GET again only where a browser would: after a reused
keep-alive connection closed or was reset before any answer (tests/faults/clients.py)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.faults.clients import HttpLoad, failures

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

GARBAGE = b"not HTTP at all\r\n\r\n"

# (index of the connection, index of the request on it) -> what the server sends: ANSWER, GARBAGE,
# or None to reset the connection
Policy = Callable[[int, int], bytes | None]


def reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends a reset, as it does when a request reaches a
    connection the server has just closed."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def serve(conn: socket.socket, index: int, policy: Policy) -> None:
    with conn:
        buffered = b""
        for request in range(1_000):
            while b"\r\n\r\n" not in buffered:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffered += chunk
            buffered = buffered.split(b"\r\n\r\n", 1)[1]
            reply = policy(index, request)
            if reply is None:
                reset(conn)
                return
            conn.sendall(reply)


@pytest.fixture
def server() -> Iterator[Callable[[Policy], str]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    policies: list[Policy] = []
    acceptors: list[threading.Thread] = []

    def accept() -> None:
        index = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn, index, policies[0]), daemon=True).start()
            index += 1

    def start(policy: Policy) -> str:
        policies.append(policy)
        acceptors.append(threading.Thread(target=accept, daemon=True))
        acceptors[-1].start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    stop.set()
    # The listener is closed only once no thread is in accept() on it any more (which would raise).
    for acceptor in acceptors:
        acceptor.join()
    listener.close()


def run(load: HttpLoad) -> HttpLoad:
    """Run the load until it has sent its ``max_requests`` (or its ``duration`` is over)."""
    with load:
        deadline = time.monotonic() + load.duration
        while len(load.outcomes) < load.max_requests and time.monotonic() < deadline:
            time.sleep(0.01)
    return load


def test_a_reset_of_a_reused_connection_is_retried_not_failed(server) -> None:
    base_url = server(lambda connection, request: ANSWER if request == 0 else None)  # every reuse reset
    load = run(HttpLoad(base_url, path="/", workers=1, pause=0, duration=10, max_requests=4))
    assert len(load.outcomes) == 4
    assert failures(load.outcomes) == []
    assert [outcome.retried for outcome in load.outcomes] == [False, True, True, True]


def test_a_reset_of_a_new_connection_is_a_failure(server) -> None:
    base_url = server(lambda connection, request: None)  # every request reset, on its own connection
    load = run(HttpLoad(base_url, path="/", workers=1, pause=0, duration=10, max_requests=3))
    assert len(failures(load.outcomes)) == 3
    assert not any(outcome.retried for outcome in load.outcomes)
    assert all("reset" in outcome.error.lower() for outcome in load.outcomes)


def test_a_malformed_answer_on_a_reused_connection_is_a_failure(server) -> None:
    base_url = server(lambda connection, request: ANSWER if request == 0 else GARBAGE)
    load = run(HttpLoad(base_url, path="/", workers=1, pause=0, duration=10, max_requests=2))
    assert [outcome.ok for outcome in load.outcomes] == [True, False]
    assert not any(outcome.retried for outcome in load.outcomes)
