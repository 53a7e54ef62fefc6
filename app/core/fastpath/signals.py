"""Django's own receivers of the request signals, run by the handler where they cost nothing.

Django connects synchronous receivers to ``request_started`` (``reset_queries``,
``close_old_connections``) and to ``request_finished`` (``close_old_connections``,
``close_caches``, ``reset_urlconf``). Under ASGI, any synchronous receiver costs a thread hop per
request and signal, even for an async view that touches neither the database nor a cache, and
it is what makes Django start a thread for every request.

The fast path disconnects these and runs the same functions itself:

- Database connections are per thread, and the only thread on which a request can open one is
  its own request thread (``fastpath.threads``). So the database receivers run on that thread:
  when the request takes it, and when it gives it back. A request that never takes a thread has
  no connection to reset or close.
- ``reset_urlconf`` resets a context-local value: it runs inline, on the event loop.
- ``close_caches`` closes the cache connections opened in this request's context: it runs, on the
  request thread as Django would, only when an open cache has a connection to close.

Every other receiver, sync or async, still gets both signals from Django as usual.
"""

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.cache import caches, close_caches
from django.core.cache.backends.base import BaseCache
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, reset_queries
from django.urls import set_urlconf

# What Django 5.2 connects; tests/unit/fastpath/test_django_guard.py checks it is still so.
MOVED_RECEIVERS = {
    signals.request_started: (reset_queries, close_old_connections),
    signals.request_finished: (close_old_connections, close_caches, reset_urlconf),
}


def on_request_thread_taken() -> None:
    """What request_started's database receivers do, on the thread the request will use."""
    reset_queries()
    close_old_connections()


def on_request_thread_given_back() -> None:
    """What request_finished's database receiver does: return or close this thread's connections."""
    close_old_connections()


async def after_request_finished() -> None:
    """What request_finished's other receivers do, once the response is closed."""
    set_urlconf(None)
    if any(type(cache).close is not BaseCache.close for cache in caches.all(initialized_only=True)):
        # A cache with a connection to close (Redis, Memcached); the base class's close() is a no-op.
        await sync_to_async(close_caches)()


def move_receivers() -> None:
    """Disconnect Django's receivers from the request signals (the fast handler runs them)."""
    for signal, receivers in MOVED_RECEIVERS.items():
        for receiver in receivers:
            signal.disconnect(receiver)


def restore_receivers() -> None:
    """Reconnect them: Django's stock behaviour."""
    for signal, receivers in MOVED_RECEIVERS.items():
        for receiver in receivers:
            signal.connect(receiver)
