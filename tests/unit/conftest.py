import pytest
from channels.testing import WebsocketCommunicator
from config.asgi import application

ORIGIN = b"http://localhost"


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # The manifest storage needs collectstatic; unit tests render pages without it.
    settings.STORAGES = {"staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


def communicator(
    path: str, *, origin: bytes | None = ORIGIN, host: bytes = b"localhost"
) -> WebsocketCommunicator:
    """A WebSocket client for the full ASGI application, with browser-like headers."""
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, path, headers=headers)
