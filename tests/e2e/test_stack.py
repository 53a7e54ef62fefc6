"""Every variant through Nginx on the published port: pages, probes, WebSockets, replicas, proxy."""

import asyncio
import json
import re
import uuid

import httpx
import pytest
import websockets

from stackctl import Stack, registry
from stackctl.replicas import check_chat_crosses
from tests.e2e.conftest import ARTIFACTS, PROJECT, REPLICAS
from tests.nginx import access_log

pytestmark = pytest.mark.e2e
TIMEOUT = 10


def get(stack: Stack, path: str, **headers: str) -> httpx.Response:
    return httpx.get(stack.base_url + path, headers=headers, timeout=TIMEOUT)


def nginx_log_entry(stack: Stack, request_id: str) -> dict:
    """Nginx's JSON access-log line for one request id."""
    access_log.wait_until_flushed()
    for entry in access_log.entries(stack.logs("nginx")):
        if entry.get("request_id") == request_id:
            return entry
    raise AssertionError(f"request {request_id} is not in Nginx's access log")


def test_page_and_static_file_from_nginx(stack: Stack):
    page = get(stack, "/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # The page links the hashed name collected at build time (ManifestStaticFilesStorage).
    stylesheet = re.search(r'href="(/static/chat/chat\.[0-9a-f]{12}\.css)"', page.text)
    assert stylesheet, page.text[:500]
    css = get(stack, stylesheet.group(1))
    assert css.status_code == 200
    assert "#messages" in css.text
    assert "immutable" in css.headers["cache-control"]
    # Nginx answered from the static volume without asking an upstream; Django proxied the page.
    assert nginx_log_entry(stack, css.headers["x-request-id"])["upstream_addr"] == ""
    assert nginx_log_entry(stack, page.headers["x-request-id"])["upstream_addr"] != ""


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes(stack: Stack, path: str):
    response = get(stack, path)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


def test_whoami_names_the_variant(stack: Stack):
    body = get(stack, "/api/whoami").json()
    assert body["server"] == stack.server
    assert body["scheme"] == "http"


def test_forged_forwarded_headers_are_overwritten(stack: Stack):
    body = get(stack, "/api/whoami", **{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}).json()
    assert body["client_ip"] != "6.6.6.6"
    assert body["scheme"] == "http"


def test_api_endpoints(stack: Stack):
    assert get(stack, "/api/ping").json() == {"pong": True}
    assert get(stack, "/api/ping-sync").json() == {"pong": True}
    assert len(get(stack, "/api/db").json()["items"]) == 20


def test_every_replica_serves(stack: Stack):
    hostnames = {get(stack, "/api/whoami").json()["hostname"] for _ in range(20)}
    assert len(hostnames) == REPLICAS


async def _echo(stack: Stack) -> dict:
    async with websockets.connect(
        stack.ws_url + "/ws/echo/", origin=stack.base_url, open_timeout=TIMEOUT
    ) as ws:
        await ws.send(json.dumps({"message": "hello"}))
        return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


def test_metrics_on_the_backend_network_only(stack: Stack):
    # Nginx answers /metrics itself, with 404: the public site never shows them.
    response = get(stack, "/metrics")
    assert response.status_code == 404
    assert nginx_log_entry(stack, response.headers["x-request-id"])["upstream_addr"] == ""
    # Every app container (and the WebSocket sidecar) serves them on its backend address, published nowhere.
    for service in stack.app_services:
        variant = stack.server if service == "app" else registry()[stack.server]
        for container in stack.containers(service):
            ports = stack.inspect(container)["NetworkSettings"]["Ports"] or {}
            assert not any(ports.values()), f"{service} publishes {ports}"
            text = stack.metrics(container)
            assert f'realtime_django_server_info{{server="{variant}"}} 1.0' in text
            assert "realtime_django_http_requests_total{" in text


def test_echo_through_nginx(stack: Stack):
    assert asyncio.run(_echo(stack)) == {"message": "hello"}


async def _chat_pair(stack: Stack, room: str) -> tuple[dict, dict]:
    url = f"{stack.ws_url}/ws/chat/{room}/"
    async with (
        websockets.connect(url + "?name=alice", origin=stack.base_url, open_timeout=TIMEOUT) as alice,
        websockets.connect(url + "?name=bob", origin=stack.base_url, open_timeout=TIMEOUT) as bob,
    ):
        for ws in (alice, bob):
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "chat.history"
        await alice.send(json.dumps({"message": "hi bob"}))
        received = []
        for ws in (alice, bob):
            received.append(await _next_chat_message(ws))
        return received[0], received[1]


async def _next_chat_message(ws) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame.get("type") == "chat.message":
            return frame


def test_chat_through_nginx(stack: Stack):
    to_alice, to_bob = asyncio.run(_chat_pair(stack, f"e2e-{uuid.uuid4().hex[:8]}"))
    assert to_alice == to_bob
    assert to_alice["message"] == "hi bob"
    assert isinstance(to_alice["id"], int)


def test_chat_crosses_replicas(stack: Stack):
    containers = stack.containers(stack.ws_service)
    assert len(containers) == REPLICAS
    check_chat_crosses(containers, room=f"replicas-{uuid.uuid4().hex[:8]}")


# A real browser: headless Chromium loads the page through Nginx and chats over its WebSocket;
# the screenshot is kept under artifacts/.
def test_page_chats_over_its_websocket(stack: Stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(stack.base_url + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Connected"))
    field = browser.find_element(By.ID, "message")
    text = f"hello from chromium on {stack.server}"
    field.send_keys(text)
    field.submit()

    # The line turns from "sending" into a message once the server's broadcast acknowledges it.
    def acknowledged(driver) -> bool:
        lines = driver.find_elements(By.CSS_SELECTOR, "#messages li.message")
        return any(text in line.text for line in lines)

    wait.until(acknowledged)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"chat-{stack.server}.png"
    assert browser.save_screenshot(str(screenshot))


def test_make_down_leaves_no_container(stack: Stack):
    """Runs last in the module: stops this variant's stack and checks nothing is left running."""
    result = stack.make("down")
    assert result.returncode == 0, result.stderr
    assert stack.containers() == []
    assert PROJECT == "rtd-e2e"
