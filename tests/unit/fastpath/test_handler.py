"""FastASGIHandler keeps Django's semantics: same answers, signals, errors, closing, connections."""

import json
import logging
import threading

import pytest
from api.models import Item
from core.fastpath import signals as moved
from core.fastpath.handler import FastASGIHandler
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper

from tests.unit.fastpath import urls as test_urls
from tests.unit.fastpath.asgi_client import request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast():
    handler = FastASGIHandler()
    yield handler
    moved.restore_receivers()


@pytest.fixture
def stock():
    moved.restore_receivers()
    return ASGIHandler()


@pytest.fixture
def test_views(settings):
    settings.ROOT_URLCONF = "tests.unit.fastpath.urls"
    test_urls.closed.clear()
    return test_urls.closed


# --- Threads: none for async work, one reused for sync work --------------------------------------


async def test_async_view_takes_no_thread(fast):
    for _ in range(5):
        assert (await request(fast, "/api/ping")).status == 200
    assert fast.threads.created == 0


async def test_sync_view_reuses_one_thread(fast):
    for _ in range(5):
        assert (await request(fast, "/api/ping-sync")).status == 200
    assert fast.threads.created == 1
    assert fast.threads.idle == 1


async def test_database_connection_is_returned_when_the_thread_is_given_back(fast, monkeypatch):
    """Django's end-of-request housekeeping runs on the thread that held the request's connection."""
    housekeeping: list[tuple[str, int]] = []
    original = BaseDatabaseWrapper.close_if_unusable_or_obsolete

    def spy(self):
        housekeeping.append((self.alias, threading.get_ident()))
        return original(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "close_if_unusable_or_obsolete", spy)
    await Item.objects.acreate(name="one more", price_cents=100)  # the seed rows may have been flushed
    housekeeping.clear()
    answer = await request(fast, "/api/db")
    assert answer.status == 200
    assert json.loads(answer.body)["items"]
    # The pool hands out its last thread first: the one that ran the query.
    worker = fast.threads.take()
    try:
        ident, still_open = worker.submit(
            lambda: (threading.get_ident(), connection.connection is not None)
        ).result(timeout=5)
    finally:
        fast.threads.give_back(worker)
    assert fast.threads.created == 1
    # Once when the request took the thread (request_started), once when it gave it back.
    assert housekeeping.count(("default", ident)) >= 2
    in_memory = getattr(connection, "is_in_memory_db", lambda: False)()
    if not in_memory:  # Django never closes an in-memory SQLite database
        assert still_open is False


# --- Signals still reach everyone else ------------------------------------------------------------


async def test_request_signals_reach_sync_and_async_receivers(fast):
    calls: list[tuple[str, str]] = []

    def sync_receiver(signal, **kwargs):
        calls.append(("sync", "started" if signal is signals.request_started else "finished"))

    async def async_receiver(signal, **kwargs):
        calls.append(("async", "started" if signal is signals.request_started else "finished"))

    for signal in (signals.request_started, signals.request_finished):
        signal.connect(sync_receiver)
        signal.connect(async_receiver)
    try:
        assert (await request(fast, "/api/ping")).status == 200
    finally:
        for signal in (signals.request_started, signals.request_finished):
            signal.disconnect(sync_receiver)
            signal.disconnect(async_receiver)
    assert sorted(calls) == sorted(
        [("sync", "started"), ("async", "started"), ("sync", "finished"), ("async", "finished")]
    )


async def test_djangos_own_receivers_are_moved_while_the_fast_handler_runs(fast):
    for signal, receivers in moved.MOVED_RECEIVERS.items():
        live_sync, live_async = signal._live_receivers(None)
        assert not set(receivers) & set(live_sync + live_async)


# --- Errors, closing, middleware ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/boom", "/boom-sync"])
async def test_an_exception_gives_a_500_and_a_log_line(fast, test_views, caplog, path):
    with caplog.at_level(logging.ERROR, logger="django.request"):
        answer = await request(fast, path)
    assert answer.status == 500
    errors = [record for record in caplog.records if record.name == "django.request"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


@pytest.mark.parametrize(
    ("path", "body", "resource"), [("/stream", b"one,two", "stream"), ("/file", b"file body", "file")]
)
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_streaming_and_file_responses_are_closed(fast, test_views, path, body, resource):
    answer = await request(fast, path)
    assert answer.status == 200
    assert answer.body == body
    assert test_views.get(resource) is True


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_content_length_only_where_the_body_is_known(fast, test_views):
    answer = await request(fast, "/post", method="POST", body=b"x")  # CSRF's 403, a page of its own
    assert answer.headers["content-length"] == str(len(answer.body))
    assert "content-length" not in (await request(fast, "/stream")).headers


# The same requests through Django's handler and the fast one: identical status and headers.
SAME_ANSWER_CASES = [
    pytest.param("GET", "/", {}, id="page"),
    pytest.param("GET", "/api/ping", {}, id="async-view"),
    pytest.param("GET", "/api/ping-sync", {}, id="sync-view"),
    pytest.param("GET", "/api/db", {}, id="database-view"),
    pytest.param("GET", "/healthz", {}, id="healthz"),
    pytest.param("GET", "/no/such/page", {}, id="not-found"),
    pytest.param("GET", "/api/ping", {"host": "evil.example"}, id="foreign-host"),
    pytest.param("POST", "/api/ping", {}, id="post-without-csrf-token"),
    pytest.param("GET", "/api/whoami", {"x-forwarded-for": "6.6.6.6"}, id="forwarded-for"),
]


@pytest.mark.parametrize(("method", "path", "headers"), SAME_ANSWER_CASES)
async def test_same_answer_as_djangos_handler(stock, method, path, headers):
    expected = await request(stock, path, method=method, headers=headers)
    fast = FastASGIHandler()
    try:
        answer = await request(fast, path, method=method, headers=headers)
    finally:
        moved.restore_receivers()
    varying = {"x-request-id", "set-cookie"}
    assert answer.status == expected.status
    assert {k: v for k, v in answer.headers.items() if k not in varying} == {
        k: v for k, v in expected.headers.items() if k not in varying
    }
    assert answer.body == expected.body


async def test_csrf_still_refuses_a_post_without_a_token(fast, test_views):
    refused = await request(fast, "/post", method="POST", body=b"x")
    assert refused.status == 403
    assert b"CSRF" in refused.body


async def test_middleware_hooks_run_on_the_event_loop(fast):
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    from django.middleware.security import SecurityMiddleware

    original = SecurityMiddleware.process_response

    def spy(self, request, response):
        seen.append(threading.current_thread())
        return original(self, request, response)

    SecurityMiddleware.process_response = spy
    try:
        assert (await request(fast, "/api/ping")).status == 200
    finally:
        SecurityMiddleware.process_response = original
    assert seen == [loop_thread]
