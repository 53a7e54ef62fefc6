"""Small JSON endpoints that isolate one path each: async, sync, database, and who serves."""

import os
import socket

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse

from api.models import Item

DB_PAGE_SIZE = 20
_HOSTNAME = socket.gethostname()


async def ping(request: HttpRequest) -> JsonResponse:
    """Async view, no I/O: the cost of the server and Django's async request path."""
    return JsonResponse({"pong": True})


def ping_sync(request: HttpRequest) -> JsonResponse:
    """The same as a sync view: the cost of the sync path (a thread hop under ASGI)."""
    return JsonResponse({"pong": True})


def _first_items() -> list[dict[str, object]]:
    return list(Item.objects.order_by("id").values("id", "name", "price_cents")[:DB_PAGE_SIZE])


async def db(request: HttpRequest) -> JsonResponse:
    """Reads a page of seeded rows through the ORM.

    The query runs in one sync function, one thread hop; iterating an async queryset would hop once
    per batch of rows.
    """
    return JsonResponse({"items": await sync_to_async(_first_items)()})


def _http_version(request: HttpRequest) -> str | None:
    scope = getattr(request, "scope", None)  # ASGI requests carry the server's scope
    if scope is not None:
        return f"HTTP/{scope['http_version']}" if "http_version" in scope else None
    return request.META.get("SERVER_PROTOCOL")  # WSGI


async def whoami(request: HttpRequest) -> JsonResponse:
    """Who served this request, and what Django believes about the client."""
    return JsonResponse(
        {
            "server": settings.SERVER_VARIANT,
            "hostname": _HOSTNAME,
            "pid": os.getpid(),
            "client_ip": request.META.get("REMOTE_ADDR"),
            "scheme": request.scheme,
            "http_version": _http_version(request),
        }
    )
