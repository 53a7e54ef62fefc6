"""/metrics of real servers, run by their start files: known traffic in, exact counts out.

Every variant serves its metrics on METRICS_PORT and names itself. Two servers with two workers
each (Uvicorn's supervisor, Gunicorn's arbiter) check that a scrape adds up every worker's counts,
and that a worker killed and restarted neither loses its counters nor keeps its open connections
counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness import AppServer, PostgresServer, RedisServer
from tests.integration.helpers import join, recv_json, send_json, unique, ws_connect

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WORKERS = 2
MULTI_WORKER_SERVERS = ("uvicorn", "gunicorn-asgi")  # two supervisors, two ways of forking workers


def scrape(app: AppServer, timeout: float = 15.0) -> Samples:
    """Every sample of the server's /metrics (the exporter starts beside the server: wait for it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(app.metrics_url, timeout=5)
            response.raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def counted(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, f"realtime_django_{name}", **labels) - total(
        before, f"realtime_django_{name}", **labels
    )


def get_fresh(app: AppServer, path: str) -> httpx.Response:
    """One request on a new connection, so that the kernel may hand it to any worker."""
    with httpx.Client(base_url=app.url, timeout=20) as client:
        return client.get(path)


@pytest.fixture(scope="module", params=MULTI_WORKER_SERVERS)
def workers(
    request: pytest.FixtureRequest, redis_server: RedisServer, postgres_server: PostgresServer
) -> Iterator[AppServer]:
    env = {"WEB_CONCURRENCY": str(WORKERS)}
    with AppServer(
        request.param, redis_url=redis_server.url, database_url=postgres_server.url, env=env
    ) as app:
        yield app


def serving_pids(app: AppServer, requests: int) -> list[int]:
    """The worker pid of each of ``requests`` /api/whoami requests, each on a new connection."""
    return [get_fresh(app, "/api/whoami").json()["pid"] for _ in range(requests)]


# --- Every variant ----------------------------------------------------------------------------------


def test_every_variant_serves_its_metrics_and_names_itself(http_server: AppServer):
    before = scrape(http_server)
    for _ in range(5):
        assert get_fresh(http_server, "/api/ping").status_code == 200
    after = scrape(http_server)
    assert after[("realtime_django_server_info", frozenset({("server", http_server.server)}))] == 1
    assert counted(before, after, "http_requests_total", route="ping", method="GET", status="2xx") == 5
    assert counted(before, after, "http_request_duration_seconds_count", route="ping") == 5
    assert total(after, "process_resident_memory_bytes") > 0
    assert total(after, "realtime_django_server_processes") >= 1
    # Nothing is served on the app's own port: /metrics is the exporter's.
    assert http_server.get_status("/metrics") == 404


@pytest.mark.parametrize(
    "env", [{"METRICS": "0"}, {"PROMETHEUS_MULTIPROC_DIR": "/proc/no-such-folder"}], ids=["off", "unwritable"]
)
def test_without_metrics_the_server_still_serves(env: dict[str, str]):
    with AppServer("uvicorn", env=env) as app:
        assert get_fresh(app, "/api/ping").status_code == 200
        time.sleep(1)  # an exporter would be listening by now
        with pytest.raises(httpx.ConnectError):
            httpx.get(app.metrics_url, timeout=5)


# --- Two workers: the sum over every process -----------------------------------------------------------


async def _websocket_traffic(app: AppServer, sockets: int, frames: int, errors: dict[str, str]) -> None:
    """``sockets`` echo sockets, each sending ``frames`` good frames and every bad frame of ``errors``."""
    clients = [await ws_connect(app, "/ws/echo/") for _ in range(sockets)]
    for ws in clients:
        for n in range(frames):
            await send_json(ws, {"message": f"frame {n}"})
            assert await recv_json(ws) == {"message": f"frame {n}"}
        for code, frame in errors.items():
            await ws.send(frame)
            assert (await recv_json(ws))["code"] == code
    for ws in clients:
        await ws.close()
    # Refused: a foreign Origin, an unknown path, a bad room name.
    for path, options in [
        ("/ws/echo/", {"origin": "http://evil.example"}),
        ("/ws/nowhere/", {}),
        ("/ws/chat/a%20b/", {}),
    ]:
        with pytest.raises(InvalidStatus):
            await ws_connect(app, path, **options)


async def _chat_traffic(app: AppServer, messages: int) -> None:
    room = unique("metrics")
    alice, _ = await join(app, room)
    bob, _ = await join(app, room)
    for n in range(messages):
        await send_json(alice, {"message": f"hello {n}"})
        for ws in (alice, bob):
            frame = await recv_json(ws)
            assert frame["message"] == f"hello {n}"
            assert "broadcast_at" not in frame
    await alice.close()
    await bob.close()


BAD_FRAMES = {
    "invalid_json": "not json",
    "not_an_object": "[1, 2]",
    "missing_message": "{}",
    "invalid_message": '{"message": 42}',
    "empty_message": '{"message": " "}',
    "message_too_long": json.dumps({"message": "x" * 2001}),
    "binary_not_supported": b'{"message": "hi"}',
}


