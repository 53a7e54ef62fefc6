"""Under WSGI, Django's database receivers run only where they have work, with Django's semantics."""

import io
import json
import sys
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from api.models import Item
from core.fastpath import signals as moved
from core.fastpath import wsgi as fast_wsgi
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from tests.unit.fresh_process import request_signal_receivers


def on_new_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` on a thread of its own (a gthread worker thread, with no history), return its result."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    if errors:
        raise errors[0]
    return result[0]


def get(handler: WSGIHandler, path: str) -> tuple[str, bytes]:
    """One GET through the WSGI handler, closed by the "server" as Gunicorn does."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
    }
    answer: list[str] = []
    response = handler(environ, lambda status, headers, exc_info=None: answer.append(status))
    try:
        body = b"".join(response)
    finally:
        response.close()
    return answer[0], body


@pytest.fixture
def installed():
    moved.restore_receivers()  # Django's own receivers (the unit tests' ASGI application moved them)
    replaced = fast_wsgi.install()
    yield replaced
    fast_wsgi.uninstall(replaced)


class Housekeeping:
    """Stands in for the database: records each run of Django's two receivers, with whether a
    connection was open then. ``close_old_connections`` closes it, as the pool's CONN_MAX_AGE=0
    does, unless it is kept open (CONN_MAX_AGE > 0 without the pool)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.open = False
        self.keep_open = False

    def all(self, initialized_only: bool = False) -> list[Any]:
        return [SimpleNamespace(connection=object() if self.open else None)]

    def reset_queries(self) -> None:
        self.calls.append(("reset_queries", self.open))

    def close_old_connections(self) -> None:
        self.calls.append(("close_old_connections", self.open))
        self.open = self.open and self.keep_open

    def query(self, keep_open: bool = False) -> None:
        """What a first query does: opens a connection, and Django sends connection_created on this thread."""
        self.open, self.keep_open = True, keep_open
        connection_created.send(sender=BaseDatabaseWrapper, connection=None)


@pytest.fixture
def housekeeping(installed, monkeypatch) -> Housekeeping:
    database = Housekeeping()
    monkeypatch.setattr(fast_wsgi, "connections", database)
    monkeypatch.setattr(fast_wsgi, "reset_queries", database.reset_queries)
    monkeypatch.setattr(fast_wsgi, "close_old_connections", database.close_old_connections)
    return database


def started() -> None:
    signals.request_started.send(sender=WSGIHandler, environ={})


def finished() -> None:
    signals.request_finished.send(sender=WSGIHandler)


def test_a_thread_looks_once_then_requests_without_a_query_do_no_housekeeping(housekeeping):
    def requests() -> None:
        for _ in range(3):
            started()
            finished()

    on_new_thread(requests)
    # The first start looks (a connection may have been opened before); nothing was open: done.
    assert housekeeping.calls == [("reset_queries", False), ("close_old_connections", False)]


def test_a_query_gets_djangos_housekeeping_at_its_end_and_at_the_next_start(housekeeping):
    def requests() -> None:
        started()
        finished()
        housekeeping.calls.clear()
        started()
        housekeeping.query()
        finished()
        started()
        finished()
        started()  # the previous start found nothing open: nothing to do any more
        finished()

    on_new_thread(requests)
    assert housekeeping.calls == [
        ("close_old_connections", True),  # the end of the request that queried: the pool takes it back
        ("reset_queries", False),  # the next start: the query log cleared, as Django does
        ("close_old_connections", False),
    ]


def test_a_connection_kept_open_gets_housekeeping_on_every_request(housekeeping):
    def requests() -> None:
        started()
        housekeeping.query(keep_open=True)
        finished()
        housekeeping.calls.clear()
        for _ in range(2):
            started()
            finished()

    on_new_thread(requests)
    assert (
        housekeeping.calls
        == [
            ("reset_queries", True),
            ("close_old_connections", True),
            ("close_old_connections", True),
        ]
        * 2
    )


def test_the_flag_is_per_thread(housekeeping):
    on_new_thread(lambda: (started(), finished()))
    housekeeping.calls.clear()
    on_new_thread(lambda: (started(), finished()))  # another thread has not looked yet
    assert [name for name, _ in housekeeping.calls] == ["reset_queries", "close_old_connections"]


@pytest.mark.django_db(transaction=True)
def test_a_database_request_through_the_wsgi_handler_closes_on_its_own_thread(installed, monkeypatch):
    """/api/db (an async view, run by Django under WSGI through async_to_sync): its connection is
    opened on the request's thread, and Django's end-of-request housekeeping runs there."""
    Item.objects.create(name="one more", price_cents=100)
    closing: list[int] = []
    original = BaseDatabaseWrapper.close_if_unusable_or_obsolete

    def spy(self: BaseDatabaseWrapper) -> None:
        closing.append(threading.get_ident())
        original(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "close_if_unusable_or_obsolete", spy)
    handler = WSGIHandler()

    def request() -> tuple[int, str, bytes]:
        status, body = get(handler, "/api/db")
        return threading.get_ident(), status, body

    ident, status, body = on_new_thread(request)
    assert status.startswith("200") and json.loads(body)["items"]
    assert closing and set(closing) == {ident}


def test_other_receivers_still_get_both_signals(installed):
    calls: list[str] = []

    def receiver(signal: Any, **kwargs: Any) -> None:
        calls.append("started" if signal is signals.request_started else "finished")

    for signal in (signals.request_started, signals.request_finished):
        signal.connect(receiver)
    try:
        status, _ = on_new_thread(lambda: get(WSGIHandler(), "/api/ping-sync"))
    finally:
        for signal in (signals.request_started, signals.request_finished):
            signal.disconnect(receiver)
    assert status.startswith("200")
    assert calls == ["started", "finished"]


def test_the_replaced_receivers_are_djangos_database_ones():
    for signal, receiver in fast_wsgi.REPLACED_RECEIVERS:
        assert receiver in moved.MOVED_RECEIVERS[signal]  # which test_django_guard.py checks in Django


def test_the_wsgi_entry_point_installs_them():
    assert request_signal_receivers("import config.wsgi") == {
        "request_started": ["core.fastpath.wsgi.on_request_started"],
        "request_finished": [
            "django.core.cache.close_caches",
            "django.core.handlers.base.reset_urlconf",
            "core.fastpath.wsgi.on_request_finished",
        ],
    }
