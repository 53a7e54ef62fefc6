"""ASGI middleware for WebSocket scopes: the same proxy and Host rules as the HTTP middleware."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from core import metrics
from core.logging import request_id_from, request_id_var
from core.proxy import forwarded_client, is_trusted_proxy

Scope = dict[str, Any]
logger = logging.getLogger(__name__)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def refusal(reason: str) -> Callable[[Scope, Any, Any], Awaitable[None]]:
    """An ASGI app that refuses a WebSocket handshake (the server answers HTTP 403) and returns at once.

    For the refusals this app makes itself (unknown path, bad room name, Host or Origin not
    allowed): unlike Channels' ``WebsocketDenier``, a consumer, it opens no channel on the channel
    layer, so a refused handshake costs no Redis call. It is counted by ``reason`` (core/metrics.py).
    """

    async def refuse(scope: Scope, receive: Any, send: Any) -> None:
        metrics.ws_refused(reason)
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})

    return refuse


deny = refusal("route")  # no consumer for this path
deny_host = refusal("host")
deny_origin = refusal("origin")


class RefusedHandshakeMiddleware:
    """Ends a refused WebSocket handshake on every server, at once.

    A ``websocket.close`` sent before ``websocket.accept`` refuses the handshake (HTTP 403). Granian
    sends that 403 only once the application returns, and after a refusal it does not always
    deliver the ``websocket.disconnect`` the ASGI spec promises, so a refusing consumer (Channels'
    ``WebsocketDenier`` for a foreign Origin, say) would wait, and the client with it. This runs the
    application in a task of its own and returns to the server as soon as the handshake is refused;
    the application then gets that disconnect from here and winds down in the background. Once a
    handshake is accepted, it only passes messages through and waits for the application.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        accepted = False
        refused = asyncio.Event()
        decided = asyncio.Event()  # accepted or refused

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if not decided.is_set():
                if message["type"] == "websocket.accept":
                    accepted = True
                    decided.set()
                elif message["type"] == "websocket.close":
                    refused.set()
                    decided.set()
            await send(message)

        async def receive_until_refused() -> dict[str, Any]:
            if accepted:
                return await receive()
            if refused.is_set():
                return _REFUSED_DISCONNECT
            message = asyncio.ensure_future(receive())
            refused_wait = asyncio.ensure_future(refused.wait())
            await asyncio.wait({message, refused_wait}, return_when=asyncio.FIRST_COMPLETED)
            refused_wait.cancel()
            if message.done():
                return message.result()
            message.cancel()
            return _REFUSED_DISCONNECT

        app = asyncio.ensure_future(self.app(scope, receive_until_refused, watching_send))
        decision = asyncio.ensure_future(decided.wait())
        try:
            await asyncio.wait({app, decision}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server stops the connection during the handshake: so does the application.
            decision.cancel()
            app.cancel()
            await app
            return
        decision.cancel()
        if refused.is_set() and not app.done():
            # The server answers the refusal now; the application winds down in the background.
            _winding_down.add(app)
            app.add_done_callback(_wound_down)
            return
        # Accepted (or the application ended). Awaiting the task passes a server's cancellation on
        # to it, and its outcome back: a PortableConsumer stopped by its server closes 1012 and
        # returns normally, as it does without this middleware.
        await app


# What a server delivers after a refused handshake: the connection closed abnormally (RFC 6455).
_REFUSED_DISCONNECT = {"type": "websocket.disconnect", "code": 1006}

# Applications still winding down after a refused handshake (a reference keeps each task alive).
_winding_down: set[asyncio.Task[None]] = set()


def _wound_down(app: asyncio.Task[None]) -> None:
    _winding_down.discard(app)
    if not app.cancelled() and app.exception() is not None:
        logger.error("WebSocket application failed after a refused handshake", exc_info=app.exception())


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
        token = request_id_var.set(request_id_from(incoming))
        try:
            await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)


class AllowedOriginMiddleware:
    """Refuses a handshake whose Origin does not name an allowed host (or that has none).

    The decision is Channels' own: ``AllowedHostsOriginValidator``'s ``valid_origin``, which also
    stays in the stack behind this one. Only the refusal differs: Channels refuses with
    ``WebsocketDenier``, a consumer that opens a channel on the layer (a Redis read per refused
    handshake); ``refusal`` opens none.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.validator = AllowedHostsOriginValidator(app)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        origin = _header(scope, b"origin")
        if self.validator.valid_origin(urlparse(origin) if origin is not None else None):
            await self.app(scope, receive, send)
        else:
            await deny_origin(scope, receive, send)


class AllowedHostMiddleware:
    """Refuses a WebSocket handshake whose Host is not in ALLOWED_HOSTS (HTTP gets a 400 from Django)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        domain, _port = split_domain_port(_header(scope, b"host") or "")
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            await deny_host(scope, receive, send)
            return
        await self.app(scope, receive, send)
