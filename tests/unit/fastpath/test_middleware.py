"""The inline middleware variants: hooks on the event loop when async, unchanged when sync."""

import pytest
from asgiref.sync import iscoroutinefunction
from core.fastpath.middleware import (
    INLINE_VARIANTS,
    CsrfViewMiddleware,
    SecurityMiddleware,
    XFrameOptionsMiddleware,
    inline_variant_paths,
)
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory


async def async_view(request):
    return HttpResponse("ok")


def sync_view(request):
    return HttpResponse("ok")


def test_paths_are_replaced_in_place_and_others_kept():
    stock = [
        "core.middleware.request_id_middleware",
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
    ]
    assert inline_variant_paths(stock) == [
        "core.middleware.request_id_middleware",
        "core.fastpath.middleware.SecurityMiddleware",
        "core.fastpath.middleware.CsrfViewMiddleware",
        "core.fastpath.middleware.XFrameOptionsMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
    ]
    assert set(INLINE_VARIANTS) == {path for path in stock if path.startswith("django.middleware.")}


def test_async_mode_has_an_async_view_hook():
    middleware = CsrfViewMiddleware(async_view)
    assert iscoroutinefunction(middleware)
    assert iscoroutinefunction(middleware.process_view)


def test_sync_mode_is_djangos():
    middleware = CsrfViewMiddleware(sync_view)
    assert not iscoroutinefunction(middleware)
    assert not iscoroutinefunction(middleware.process_view)


@pytest.mark.parametrize("variant", [SecurityMiddleware, XFrameOptionsMiddleware, CsrfViewMiddleware])
async def test_async_answer_equals_the_sync_one(variant, settings):
    settings.SECURE_SSL_REDIRECT = False
    request = RequestFactory().get("/", headers={"host": "localhost"})
    sync_response = variant(sync_view)(request)
    async_response = await variant(async_view)(RequestFactory().get("/", headers={"host": "localhost"}))
    assert dict(async_response.items()) == dict(sync_response.items())


def test_csrf_in_sessions_is_refused(settings):
    settings.CSRF_USE_SESSIONS = True
    with pytest.raises(ImproperlyConfigured, match="CSRF_USE_SESSIONS"):
        CsrfViewMiddleware(async_view)
