"""Throwaway services for integration tests and ``make test-services``.

Each service runs in its own temp dir and process group, on a free loopback port, logs to a file
(shown when it fails to start), and can be stopped and started again on the same port::

    with RedisServer() as redis, PostgresServer() as pg:
        with AppServer("uvicorn", redis_url=redis.url, database_url=pg.url) as app:
            ...
            redis.stop()   # an outage
            redis.start()  # back, same port

CLI: ``python -m tests.harness services -- <command...>`` (see ``tests/harness/__main__.py``).

Environment: ``HARNESS_KEEP=1`` keeps every temp dir (data, logs) for a post-mortem;
``HARNESS_APP_DIR=<dir>`` serves another copy of ``app/`` (e.g. a patched one) under the same tests;
``PG_BIN=<dir>`` picks the PostgreSQL binaries (default: the newest /usr/lib/postgresql/*/bin).
"""

from tests.harness._process import HarnessError, Service, live_services, wait_until
from tests.harness.app import HTTP_SERVERS, SERVERS, AppServer
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer

__all__ = [
    "HTTP_SERVERS",
    "SERVERS",
    "AppServer",
    "HarnessError",
    "PostgresServer",
    "RedisServer",
    "Service",
    "live_services",
    "wait_until",
]
