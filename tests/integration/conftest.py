"""Fixtures: throwaway Redis and PostgreSQL for the session, app servers per module and per server."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import psycopg
import pytest

from tests.harness import HTTP_SERVERS, SERVERS, AppServer, PostgresServer, RedisServer, live_services


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as redis:
        yield redis


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as postgres:
        yield postgres


def serving(server: str, redis: RedisServer, postgres: PostgresServer) -> Iterator[AppServer]:
    with AppServer(server, redis_url=redis.url, database_url=postgres.url) as app:
        yield app


@pytest.fixture(scope="module", params=SERVERS)
def app_server(
    request: pytest.FixtureRequest, redis_server: RedisServer, postgres_server: PostgresServer
) -> Iterator[AppServer]:
    """The app under each server that serves WebSockets, on the session's Redis and PostgreSQL."""
    yield from serving(request.param, redis_server, postgres_server)


@pytest.fixture(scope="module", params=HTTP_SERVERS)
def http_server(
    request: pytest.FixtureRequest, redis_server: RedisServer, postgres_server: PostgresServer
) -> Iterator[AppServer]:
    """The app under every server, the WSGI one included, for what is HTTP only."""
    yield from serving(request.param, redis_server, postgres_server)


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[psycopg.Connection]:
    """A direct connection to the app's database (not through the app)."""
    with postgres_server.connect() as conn:
        yield conn


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """A failing test's report carries the last log lines of every service still running."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and not hasattr(report, "wasxfail"):
        for service in live_services():
            report.sections.append((f"harness: {service.describe()}", service.log_excerpt(40)))
