"""HTTP over real sockets, against every server: probes, API views, Host validation, proxy trust."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.harness import AppServer, wait_until
from tests.integration.helpers import http, whoami

pytestmark = pytest.mark.integration


def test_healthz(http_server: AppServer) -> None:
    with http(http_server) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_with_both_dependencies_up(http_server: AppServer) -> None:
    with http(http_server) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}


@pytest.mark.parametrize("path", ["/api/ping", "/api/ping-sync"])
def test_ping(http_server: AppServer, path: str) -> None:
    with http(http_server) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"pong": True}
    assert response.headers["X-Request-ID"]


def test_request_id_from_the_proxy_is_kept(http_server: AppServer) -> None:
    with http(http_server) as client:
        response = client.get("/api/ping", headers={"X-Request-ID": "req-123.abc"})
    assert response.headers["X-Request-ID"] == "req-123.abc"


def test_db_reads_the_seeded_rows_from_postgresql(http_server: AppServer) -> None:
    with http(http_server) as client:
        response = client.get("/api/db")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert len(items) == 20
    assert [item["id"] for item in items] == sorted(item["id"] for item in items)
    assert items[0]["name"] == "Item 001"
    assert items[-1]["name"] == "Item 020"
    assert all(isinstance(item["price_cents"], int) for item in items)


def test_whoami_names_the_server_and_the_client(http_server: AppServer) -> None:
    body = whoami(http_server)
    assert body["server"] == http_server.server
    assert body["client_ip"] == "127.0.0.1"
    assert body["scheme"] == "http"
    assert body["http_version"] == "HTTP/1.1"


def test_forwarded_headers_are_believed_from_a_trusted_proxy(http_server: AppServer) -> None:
    # TRUSTED_PROXIES=127.0.0.1/32: this client is the proxy.
    headers = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    body = whoami(http_server, headers)
    assert body["client_ip"] == "6.6.6.6"
    assert body["scheme"] == "https"


@pytest.mark.parametrize("path", ["/api/ping", "/"])
def test_a_foreign_host_is_refused(http_server: AppServer, path: str) -> None:
    with http(http_server) as client:
        response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 400


def test_chat_page(http_server: AppServer) -> None:
    with http(http_server) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert "text/html" in response.headers["Content-Type"]
    assert response.headers["X-Frame-Options"] == "DENY"


DB_POOL_MAX_SIZE = 8  # settings.DATABASE_POOL_MAX_SIZE's default: the harness does not change it


def test_db_connections_stay_within_the_pool_and_are_returned(
    http_server: AppServer, database: psycopg.Connection
) -> None:
    """Concurrent /api/db requests: PostgreSQL sees at most the pool, and nothing is left checked out."""

    def fetch(_: int) -> int:
        with http(http_server) as client:
            return client.get("/api/db").status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(fetch, range(200)))
    assert statuses == [200] * 200

    def pool_sessions() -> list[tuple[str | None, object]]:
        query = "SELECT state, xact_start FROM pg_stat_activity WHERE application_name = %s"
        return database.execute(query, (http_server.server,)).fetchall()

    # The pool may still be growing in the background when the last response arrives; a backend
    # that is still starting up has no state yet. Wait for those, not for the ones under test.
    wait_until(
        lambda: all(state is not None for state, _ in pool_sessions()),
        timeout=5,
        what="the pool's new connections to finish starting",
    )
    sessions = pool_sessions()
    assert 0 < len(sessions) <= DB_POOL_MAX_SIZE
    # Returned to the pool: idle, no transaction left open.
    assert {state for state, _ in sessions} == {"idle"}
    assert {xact_start for _, xact_start in sessions} == {None}
