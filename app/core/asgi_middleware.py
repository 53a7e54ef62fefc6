"""ASGI middleware for WebSocket scopes: the same proxy and Host rules as the HTTP middleware."""

import asyncio
import re
import uuid
from typing import Any

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from core.logging import request_id_var
from core.proxy import forwarded_client, is_trusted_proxy

Scope = dict[str, Any]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RefusedHandshakeMiddleware:
    """Ends a refused WebSocket handshake on every server.

    A ``websocket.close`` sent before ``websocket.accept`` refuses the handshake (HTTP 403), after
    which the ASGI spec has the server deliver ``websocket.disconnect``. Granian does not always
    deliver it, so the refusing app (Channels' ``WebsocketDenier``, a consumer, included) waits
    for it forever and the client's 403 never comes. After a refusal, this hands the app that
    disconnect itself. Once a handshake is accepted it only passes messages through.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        accepted = False
        refused = asyncio.Event()

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and not accepted:
                refused.set()
            await send(message)

        async def receive_until_refused() -> dict[str, Any]:
            if accepted:
                return await receive()
            if refused.is_set():
                return _REFUSED_DISCONNECT
            message = asyncio.ensure_future(receive())
            refusal = asyncio.ensure_future(refused.wait())
            await asyncio.wait({message, refusal}, return_when=asyncio.FIRST_COMPLETED)
            refusal.cancel()
            if message.done():
                return message.result()
            message.cancel()
            return _REFUSED_DISCONNECT

        await self.app(scope, receive_until_refused, watching_send)


# What a server delivers after a refused handshake: the connection closed abnormally (RFC 6455).
_REFUSED_DISCONNECT = {"type": "websocket.disconnect", "code": 1006}


class WebsocketProxyMiddleware:
    """Real client address from a trusted proxy, a request id for the connection's log lines."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        if is_trusted_proxy(peer):
            real = forwarded_client(peer, _header(scope, b"x-forwarded-for"))
            scope = {**scope, "client": (real, client[1] if client else 0)}
        else:
            dropped = {b"x-forwarded-for", b"x-forwarded-proto"}
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k not in dropped]}
        incoming = _header(scope, b"x-request-id") or ""
        token = request_id_var.set(incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex)
        try:
            await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)


class AllowedHostMiddleware:
    """Refuses a WebSocket handshake whose Host is not in ALLOWED_HOSTS (HTTP gets a 400 from Django)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        domain, _port = split_domain_port(_header(scope, b"host") or "")
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            denier = WebsocketDenier()
            await denier(scope, receive, send)
            return
        await self.app(scope, receive, send)
