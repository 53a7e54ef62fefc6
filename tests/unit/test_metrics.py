"""core/metrics.py: what each HTTP answer, handshake, frame, close, broadcast and check counts.

The unit tests count in this process's memory (no PROMETHEUS_MULTIPROC_DIR); each test reads the
difference a known action makes. tests/integration/test_metrics.py checks the same through the
exporter of every server, summed over its processes.
"""

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from chat import consumers
from chat.consumers import room_group
from chat.rooms import Broadcast, wire_text
from core import metrics, readiness
from django.test import AsyncClient, Client
from prometheus_client import REGISTRY

from tests.unit.conftest import close_communicators, communicator

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 3


@pytest.fixture(autouse=True)
async def _clients_closed():
    yield
    await close_communicators()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"realtime_django_{name}", labels) or 0.0


class Delta:
    """How much a sample changes between its creation and ``now()``."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = value(name, **labels)

    def now(self) -> float:
        return value(self.name, **self.labels) - self.before


# --- Labels stay bounded -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "label"), [(101, "1xx"), (200, "2xx"), (304, "3xx"), (404, "4xx"), (503, "5xx"), (99, "other")]
)
def test_status_class(status, label):
    assert metrics.status_class(status) == label


@pytest.mark.parametrize(
    ("code", "label"), [(1000, "1000"), (1013, "1013"), (4000, "other"), (None, "other")]
)
def test_close_code_label(code, label):
    assert metrics.close_code_label(code) == label


# --- HTTP ---------------------------------------------------------------------------------------------------


def test_sync_requests_are_counted_by_route_method_and_status_class():
    ping = Delta("http_requests_total", route="ping", method="GET", status="2xx", handler="fast")
    ping_time = Delta("http_request_duration_seconds_count", route="ping")
    missing = Delta("http_requests_total", route="none", method="GET", status="4xx", handler="fast")
    odd = Delta("http_requests_total", route="ping", method="other", status="2xx", handler="fast")
    client = Client()
    for _ in range(3):
        assert client.get("/api/ping").status_code == 200
    assert client.get("/no/such/page/42").status_code == 404
    assert client.generic("BREW", "/api/ping").status_code == 200
    assert (ping.now(), ping_time.now(), missing.now(), odd.now()) == (3, 4, 1, 1)


async def test_async_requests_are_counted_and_timed():
    ping = Delta("http_requests_total", route="ping", method="GET", status="2xx", handler="fast")
    seconds = Delta("http_request_duration_seconds_sum", route="ping")
    for _ in range(2):
        assert (await AsyncClient().get("/api/ping")).status_code == 200
    assert ping.now() == 2
    assert 0 < seconds.now() < 5


def test_a_bad_host_is_counted_as_no_route():
    refused = Delta("http_requests_total", route="none", method="GET", status="4xx", handler="fast")
    assert Client().get("/api/ping", headers={"host": "evil.example"}).status_code == 400
    assert refused.now() == 1


# --- WebSockets ---------------------------------------------------------------------------------------------


async def test_an_echo_socket_counts_its_handshake_frames_errors_and_close():
    accepted = Delta("websocket_handshakes_accepted_total", route="echo")
    received = Delta("websocket_frames_received_total", route="echo")
    sent = Delta("websocket_frames_sent_total", route="echo")
    invalid = Delta("websocket_error_frames_total", code="invalid_json")
    closed = Delta("websocket_closes_total", route="echo", code="1000", side="peer")
    client = communicator("/ws/echo/")
    assert (await client.connect(timeout=TIMEOUT))[0]
    assert value("websocket_connections", route="echo") == 1
    await client.send_to(text_data=json.dumps({"message": "hi"}))
    await client.receive_json_from(timeout=TIMEOUT)
    await client.send_to(text_data="not json")
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "invalid_json"
    await client.disconnect(code=1000)
    assert (accepted.now(), received.now(), sent.now(), invalid.now(), closed.now()) == (1, 2, 2, 1, 1)
    assert value("websocket_connections", route="echo") == 0


async def test_a_close_by_the_app_is_counted_with_its_code(settings):
    settings.WS_RATE_PER_SECOND = 0.001
    settings.WS_RATE_BURST = 1
    settings.WS_RATE_STRIKES = 1
    closed = Delta("websocket_closes_total", route="echo", code="1008", side="app")
    limited = Delta("websocket_error_frames_total", code="rate_limited")
    client = communicator("/ws/echo/")
    assert (await client.connect(timeout=TIMEOUT))[0]
    for _ in range(3):
        await client.send_to(text_data=json.dumps({"message": "x"}))
    assert await client.receive_json_from(timeout=TIMEOUT) == {"message": "x"}
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "rate_limited"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1008}
    await client.wait(timeout=TIMEOUT)
    assert (closed.now(), limited.now()) == (1, 1)
    assert value("websocket_connections", route="echo") == 0


@pytest.mark.parametrize(
    ("path", "options", "reason"),
    [
        pytest.param("/ws/echo/", {"origin": b"http://evil.example"}, "origin", id="origin"),
        pytest.param("/ws/echo/", {"origin": None}, "origin", id="no-origin"),
        pytest.param("/ws/echo/", {"host": b"evil.example"}, "host", id="host"),
        pytest.param("/ws/chat/a b/", {}, "room_name", id="room-name"),
        pytest.param("/ws/nowhere/", {}, "route", id="unknown-path"),
    ],
)
async def test_a_refused_handshake_is_counted_by_reason(path, options, reason):
    refused = Delta("websocket_handshakes_refused_total", reason=reason)
    client = communicator(path, **options)
    assert not (await client.connect(timeout=TIMEOUT))[0]
    assert refused.now() == 1


# --- Chat ---------------------------------------------------------------------------------------------------


async def join(room: str):
    client = communicator(f"/ws/chat/{room}/")
    assert (await client.connect(timeout=TIMEOUT))[0]
    assert (await client.receive_json_from(timeout=TIMEOUT))["type"] == "chat.history"
    return client


async def test_a_broadcast_is_stored_sent_and_timed_on_each_socket():
    stored = Delta("chat_messages_stored_total")
    broadcasts = Delta("chat_broadcasts_total")
    deliveries = Delta("chat_fanout_delivery_seconds_count")
    alice, bob = await join("metrics-room"), await join("metrics-room")
    await alice.send_to(text_data=json.dumps({"message": "hello"}))
    for client in (alice, bob):
        frame = await client.receive_json_from(timeout=TIMEOUT)
        assert frame["message"] == "hello"
        assert metrics.BROADCAST_TIME_KEY not in frame  # the send time is the metrics', not the clients'
    assert (stored.now(), broadcasts.now(), deliveries.now()) == (1, 1, 2)


def test_the_frame_of_a_broadcast_leaves_its_send_time_out():
    event = metrics.stamped_broadcast({"type": "chat.message", "message": "hi"})
    assert isinstance(event[metrics.BROADCAST_TIME_KEY], float)
    assert json.loads(Broadcast(event).text) == {"type": "chat.message", "message": "hi"}
    assert json.loads(wire_text(event)) == {"type": "chat.message", "message": "hi"}


async def test_a_socket_too_slow_is_counted():
    too_slow = Delta("websocket_too_slow_total")
    closed = Delta("websocket_closes_total", route="chat", code="1013", side="app")
    client = await join("metrics-slow")
    room = consumers.chat_rooms(get_channel_layer()).room(room_group("metrics-slow"))
    [member] = room.members
    for n in range(room.capacity + 1):
        member.deliver({"type": "chat.message", "id": n})
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "too_slow"
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1013}
    assert (too_slow.now(), closed.now()) == (1, 1)


# --- Dependencies -------------------------------------------------------------------------------------------


async def test_a_failed_broadcast_counts_a_layer_failure(monkeypatch):
    failures = Delta("channel_layer_failures_total", operation="group_send")
    client = await join("metrics-layer-down")

    async def fail(*args, **kwargs):
        raise ConnectionError("redis is gone")

    monkeypatch.setattr(get_channel_layer(), "group_send", fail)
    await client.send_to(text_data=json.dumps({"message": "stored"}))
    await client.receive_json_from(timeout=TIMEOUT)  # the acknowledgement
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "layer_unavailable"
    assert failures.now() == 1


async def test_a_failed_join_counts_a_layer_failure(monkeypatch):
    failures = Delta("channel_layer_failures_total", operation="join")

    async def fail(*args, **kwargs):
        raise ConnectionError("redis is gone")

    monkeypatch.setattr(get_channel_layer(), "group_add", fail)
    client = communicator("/ws/chat/metrics-join-down/")
    assert (await client.connect(timeout=TIMEOUT))[0]
    assert (await client.receive_json_from(timeout=TIMEOUT))["code"] == "layer_unavailable"
    assert failures.now() == 1


async def test_readiness_checks_are_counted_by_dependency_and_result(monkeypatch):
    ok = Delta("readiness_checks_total", dependency="database", result="ok")
    failed = Delta("readiness_checks_total", dependency="channel_layer", result="error")

    async def broken() -> None:
        raise ConnectionError("Connection refused")

    monkeypatch.setitem(readiness.CHECKS, "channel_layer", broken)
    assert (await AsyncClient().get("/readyz")).status_code == 503
    assert (ok.now(), failed.now()) == (1, 1)


class FakePool:
    def __init__(self, **stats: int) -> None:
        self.stats = stats

    def get_stats(self) -> dict[str, int]:
        return dict(self.stats)


def test_pool_sampler_copies_the_pool_statistics(monkeypatch):
    pool = FakePool(
        pool_size=4, pool_available=3, requests_waiting=0, requests_errors=2, connections_errors=0
    )
    monkeypatch.setattr(metrics, "_django_pools", lambda: [pool])
    request_errors = Delta("db_pool_errors_total", kind="request")
    sampler = metrics.PoolSampler()
    sampler.sample()
    assert (value("db_pool_connections"), value("db_pool_available_connections")) == (4, 3)
    assert request_errors.now() == 2
    pool.stats.update(pool_available=1, requests_waiting=5, requests_errors=3)
    sampler.sample()
    assert (value("db_pool_available_connections"), value("db_pool_waiting_requests")) == (1, 5)
    assert request_errors.now() == 3  # advanced by the difference, not by the pool's total again


def test_no_pool_reads_as_zero(monkeypatch):
    monkeypatch.setattr(metrics, "_django_pools", list)
    metrics.PoolSampler().sample()
    assert value("db_pool_connections") == 0


# --- asyncio tasks -------------------------------------------------------------------------------------


async def test_the_event_loop_of_a_call_is_watched_and_its_open_tasks_counted():
    loops = metrics.EventLoops()
    loops.seen(asyncio.get_running_loop())
    before = loops.pending_tasks()  # this test's own task, and whatever the test runner keeps
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    # Counted from another thread, as the sampler thread does.
    assert await asyncio.to_thread(loops.pending_tasks) == before + 3
    release.set()
    await asyncio.gather(*waiting)
    assert await asyncio.to_thread(loops.pending_tasks) == before


async def test_watch_event_loop_notes_the_loop_and_passes_the_call_through(monkeypatch):
    loops = metrics.EventLoops()
    monkeypatch.setattr(metrics, "EVENT_LOOPS", loops)
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    assert loops.pending_tasks() == 0  # no loop seen yet
    await metrics.watch_event_loop(app)({"type": "http"}, None, None)
    assert calls == ["http"]
    assert loops.pending_tasks() >= 1  # this test's own task, on the loop now watched


def test_a_closed_loop_counts_nothing():
    loops = metrics.EventLoops()
    loop = asyncio.new_event_loop()
    loops.seen(loop)
    loop.close()
    assert loops.pending_tasks() == 0
