"""Django's database receivers of the request signals under WSGI, run only where they have work.

Django connects ``reset_queries`` and ``close_old_connections`` to ``request_started``, and
``close_old_connections`` to ``request_finished``. Each one looks up this thread's database
connections (``connections.all(initialized_only=True)``, an asgiref ``Local`` lookup): three
lookups per request, for the requests that never touch the database too. On /api/ping-sync they
were about a tenth of Django's time per request under WSGI.

They can only have work on a thread that has opened a database connection, and Django announces
each one it opens with ``connection_created``, sent on that thread. So each thread keeps a flag,
set by that signal (and at first, for a connection opened before this module was installed).
While it is set, both receivers run as Django's do; at a request's start, once they have run and
no connection is left open (the pool took it back at the end of the last request), it is cleared.
A thread that keeps a connection open across requests (``CONN_MAX_AGE`` without the pool) keeps
the flag set and runs them every time, as Django does.

Every other receiver of the two signals still gets them from Django as usual.
"""

import threading
from typing import Any

from django.core import signals
from django.db import close_old_connections, connections, reset_queries
from django.db.backends.signals import connection_created

# What Django 5.2 connects for the database; tests/unit/fastpath/test_django_guard.py checks it is still so.
REPLACED_RECEIVERS = (
    (signals.request_started, reset_queries),
    (signals.request_started, close_old_connections),
    (signals.request_finished, close_old_connections),
)


class _ThreadState(threading.local):
    may_hold_connection = True  # until a request start on this thread has looked


_state = _ThreadState()


def on_connection_created(**kwargs: Any) -> None:
    _state.may_hold_connection = True


def on_request_started(**kwargs: Any) -> None:
    if _state.may_hold_connection:
        reset_queries()
        close_old_connections()
        _state.may_hold_connection = any(
            conn.connection is not None for conn in connections.all(initialized_only=True)
        )


def on_request_finished(**kwargs: Any) -> None:
    if _state.may_hold_connection:
        close_old_connections()


def install() -> list[tuple[Any, Any]]:
    """Replace Django's receivers with these; returns those that were connected (for ``uninstall``)."""
    replaced = [(signal, receiver) for signal, receiver in REPLACED_RECEIVERS if signal.disconnect(receiver)]
    signals.request_started.connect(on_request_started)
    signals.request_finished.connect(on_request_finished)
    connection_created.connect(on_connection_created)
    return replaced


def uninstall(replaced: list[tuple[Any, Any]]) -> None:
    """Django's stock behaviour again (tests)."""
    signals.request_started.disconnect(on_request_started)
    signals.request_finished.disconnect(on_request_finished)
    connection_created.disconnect(on_connection_created)
    for signal, receiver in replaced:
        signal.connect(receiver)
