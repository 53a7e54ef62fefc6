"""Hostile input, for every variant, through Nginx on the published port: one table, one answer each.

Each case sends something a hostile or broken client would, and gets exactly one expected answer: an
error frame with the socket kept open, a close code, an HTTP status from Nginx or the app. After the
table, the same stack still serves: a socket opened before the cases is still answered, chat still
stores and broadcasts, no container restarted, and Nginx logged no 5xx for anything.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import pytest
from websockets.sync.client import ClientConnection

from tests.security.clients import (
    ECHO,
    OVERSIZED_ANSWER,
    TOO_BIG,
    chat_is_stored_and_broadcast,
    chat_room,
    connection_limit_answer,
    flood_answer,
    forged_forwarding_answer,
    frame_answer,
    handshake_answer,
    http_answer,
    http_client,
    join,
    nginx_access_log,
    oversized_flood_answer,
    slow_headers_answer,
    static_answer,
    still_open,
)
from tests.security.slow_readers import SLOW_READERS_ANSWER, slow_readers_answer
from tests.security.stack import Limits, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # the first case of a variant brings its stack up

EMPTY_MESSAGE_FRAME = len(json.dumps({"message": ""}))


def message_of_bytes(size: int) -> str:
    """A valid frame of exactly ``size`` bytes (its text far over CHAT_MESSAGE_MAX_CHARS)."""
    return json.dumps({"message": "x" * (size - EMPTY_MESSAGE_FRAME)})


def text_at_limit(limits: Limits) -> str:
    return message_of_bytes(limits.ws_max_message_bytes)


def text_over_limit(limits: Limits) -> str:
    return message_of_bytes(limits.ws_max_message_bytes + 1)


def binary_at_limit(limits: Limits) -> bytes:
    return b"\0" * limits.ws_max_message_bytes


def binary_over_limit(limits: Limits) -> bytes:
    return b"\0" * (limits.ws_max_message_bytes + 1)


def message_too_long(limits: Limits) -> str:
    return json.dumps({"message": "x" * (limits.chat_message_max_chars + 1)})


def frame(payload: str | bytes | Callable[[Limits], str | bytes], path: str | None = None) -> Probe:
    """One frame on a fresh socket, in a new chat room unless ``path`` is given."""
    return partial(frame_answer, path=path or chat_room, payload=payload)


def handshake(path: str, **options: str | None) -> Probe:
    return partial(handshake_answer, target=path, **options)


def body_over_limit(stack: Stack) -> str:
    size = stack.limits.body_max_bytes + 1
    return http_answer(stack, "POST", "/api/ping", [("Content-Length", str(size))], b"x" * size)


def body_at_limit(stack: Stack) -> str:
    size = stack.limits.body_max_bytes
    return http_answer(stack, "POST", "/api/ping", [("Content-Length", str(size))], b"x" * size)


def chunked_body_over_limit(stack: Stack) -> str:
    size = stack.limits.body_max_bytes + 1
    chunk = 65536
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in [chunk] * (size // chunk) + [size % chunk] if n)
    return http_answer(stack, "POST", "/api/ping", [("Transfer-Encoding", "chunked")], body + b"0\r\n\r\n")


def header_over_limit(stack: Stack) -> str:
    return http_answer(stack, "GET", "/api/ping", [("X-Big", "a" * stack.limits.header_line_max_bytes)])


def request_line_over_limit(stack: Stack) -> str:
    return http_answer(stack, "GET", "/api/ping?" + "a" * stack.limits.header_line_max_bytes)


Probe = Callable[[Stack], str]


@dataclass(frozen=True)
class Case:
    name: str
    probe: Probe
    expected: str

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def static(target: str) -> Probe:
    return partial(static_answer, target=target)


def request(method: str, target: str, **options: object) -> Probe:
    return partial(http_answer, method=method, target=target, **options)


# The answers, in the words the probes use.
OPEN = ", socket open"
REFUSED = "HTTP 403"
FLOOD = "rate_limited errors, then closed 1008"
IGNORED = "ignored: the real client address and scheme"
TIMED_OUT = "closed by Nginx (408), never reached the app"
CONN_LIMIT = "HTTP 429 from limit_conn at the limit, accepted again once closed"
EVIL = "http://evil.example"
HUGE_LENGTH = ("Content-Length", "9" * 11)  # 99 GB announced, nothing sent

CASES = [
    # --- WebSocket frames: an error frame, and the socket stays open ---
    Case("text that is not JSON", frame("hello"), "error invalid_json" + OPEN),
    Case("JSON array", frame("[1, 2]"), "error not_an_object" + OPEN),
    Case("JSON string", frame('"hello"'), "error not_an_object" + OPEN),
    Case("JSON null", frame("null"), "error not_an_object" + OPEN),
    Case("object without message", frame('{"text": "hi"}'), "error missing_message" + OPEN),
    Case("message is a number", frame('{"message": 42}'), "error invalid_message" + OPEN),
    Case("message is null", frame('{"message": null}'), "error invalid_message" + OPEN),
    Case("message is an object", frame('{"message": {"$gt": ""}}'), "error invalid_message" + OPEN),
    Case("message is blank", frame('{"message": "   "}'), "error empty_message" + OPEN),
    Case("message over the length limit", frame(message_too_long), "error message_too_long" + OPEN),
    Case("binary frame", frame(b"\x00\xff"), "error binary_not_supported" + OPEN),
    # --- The size limit: the same on every server, closed with 1009 one byte over ---
    Case("text frame at the size limit", frame(text_at_limit, ECHO), "error message_too_long" + OPEN),
    Case("text frame one byte over", frame(text_over_limit, ECHO), TOO_BIG),
    Case("binary frame at the size limit", frame(binary_at_limit, ECHO), "error binary_not_supported" + OPEN),
    Case("binary frame one byte over", frame(binary_over_limit, ECHO), TOO_BIG),
    Case("flood of frames from one client", flood_answer, FLOOD),
    Case("many clients at once, each far over the limit", oversized_flood_answer, OVERSIZED_ANSWER),
    Case("sockets that never read, under broadcast", slow_readers_answer, SLOW_READERS_ANSWER),
    # --- Handshakes: refused before any consumer runs ---
    Case("foreign Origin", handshake(ECHO, origin=EVIL), REFUSED),
    Case("no Origin", handshake(ECHO, origin=None), REFUSED),
    Case("Origin null", handshake(ECHO, origin="null"), REFUSED),
    Case("bad Host", handshake(ECHO, host="evil.example"), REFUSED),
    Case("bad Host, its own Origin", handshake(ECHO, host="evil.example", origin=EVIL), REFUSED),
    Case("unknown WebSocket path", handshake("/ws/nowhere/"), REFUSED),
    # --- Room names (at most 100 of letters, digits, - _ .) ---
    Case("room name of 100 characters", handshake(f"/ws/chat/{'r' * 100}/"), "HTTP 101"),
    Case("room name of 101 characters", handshake(f"/ws/chat/{'r' * 101}/"), REFUSED),
    # Nginx resolves ../ (also %2F) and routes what is left: /etc/passwd/ is a page, not a socket.
    Case("room ../ resolved by Nginx", handshake("/ws/chat/../../etc/passwd/"), "HTTP 404"),
    Case("room ../ percent-encoded", handshake("/ws/chat/..%2F..%2Fetc%2Fpasswd/"), "HTTP 404"),
    Case("room ../ encoded twice", handshake("/ws/chat/..%252F..%252Fetc/"), REFUSED),
    Case("room named .. is only a name", handshake("/ws/chat/%2e%2e/"), "HTTP 101"),
    Case("room with an encoded space", handshake("/ws/chat/two%20words/"), REFUSED),
    Case("room with a raw space", handshake("/ws/chat/two words/"), "HTTP 400"),
    Case("room with SQL", handshake("/ws/chat/x'%3B%20DROP%20TABLE%20chat_message%3B--/"), REFUSED),
    Case("room with non-ASCII, encoded", handshake("/ws/chat/%C3%A9t%C3%A9/"), REFUSED),
    Case("room with non-ASCII, raw UTF-8", handshake("/ws/chat/été/"), "HTTP 400"),
    Case("room with a NUL byte", handshake("/ws/chat/a%00b/"), "HTTP 400"),
    # --- HTTP: limits enforced by Nginx before the app, and the app's own checks ---
    Case("HTTP with a bad Host", request("GET", "/", host="evil.example"), "HTTP 400"),
    Case("body at the limit reaches the app", body_at_limit, "HTTP 403"),
    Case("body one byte over the limit", body_over_limit, "HTTP 413"),
    Case("chunked body over the limit", chunked_body_over_limit, "HTTP 413"),
    Case("declared length over the limit", request("POST", "/", headers=[HUGE_LENGTH]), "HTTP 413"),
    Case("header line over the limit", header_over_limit, "HTTP 400"),
    Case("request line over the limit", request_line_over_limit, "HTTP 414"),
    Case("forged X-Forwarded-For and -Proto", forged_forwarding_answer, IGNORED),
    Case("slow clients trickling headers", slow_headers_answer, TIMED_OUT),
    Case("many connections from one address", connection_limit_answer, CONN_LIMIT),
    # --- Path traversal under /static/: refused, never a file from outside ---
    Case("static ../", static("/static/../../../etc/passwd"), "HTTP 400"),
    Case("static ../ inside a folder", static("/static/chat/../../../../etc/passwd"), "HTTP 400"),
    Case("static %2e%2e", static("/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd"), "HTTP 400"),
    Case("static ..%2f", static("/static/..%2f..%2f..%2fetc/passwd"), "HTTP 400"),
    Case("static ..%5c", static("/static/..%5c..%5c..%5cetc/passwd"), "HTTP 404"),
    Case("static into Nginx's config", static("/static/../../etc/nginx/stack/proxy.conf"), "HTTP 400"),
    Case("static prefix without slash", static("/static../etc/passwd"), "HTTP 404"),
]


@pytest.fixture(scope="session")
def bystander(stack: Stack) -> Iterator[ClientConnection]:
    """A socket opened before the cases and kept open through them: it must still be answered after."""
    with join(stack, ECHO) as ws:
        yield ws


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(stack: Stack, bystander: ClientConnection, case: Case):
    assert case.probe(stack) == case.expected


def test_still_serving_after_the_hostile_input(stack: Stack, bystander: ClientConnection):
    # The socket opened before the cases is still answered.
    assert still_open(bystander) == "socket open"
    chat_is_stored_and_broadcast(stack, f"after the cases {uuid.uuid4().hex}")
    with http_client(stack) as client:
        assert client.get("/readyz").status_code == 200
    # Nothing crashed or restarted, and nobody got a 5xx, from Nginx or from the app behind it.
    for container in map(stack.inspect, stack.containers()):
        state = container["State"]
        assert state["Running"] and not state["OOMKilled"], (container["Name"], state)
        assert container["RestartCount"] == 0, container["Name"]
    entries = nginx_access_log(stack)
    assert entries, "Nginx's access log is empty"
    errors = [e for e in entries if e["status"] >= 500 or e["upstream_status"].startswith("5")]
    assert errors == []
