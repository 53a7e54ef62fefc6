"""Django's security, CSRF and clickjacking middleware, without thread hops on the async path.

These are ``MiddlewareMixin`` classes. On an async request Django runs each of their hooks
through ``sync_to_async`` (``MiddlewareMixin.__acall__``, and ``adapt_method_mode`` for
``process_view``): two to three thread hops per middleware per request, for hooks that only read
headers and cookies and set headers. ``InlineHooks`` runs them directly on the event loop instead,
in the same order with the same arguments. On the sync (WSGI) path nothing changes.

Only middleware whose hooks do no I/O may use it. CSRF qualifies while the token lives in a cookie
(the default); with ``CSRF_USE_SESSIONS`` its hooks read the session store, so the inline variant
refuses to start (the stock class must be used then).
"""

from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, csrf, security


class InlineHooks:
    """Mixin (listed before the ``MiddlewareMixin`` class): hooks run on the loop when async."""

    get_response: Any

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]
        sync_view_hook = getattr(self, "process_view", None)
        if sync_view_hook is not None and iscoroutinefunction(self.get_response):
            # Django adapts a sync process_view with sync_to_async; an async one is awaited as is.
            async def process_view(request: HttpRequest, view: Any, args: Any, kwargs: Any) -> Any:
                return sync_view_hook(request, view, args, kwargs)

            self.process_view = process_view

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # MiddlewareMixin.__acall__ without the sync_to_async around the two hooks.
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    pass


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    def __init__(self, get_response: Any) -> None:
        if settings.CSRF_USE_SESSIONS:
            raise ImproperlyConfigured(
                "core.fastpath.middleware.CsrfViewMiddleware reads the CSRF token inline on the event "
                "loop; with CSRF_USE_SESSIONS the session store is I/O: use Django's own class"
            )
        super().__init__(get_response)


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass


# Django's class -> its inline variant; FastASGIHandler builds the chain with these.
INLINE_VARIANTS = {
    "django.middleware.security.SecurityMiddleware": SecurityMiddleware,
    "django.middleware.csrf.CsrfViewMiddleware": CsrfViewMiddleware,
    "django.middleware.clickjacking.XFrameOptionsMiddleware": XFrameOptionsMiddleware,
}


def inline_variant_paths(middleware: list[str]) -> list[str]:
    """``settings.MIDDLEWARE`` with each of Django's classes above replaced by its inline variant."""
    return [_dotted_path(INLINE_VARIANTS[path]) if path in INLINE_VARIANTS else path for path in middleware]


def _dotted_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
