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


def communicator(
    path: str, *, origin: bytes | None = ORIGIN, host: bytes = b"localhost"
) -> WebsocketCommunicator:
    """A WebSocket client for the full ASGI application, with browser-like headers."""
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, path, headers=headers)
