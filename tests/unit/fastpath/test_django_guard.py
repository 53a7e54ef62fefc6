"""What the fast path copies or relies on in Django and asgiref: a change there fails here.

When one of these fails after an upgrade, compare the new Django code with core/fastpath (the
docstring of each module says what it mirrors), adapt it, then update the fingerprint.
"""

import hashlib
import inspect

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.utils.deprecation import MiddlewareMixin

from tests.unit.fresh_process import request_signal_receivers

# sha256 of the source of each Django function the fast path mirrors or overrides (Django 5.2).
FINGERPRINTS = {
    "ASGIHandler.__call__": "f756809e9c9308dcccb78a301fccf09196e80cdc4745690f80384d09b69dd102",
    "ASGIHandler.handle": "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323",
    "MiddlewareMixin.__acall__": "adf8cbcaf9f11e45c4ac1953556ac422f2a6fe4193df5edbed186b2b66bea729",
    "BaseHandler.load_middleware": "a1fb7ee5f8586195da2174d1bbc2bbfc7ca19b9d26ea66412cb434f45bf6d467",
}


def fingerprint(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def test_mirrored_django_code_is_unchanged():
    current = {
        "ASGIHandler.__call__": fingerprint(ASGIHandler.__call__),
        "ASGIHandler.handle": fingerprint(ASGIHandler.handle),
        "MiddlewareMixin.__acall__": fingerprint(MiddlewareMixin.__acall__),
        "BaseHandler.load_middleware": fingerprint(BaseHandler.load_middleware),
    }
    assert current == FINGERPRINTS


def test_djangos_request_signal_receivers_are_the_moved_ones():
    """In a plain Django process (no fast handler), exactly what fastpath.signals moves is connected."""
    assert request_signal_receivers("import django; django.setup(); import django.core.handlers.base") == {
        "request_started": ["django.db.reset_queries", "django.db.close_old_connections"],
        "request_finished": [
            "django.db.close_old_connections",
            "django.core.cache.close_caches",
            "django.core.handlers.base.reset_urlconf",
        ],
    }


def test_asgiref_takes_an_executor_for_a_thread_sensitive_context():
    assert "executor" in inspect.signature(ThreadSensitiveContext).parameters