def test_known_traffic_is_counted_exactly_over_every_worker(workers: AppServer):
    before = scrape(workers)
    pids = serving_pids(workers, 40)
    assert len(set(pids)) == WORKERS, f"every request went to one worker: {set(pids)}"
    for _ in range(7):
        assert get_fresh(workers, "/api/ping-sync").status_code == 200
    assert get_fresh(workers, "/no/such/page").status_code == 404
    for _ in range(3):
        assert get_fresh(workers, "/readyz").status_code == 200
    sockets, frames = 6, 4
    asyncio.run(_websocket_traffic(workers, sockets, frames, BAD_FRAMES))
    asyncio.run(_chat_traffic(workers, messages=3))
    time.sleep(0.5)  # the servers deliver the last closes to the app
    after = scrape(workers)

    def delta(name: str, **labels: str) -> float:
        return counted(before, after, name, **labels)

    assert delta("http_requests_total", route="whoami", method="GET", status="2xx", handler="fast") == 40
    assert delta("http_requests_total", route="ping-sync", status="2xx") == 7
    assert delta("http_requests_total", route="none", status="4xx") == 1
    assert delta("http_request_duration_seconds_count", route="whoami") == 40
    assert delta("readiness_checks_total", dependency="database", result="ok") == 3
    assert delta("readiness_checks_total", dependency="channel_layer", result="ok") == 3
    assert delta("websocket_handshakes_accepted_total", route="echo") == sockets
    assert delta("websocket_handshakes_accepted_total", route="chat") == 2
    for reason in ("origin", "route", "room_name"):
        assert delta("websocket_handshakes_refused_total", reason=reason) == 1, reason
    assert delta("websocket_frames_received_total", route="echo") == sockets * (frames + len(BAD_FRAMES))
    assert delta("websocket_frames_sent_total", route="echo") == sockets * (frames + len(BAD_FRAMES))
    for code in BAD_FRAMES:
        assert delta("websocket_error_frames_total", code=code) == sockets, code
    assert delta("websocket_closes_total", route="echo", side="peer") == sockets
    assert delta("websocket_closes_total", route="echo", side="app") == 0
    assert total(after, "realtime_django_websocket_connections") == 0
    assert delta("chat_messages_stored_total") == 3
    assert delta("chat_broadcasts_total") == 3
    assert delta("chat_fanout_delivery_seconds_count") == 3 * 2
    assert delta("websocket_frames_sent_total", route="chat") == 2 + 3 * 2  # two histories, six deliveries
    assert total(after, "realtime_django_server_processes") >= WORKERS + 1  # the master and its workers


def test_the_database_pool_is_reported(workers: AppServer):
    for _ in range(4):
        assert get_fresh(workers, "/api/db").status_code == 200
    deadline = time.monotonic() + 15  # each worker reads its pool every 5 s
    while total(scrape(workers), "realtime_django_db_pool_connections") < 1:
        assert time.monotonic() < deadline, "no pooled connection reported"
        time.sleep(1)


# --- A worker killed and restarted -------------------------------------------------------------------------


def open_connections_by_worker(app: AppServer) -> dict[int, float]:
    """Each live worker's own count of open WebSockets, read from its file in the metrics folder."""
    by_pid = {}
    for path in Path(app.tmp, "prometheus").glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "realtime_django_websocket_connections":
                    by_pid[pid] = by_pid.get(pid, 0) + sample.value
    return by_pid


async def _open_echo_sockets(app: AppServer, count: int) -> list:
    return [await ws_connect(app, "/ws/echo/") for _ in range(count)]


async def _still_open(sockets: list) -> int:
    alive = 0
    for ws in sockets:
        try:
            await send_json(ws, {"message": "still there?"})
            await recv_json(ws, within=3)
            alive += 1
        except (ConnectionClosed, TimeoutError, OSError):
            pass
    return alive


def test_a_killed_worker_neither_loses_its_counts_nor_keeps_its_connections(workers: AppServer):
    loop = asyncio.new_event_loop()
    try:
        sockets = loop.run_until_complete(_open_echo_sockets(workers, 8))
        time.sleep(0.5)
        before = scrape(workers)
        assert total(before, "realtime_django_websocket_connections", route="echo") == 8
        holding = {pid: n for pid, n in open_connections_by_worker(workers).items() if n > 0}
        victim, victims_sockets = next(iter(holding.items()))
        os.kill(victim, signal.SIGKILL)
        time.sleep(1)
        assert loop.run_until_complete(_still_open(sockets)) == 8 - victims_sockets
        after = scrape(workers)
        # The dead worker's sockets are gone from the gauge; its counters stay in the totals.
        assert total(after, "realtime_django_websocket_connections", route="echo") == 8 - victims_sockets
        for name in ("http_requests_total", "websocket_handshakes_accepted_total"):  # none made meanwhile
            assert total(after, f"realtime_django_{name}") == total(before, f"realtime_django_{name}"), name
        # Its supervisor starts a new worker, which counts from zero beside the others.
        deadline = time.monotonic() + 30
        while len(set(serving_pids(workers, 10)) - {victim}) < WORKERS:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
        before_pings = scrape(workers)
        for _ in range(10):
            assert get_fresh(workers, "/api/ping").status_code == 200
        pings = counted(before_pings, scrape(workers), "http_requests_total", route="ping")
        assert pings == 10
        for ws in sockets:
            loop.run_until_complete(ws.close())
    finally:
        loop.close()
