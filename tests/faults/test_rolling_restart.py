"""Rolling restart: the app containers restarted one by one (REPLICAS=2) under a bounded HTTP load.

The HTTP load sees no failed request: each server drains its requests on SIGTERM, and Nginx retries
an idempotent request that hit a stopping replica on the other one (proxy_next_upstream). WebSocket
clients on a restarting replica are closed with the variant's code (tests/faults/expected.py). A
replica's address leaving or joining the DNS makes Nginx reload, and the old Nginx workers close
the WebSockets they still carry NGINX_SHUTDOWN_TIMEOUT later, with no close frame. Every client
reconnects: raw clients, the chat page in Chromium, and the Locust chat users.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.clients import (
    ClientsInBackground,
    HttpLoad,
    Outcome,
    ReconnectRecord,
    close_counts,
    failures,
    summary,
    unique_room,
)
from tests.faults.expected import ON_SIGTERM
from tests.faults.observers import ChatPage, LocustChat
from tests.faults.stack import TEST_TIMEOUT, Stack, stop_grace_period, wait_until
from tests.harness.browser import browser_available

pytestmark = [pytest.mark.faults, pytest.mark.timeout(TEST_TIMEOUT)]

CLIENTS = 6  # raw chat clients, spread over both replicas
RECONNECT_TIMEOUT = 60  # seconds for every client to be back after the last restart
LOCUST_USERS = 4


@dataclass
class RollingRestart:
    restarted: list[str]
    http: list[Outcome]
    clients: list[ReconnectRecord]
    page_statuses: list[str] | None  # None: no browser on this machine
    page_reconnected: bool
    locust_connects: int
    locust_drops: dict[str, int]
    locust_users: int
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def rolling_restart(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RollingRestart]:
    stack.wait_serving()
    room = unique_room("rolling")
    grace = int(stop_grace_period())
    workdir: Path = tmp_path_factory.mktemp(f"rolling-{stack.server}")
    locust = LocustChat(stack.base_url, workdir, users=LOCUST_USERS)
    page = ChatPage(stack.base_url, room) if browser_available() else None
    restarted: list[str] = []
    page_reconnected = False
    reloads_before = stack.nginx_reloads()
    with (
        HttpLoad(stack.base_url) as load,
        ClientsInBackground(stack.ws_url, stack.base_url, room, CLIENTS) as clients,
        locust,
    ):
        if page is not None:
            page.__enter__()
        try:
            wait_until(clients.all_connected, 30, "every chat client connected")
            time.sleep(2)  # the Locust users join too
            for service in stack.app_services:
                for container in stack.containers(service):
                    stack.docker("restart", "--time", str(grace), container, timeout=grace + 60)
                    stack.wait_container_healthy(container)
                    restarted.append(f"{service}:{container[:12]}")
            wait_until(clients.all_connected, RECONNECT_TIMEOUT, "every chat client reconnected")
            page_reconnected = page is None or _page_connected_again(page)
            wait_until(locust.all_back, RECONNECT_TIMEOUT, "every Locust user reconnected")
            time.sleep(3)  # a little more load on the restarted replicas
        finally:
            outcomes = load.stop()
            if page is not None:
                page.__exit__(None, None, None)
    yield RollingRestart(
        restarted=restarted,
        http=outcomes,
        clients=clients.records,
        page_statuses=page.statuses if page is not None else None,
        page_reconnected=page_reconnected,
        locust_connects=locust.connects(),
        locust_drops=locust.drops(),
        locust_users=LOCUST_USERS,
        notes={
            "locust_output": locust.output[-2000:],
            "nginx_reloads": stack.nginx_reloads() - reloads_before,
        },
    )


def _page_connected_again(page: ChatPage) -> bool:
    try:
        wait_until(
            lambda: page.status() == f"Connected to {page.room}", RECONNECT_TIMEOUT, "page reconnected"
        )
    except AssertionError:
        return False
    return True


def test_no_http_request_fails(rolling_restart: RollingRestart, stack: Stack, record) -> None:
    outcomes = rolling_restart.http
    served_by = {outcome.served_by for outcome in outcomes if outcome.served_by}
    record(
        restarted=rolling_restart.restarted,
        http=summary(outcomes),
        replicas_seen=len(served_by),
        nginx_reloads=rolling_restart.notes["nginx_reloads"],
    )
    assert len(rolling_restart.restarted) == len(stack.app_services) * 2
    assert outcomes, "the load sent no request"
    assert failures(outcomes) == [], summary(failures(outcomes))
    assert len(served_by) == 2  # both replicas served, before and after their restart


def test_websocket_clients_are_closed_and_reconnect(
    rolling_restart: RollingRestart, stack: Stack, record
) -> None:
    records = rolling_restart.clients
    record(clients=len(records), closes=close_counts(records), connects=sum(r.connects for r in records))
    clean = ON_SIGTERM[stack.server].close_codes
    codes = {code for client in records for code in client.closes}
    assert codes & clean, close_counts(records)  # the server's own close reached its clients
    assert codes <= clean | {None}, close_counts(records)  # None: an old Nginx worker's timeout
    for client in records:
        # Each close was followed by a reconnection, greeted with the room's history.
        assert client.connected and client.connects == len(client.closes) + 1, client
    # Every client sat on one of the replicas, which were all restarted.
    assert all(client.closes for client in records), close_counts(records)


def test_the_page_reconnects(rolling_restart: RollingRestart, record) -> None:
    if rolling_restart.page_statuses is None:
        pytest.skip("needs Debian's chromium and chromium-driver packages")
    record(page_statuses=rolling_restart.page_statuses)
    assert rolling_restart.page_reconnected, rolling_restart.page_statuses
    assert any("reconnecting" in status for status in rolling_restart.page_statuses)


def test_the_locust_chat_users_reconnect(rolling_restart: RollingRestart, record) -> None:
    record(locust_connects=rolling_restart.locust_connects, locust_drops=rolling_restart.locust_drops)
    dropped = sum(rolling_restart.locust_drops.values())
    assert dropped > 0, rolling_restart.notes["locust_output"]
    # Every drop was followed by a new handshake.
    assert rolling_restart.locust_connects >= rolling_restart.locust_users + dropped, rolling_restart.notes
