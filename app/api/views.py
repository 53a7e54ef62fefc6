"""Small JSON endpoints that isolate one path each: async, sync, database, and who serves."""

import os
import socket

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


async def db(request: HttpRequest) -> JsonResponse:
    """Reads a page of seeded rows through the ORM."""
    items = [
        {"id": item.id, "name": item.name, "price_cents": item.price_cents}
        async for item in Item.objects.order_by("id")[:DB_PAGE_SIZE]
    ]
    return JsonResponse({"items": items})


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
