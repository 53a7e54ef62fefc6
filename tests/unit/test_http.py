"""Every HTTP endpoint, through both Django handlers: async (ASGI) and sync (WSGI) clients."""

import ipaddress
import json
import logging
import logging.config
import sys

import pytest
from core.logging import RequestIdFilter
from django.conf import settings as django_settings
from django.test import AsyncClient, Client

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["async", "sync"])
async def get(request):
    """GET through the ASGI handler or the WSGI handler; returns the response."""
    if request.param == "async":
        client = AsyncClient()

        async def _get(path, **headers):
            return await client.get(path, headers=headers)
    else:
        client = Client()

        async def _get(path, **headers):
            from asgiref.sync import sync_to_async

            return await sync_to_async(client.get)(path, headers=headers)

    return _get


async def test_index_serves_the_chat_page(get):
    response = await get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "chat/chat.js" in page
    assert 'id="messages"' in page


async def test_healthz(get):
    response = await get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_everything_answers(get):
    response = await get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}


@pytest.mark.parametrize("path", ["/api/ping", "/api/ping-sync"])
async def test_ping(get, path):
    response = await get(path)
    assert response.status_code == 200
    assert response.json() == {"pong": True}
    assert response["Content-Type"] == "application/json"


async def test_db_reads_seeded_rows(get):
    response = await get("/api/db")
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 20
    assert items[0] == {"id": items[0]["id"], "name": "Item 001", "price_cents": 137}
    assert [item["id"] for item in items] == sorted(item["id"] for item in items)


async def test_whoami(get, settings):
    settings.SERVER_VARIANT = "uvicorn"
    body = (await get("/api/whoami")).json()
    assert body["server"] == "uvicorn"
    assert body["client_ip"] == "127.0.0.1"
    assert body["scheme"] == "http"
    assert isinstance(body["pid"], int)
    assert body["hostname"]
    assert body["http_version"].startswith("HTTP/1")


async def test_whoami_believes_forwarded_headers_from_a_trusted_proxy(get):
    body = (await get("/api/whoami", x_forwarded_for="203.0.113.9", x_forwarded_proto="https")).json()
    assert body["client_ip"] == "203.0.113.9"
    assert body["scheme"] == "https"


async def test_whoami_ignores_forwarded_headers_from_anyone_else(get, settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    body = (await get("/api/whoami", x_forwarded_for="6.6.6.6", x_forwarded_proto="https")).json()
    assert body["client_ip"] == "127.0.0.1"
    assert body["scheme"] == "http"


@pytest.mark.parametrize(
    "path", ["/", "/api/ping", "/api/ping-sync", "/api/db", "/api/whoami", "/healthz", "/readyz", "/nowhere"]
)
async def test_foreign_host_is_refused_on_every_path(get, path):
    response = await get(path, host="evil.example.com")
    assert response.status_code == 400


async def test_request_id_is_kept_from_the_proxy(get):
    response = await get("/api/ping", x_request_id="abc-123")
    assert response["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize("forged", ["x" * 65, "bad id", "a\nb"])
async def test_malformed_request_id_is_replaced(get, forged):
    response = await get("/api/ping", x_request_id=forged)
    assert response["X-Request-ID"] != forged
    assert len(response["X-Request-ID"]) == 32


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records():
    """Records as the stdout handler sees them: with the request id filter applied."""
    collector = Collector()
    logging.getLogger().addHandler(collector)
    yield collector.records
    logging.getLogger().removeHandler(collector)


async def test_log_lines_carry_the_request_id(get, log_records):
    response = await get("/no/such/page", x_request_id="trace-42")
    assert response.status_code == 404
    assert any(r.name == "django.request" and r.request_id == "trace-42" for r in log_records)


def test_json_log_format_is_one_line_with_the_traceback():
    formatter = logging.config.dictConfigClass({}).configure_formatter(
        django_settings.LOGGING["formatters"]["json"]
    )
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("test", logging.ERROR, __file__, 1, "failure", None, sys.exc_info())
    record.request_id = "-"
    line = formatter.format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "failure"
    assert payload["level"] == "ERROR"
    assert payload["request_id"] == "-"
    assert "boom" in payload["exc_info"]


async def test_security_headers(get):
    response = await get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


async def test_unknown_path_is_404_json_free(get):
    assert (await get("/nope")).status_code == 404


def test_https_switch_redirects_but_not_the_probes(settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/api/ping").status_code == 301
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/ping", headers={"x-forwarded-proto": "https"}).status_code == 200


def test_hsts_sent_once_over_https(settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    response = Client().get("/api/ping", headers={"x-forwarded-proto": "https"})
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.parametrize("path", ["/", "/api/ping", "/api/db", "/nowhere"])
async def test_responses_carry_their_content_length(get, path):
    response = await get(path)
    assert response["Content-Length"] == str(len(response.content))
