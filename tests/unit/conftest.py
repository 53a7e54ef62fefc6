import contextlib
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from config.asgi import application

ORIGIN = b"http://localhost"


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # The manifest storage needs collectstatic; unit tests render pages without it.
    settings.STORAGES = {"staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A new channel layer for every test. Each test runs in an event loop of its own, and a Redis
    layer's locks and connections belong to the loop that made them (make test-services)."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


# Every client made by ``communicator()`` in the running test (closed by ``close_communicators``).
_clients: list[WebsocketCommunicator] = []


def communicator(
    path: str, *, origin: bytes | None = ORIGIN, host: bytes = b"localhost", app: Any = application
) -> WebsocketCommunicator:
    """A WebSocket client for the ASGI application (or ``app`` around it), with browser-like headers."""
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    client = WebsocketCommunicator(app, path, headers=headers)
    _clients.append(client)
    return client


async def close_communicators() -> None:
    """Disconnect every client the test left open, as a browser closing its tab would.

    A consumer still running when the test's event loop closes would be cancelled together with its
    pending Redis read, and on Python 3.11 such a read can swallow the cancellation and block the
    loop's shutdown (make test-services). Disconnected, each consumer ends the way it does in
    production.
    """
    while _clients:
        client = _clients.pop()
        if not client.future.done():
            with contextlib.suppress(Exception):
                await client.disconnect(timeout=3)
        client.stop(exceptions=False)
