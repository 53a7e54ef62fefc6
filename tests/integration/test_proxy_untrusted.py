"""Forwarded headers from a peer that is not a trusted proxy are ignored, by every server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.harness import SERVERS, AppServer
from tests.integration.helpers import recv_json, whoami, ws_connect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=SERVERS)
def untrusting_app(request: pytest.FixtureRequest) -> Iterator[AppServer]:
    """The app trusting only a proxy that is not us (SQLite and the in-memory layer: no services)."""
    with AppServer(request.param, env={"TRUSTED_PROXIES": "10.255.255.255/32"}) as app:
        yield app


def test_forged_forwarded_for_is_ignored(untrusting_app: AppServer) -> None:
    body = whoami(untrusting_app, {"X-Forwarded-For": "6.6.6.6"})
    assert body["server"] == untrusting_app.server
    assert body["client_ip"] == "127.0.0.1"


def test_forged_forwarded_proto_does_not_make_https(untrusting_app: AppServer) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "6.6.6.6"}
    body = whoami(untrusting_app, headers)
    assert body["scheme"] == "http"
    assert body["client_ip"] == "127.0.0.1"


async def test_websocket_still_works_with_forged_headers(untrusting_app: AppServer) -> None:
    ws: ClientConnection = await ws_connect(
        untrusting_app, "/ws/echo/", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    )
    async with ws:
        await ws.send('{"message": "hi"}')
        assert await recv_json(ws) == {"message": "hi"}
