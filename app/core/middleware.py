"""The app's own HTTP middleware: small, and native on both the sync and the async path.

Each one is a plain function decorated with ``sync_and_async_middleware``, so under ASGI it runs
on the event loop (no thread hop) and under WSGI it runs inline.
"""

import time
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from core import metrics
from core.logging import request_id_from, request_id_var
from core.proxy import forwarded_client, is_trusted_proxy

GetResponse = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]


def _fix_proxy_headers(request: HttpRequest) -> None:
    meta = request.META
    peer = meta.get("REMOTE_ADDR")
    if is_trusted_proxy(peer):
        meta["REMOTE_ADDR"] = forwarded_client(peer, meta.get("HTTP_X_FORWARDED_FOR"))
    else:
        # Not from our proxy: these headers are the client's own claims, and Django would believe
        # X-Forwarded-Proto through SECURE_PROXY_SSL_HEADER.
        meta.pop("HTTP_X_FORWARDED_FOR", None)
        meta.pop("HTTP_X_FORWARDED_PROTO", None)


@sync_and_async_middleware
def trusted_proxy_middleware(get_response: GetResponse) -> GetResponse:
    """Real client address and scheme, believed only from ``TRUSTED_PROXIES`` (see core.proxy)."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            _fix_proxy_headers(request)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        _fix_proxy_headers(request)
        return get_response(request)

    return middleware


def _start_request_id(request: HttpRequest) -> str:
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    request_id = request_id_from(incoming)
    request.request_id = request_id  # type: ignore[attr-defined]
    return request_id


@sync_and_async_middleware
def request_id_middleware(get_response: GetResponse) -> GetResponse:
    """Tags the request, its log lines and its response with one id (Nginx's, when it sent one).

    The id is set and deliberately not reset on the way out: Django logs 4xx/5xx responses after
    the middleware chain has returned, and those lines must carry it too. Under ASGI every request
    runs in its own task context; under WSGI the next request on the thread overwrites it.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            request_id_var.set(_start_request_id(request))
            response = await get_response(request)
            response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        request_id_var.set(_start_request_id(request))
        response = get_response(request)
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response

    return middleware


def _set_content_length(response: HttpResponseBase) -> None:
    if not response.streaming and not response.has_header("Content-Length"):
        response.headers["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]


@sync_and_async_middleware
def content_length_middleware(get_response: GetResponse) -> GetResponse:
    """Content-Length on every response whose body is known (not streaming, not a file).

    Django's ASGI handler sends none, so every server framed each answer as chunked, and Nginx
    undid it. This is what Django's CommonMiddleware does for the header, without its URL
    rewriting (APPEND_SLASH, PREPEND_WWW, which this app does not want) and without its thread
    hops under ASGI, where it is a sync-only MiddlewareMixin class. It comes first in MIDDLEWARE,
    so it measures the body every other middleware has finished with.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            response = await get_response(request)
            _set_content_length(response)
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        _set_content_length(response)
        return response

    return middleware


@sync_and_async_middleware
def allowed_host_middleware(get_response: GetResponse) -> GetResponse:
    """Validates Host on every request.

    Django checks ``ALLOWED_HOSTS`` only when something calls ``request.get_host()``, which a plain
    view may never do. ``get_host()`` raises ``DisallowedHost``, which Django turns into a 400.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            request.get_host()
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        request.get_host()
        return get_response(request)

    return middleware


def _route(request: HttpRequest) -> str:
    """The URL pattern's name (bounded), never the path; ``none`` when no pattern matched."""
    match = request.resolver_match
    return (match.url_name or match.view_name) if match is not None else "none"


@sync_and_async_middleware
def metrics_middleware(get_response: GetResponse) -> GetResponse:
    """Counts every answer and its time (core/metrics.py). First in MIDDLEWARE: the time covers
    every other middleware, and the answers they give themselves (a 400 for a bad Host) are counted.
    """
    handler = "fast" if settings.ASGI_FAST_PATH else "django"
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            start = time.perf_counter()
            response = await get_response(request)
            seconds = time.perf_counter() - start
            metrics.http_request(
                _route(request), request.method or "", response.status_code, handler, seconds
            )
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        start = time.perf_counter()
        response = get_response(request)
        seconds = time.perf_counter() - start
        metrics.http_request(_route(request), request.method or "", response.status_code, handler, seconds)
        return response

    return middleware
