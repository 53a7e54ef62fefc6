"""Prometheus in the stack: ``make up MONITORING=1``, driven through stackctl like a user would.

With two replicas, Prometheus must find every replica of the app (and of the `ws` sidecar of the
gunicorn variant) and Nginx's exporter through Docker's DNS and scrape them all; known traffic must
show up in the scraped counters exactly, the recording rules must evaluate, and neither the app's
``/metrics`` nor Nginx's stub_status may be reachable through the published port. ``make down``
and ``make clean`` must take the profile's services (and Prometheus' volume) with them.

    MONITORING_VARIANTS=all      every variant (default: gunicorn, which has the sidecar, and uvicorn)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import websockets

from stackctl import Stack, free_port, selected_variants
from stackctl.stack import UP_TIMEOUT
from stackctl.testing import running

PROJECT = "rtd-monitoring"  # its own project: never the user's stack nor another suite's
REPLICAS = 2
VARIANTS = selected_variants("MONITORING_VARIANTS", "gunicorn,uvicorn")
METRICS_PORT = 9100  # METRICS_PORT's default, which deploy/prometheus/prometheus.yml scrapes
EXPORTER_PORT = 9113  # nginx-prometheus-exporter's
PINGS = 23  # requests to /api/ping: a number no health check or other caller makes
ECHOES = 3  # frames sent on one echo socket
TIMEOUT = 10  # seconds for one request or frame
# Seconds for Prometheus to see a change: DNS refresh (10 s) + scrapes (5 s) + a rule's 1-minute
# window filling (two points), with room for a slow machine.
SCRAPED_WITHIN = 120

# A first `make up` builds the app image (stackctl's UP_TIMEOUT), above pytest's default timeout.
pytestmark = pytest.mark.timeout(UP_TIMEOUT + 2 * SCRAPED_WITHIN)
e2e = pytest.mark.e2e
T = TypeVar("T")


@pytest.fixture(scope="module", params=VARIANTS)
def monitored(request: pytest.FixtureRequest) -> Iterator[Stack]:
    stack = Stack(
        request.param, PROJECT, http_port=free_port(), replicas=REPLICAS, prometheus_port=free_port()
    )
    with running(stack):
        yield stack


# --- Prometheus' HTTP API --------------------------------------------------------------------------


def api(stack: Stack, path: str, **params: str) -> Any:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/{path}", params=params, timeout=TIMEOUT)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def query(stack: Stack, promql: str) -> dict[frozenset[tuple[str, str]], float]:
    """An instant query's vector: each series' labels -> its value."""
    return {
        frozenset(sample["metric"].items()): float(sample["value"][1])
        for sample in api(stack, "query", query=promql)["result"]
    }


def eventually(check: Callable[[], T], what: str, timeout: float = SCRAPED_WITHIN) -> T:
    """``check()``'s value once it stops raising AssertionError; the last failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as failure:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}, after {timeout:.0f} s: {failure}") from failure
        time.sleep(2)


def backend_addresses(stack: Stack, service: str, port: int) -> set[str]:
    """``address:port`` of each running container of ``service`` on the stack's backend network."""
    addresses = set()
    for container in stack.containers(service):
        networks = stack.inspect(container)["NetworkSettings"]["Networks"]
        addresses.add(f"{networks[f'{stack.project}_backend']['IPAddress']}:{port}")
    return addresses


def expected_targets(stack: Stack) -> dict[str, set[str]]:
    """Each scrape job -> the address of every container it must scrape."""
    targets = {service: backend_addresses(stack, service, METRICS_PORT) for service in stack.app_services}
    targets["nginx"] = backend_addresses(stack, "nginx-exporter", EXPORTER_PORT)
    return targets


def healthy_targets(stack: Stack) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for target in api(stack, "targets", state="active")["activeTargets"]:
        if target["health"] == "up":
            found.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
    return found


# --- Traffic ---------------------------------------------------------------------------------------


async def _echo(stack: Stack, frames: int) -> None:
    async with websockets.connect(
        stack.ws_url + "/ws/echo/", origin=stack.base_url, open_timeout=TIMEOUT
    ) as ws:
        for number in range(frames):
            await ws.send(json.dumps({"message": f"hello {number}"}))
            await asyncio.wait_for(ws.recv(), TIMEOUT)


@pytest.fixture(scope="module")
def traffic(monitored: Stack) -> Stack:
    """Known traffic, once per stack: PINGS requests to /api/ping, one to /api/whoami, ECHOES
    frames on one socket."""
    with httpx.Client(base_url=monitored.base_url, timeout=TIMEOUT) as client:
        for _ in range(PINGS):
            assert client.get("/api/ping").status_code == 200
        assert client.get("/api/whoami").status_code == 200
    asyncio.run(_echo(monitored, ECHOES))
    return monitored


# --- The tests -------------------------------------------------------------------------------------


@e2e
def test_prometheus_runs_hardened_and_published_on_loopback_only(monitored: Stack):
    attributes = monitored.inspect(monitored.container("prometheus"))
    host = attributes["HostConfig"]
    assert attributes["Config"]["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] > 0
    assert attributes["State"]["Health"]["Status"] == "healthy"
    bindings = attributes["NetworkSettings"]["Ports"]["9090/tcp"]
    assert [(b["HostIp"], int(b["HostPort"])) for b in bindings] == [("127.0.0.1", monitored.prometheus_port)]
    exporter = monitored.inspect(monitored.container("nginx-exporter"))
    assert exporter["HostConfig"]["ReadonlyRootfs"] is True
    assert not any((exporter["NetworkSettings"]["Ports"] or {}).values())


@e2e
def test_every_replica_and_the_nginx_exporter_is_an_up_target(monitored: Stack):
    expected = expected_targets(monitored)
    assert len(expected["app"]) == REPLICAS
    assert len(expected.get("ws", expected["app"])) == REPLICAS
    assert len(expected["nginx"]) == 1

    def all_up() -> None:
        assert healthy_targets(monitored) == expected

    eventually(all_up, "Prometheus' healthy targets")
    up = query(monitored, "up")
    assert {dict(labels)["instance"]: value for labels, value in up.items()} == {
        instance: 1.0 for instances in expected.values() for instance in instances
    }


@e2e
def test_known_traffic_is_counted_exactly_over_the_replicas(traffic: Stack):
    def pings_counted() -> None:
        counted = query(traffic, 'sum(realtime_django_http_requests_total{job="app", route="ping"})')
        assert list(counted.values()) == [PINGS]

    eventually(pings_counted, f"{PINGS} requests to /api/ping in Prometheus")

    def frames_counted() -> None:
        promql = f'sum(realtime_django_websocket_frames_received_total{{job="{traffic.ws_service}"}})'
        assert list(query(traffic, promql).values()) == [ECHOES]

    eventually(frames_counted, f"{ECHOES} frames received by {traffic.ws_service}")


@e2e
def test_a_series_per_route_and_the_variant_per_replica(traffic: Stack):
    def routes() -> set[str]:
        found = query(traffic, 'count by (route) (realtime_django_http_requests_total{job="app"})')
        names = {dict(labels)["route"] for labels in found}
        assert {"ping", "whoami"} <= names, names
        return names

    eventually(routes, "a series per route")
    servers = query(traffic, 'realtime_django_server_info{job="app"}')
    assert sorted(dict(labels)["server"] for labels in servers) == [traffic.server] * REPLICAS


@e2e
def test_recording_rules_evaluate(traffic: Stack):
    # A rate needs the counter to grow between two scrapes within the window: the known traffic is
    # over already, and a series' first sample does not count as growth. So some pings each round.
    def recorded() -> None:
        with httpx.Client(base_url=traffic.base_url, timeout=TIMEOUT) as client:
            for _ in range(5):
                assert client.get("/api/ping").status_code == 200
        rate = query(traffic, 'job_route:realtime_django_http_requests:rate1m{job="app", route="ping"}')
        assert len(rate) == 1 and next(iter(rate.values())) > 0, rate
        p99 = query(
            traffic, 'job_route:realtime_django_http_request_duration_seconds:p99_rate1m{route="ping"}'
        )
        assert len(p99) == 1 and next(iter(p99.values())) > 0, p99

    eventually(recorded, "req/s and p99 of /api/ping recorded")
    groups = api(traffic, "rules")["groups"]
    unhealthy = [rule["name"] for group in groups for rule in group["rules"] if rule["health"] != "ok"]
    assert groups and unhealthy == []


@e2e
def test_nginx_counters_are_scraped(traffic: Stack):
    def counted() -> None:
        assert list(query(traffic, 'nginx_up{job="nginx"}').values()) == [1.0]
        requests = query(traffic, 'nginx_http_requests_total{job="nginx"}')
        assert len(requests) == 1 and next(iter(requests.values())) >= PINGS, requests

    eventually(counted, "Nginx's counters in Prometheus")


@e2e
@pytest.mark.parametrize("path", ["/metrics", "/stub_status"])
def test_no_metrics_through_the_published_port(monitored: Stack, path: str):
    response = httpx.get(monitored.base_url + path, timeout=TIMEOUT)
    assert response.status_code == 404
    assert "realtime_django_" not in response.text
    assert "Active connections" not in response.text
    nginx = monitored.inspect(monitored.container("nginx"))
    published = {port for port, bindings in nginx["NetworkSettings"]["Ports"].items() if bindings}
    assert published == {"8080/tcp"}, "only the site's port is published, never the status port"


@e2e
def test_make_down_and_clean_take_the_monitoring_services_along(monitored: Stack):
    """Runs last for each stack: `make down` stops every service, the profile's too, and keeps
    Prometheus' volume; `make clean` removes it. `make down` is given the project alone, as a user
    who no longer remembers having asked for MONITORING=1 types it."""
    result = monitored.run_make(["make", "--no-print-directory", "down", f"PROJECT={monitored.project}"], 300)
    assert result.returncode == 0, result.stderr
    assert monitored.containers(running=False) == []
    assert any(volume.endswith("_prometheus") for volume in volume_names(monitored))
    assert monitored.clean() == [], "make clean left something behind"
    assert volume_names(monitored) == []


def volume_names(stack: Stack) -> list[str]:
    return stack.docker(
        "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}"
    ).stdout.split()
