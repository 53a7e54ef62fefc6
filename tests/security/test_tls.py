"""The HTTPS/WSS profile, `make up TLS=1`: Mozilla's intermediate TLS (1.2 and 1.3 only, its cipher
list), plain HTTP redirected, HSTS once, WSS chat, the page in a browser, secrets nowhere on disk."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness.browser import browser_available, headless_chromium
from tests.security.clients import chat_is_stored_and_broadcast, handshake_answer, http_client, whoami
from tests.security.hardening import secret_values, secrets_in_archive
from tests.security.stack import HOST, ROOT, TLS_CERTIFICATE, TLS_PRIVATE_KEY, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
TIMEOUT = 10.0


def client_context(maximum: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    """A client that offers every protocol version from TLS 1.0 up to ``maximum``.

    Security level 0 lets this OpenSSL offer TLS 1.0 and 1.1 at all (level 1 and up refuse them on
    the client side, and the server would never be asked).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(TLS_CERTIFICATE)
    context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    with warnings.catch_warnings():  # the old versions are deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    return context


def tls_handshake(port: int, context: ssl.SSLContext) -> str:
    """The protocol version agreed, or the reason the handshake failed (the server's alert)."""
    try:
        with (
            socket.create_connection((HOST, port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            return str(tls.version())
    except ssl.SSLError as error:
        return f"refused: {error.reason}"


V1_1, V1_2, V1_3 = ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
# (what the client offers, the answer). The refusals are alerts sent by Nginx, not local errors.
TLS_CASES = {
    "TLS 1.0 and 1.1 only": (V1_1, None, "refused: TLSV1_ALERT_PROTOCOL_VERSION"),
    "up to TLS 1.2": (V1_2, None, "TLSv1.2"),
    "up to TLS 1.3": (V1_3, None, "TLSv1.3"),
    "TLS 1.2, intermediate cipher": (V1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2"),
    "TLS 1.2, CBC cipher only": (V1_2, "ECDHE-ECDSA-AES128-SHA", "refused: SSLV3_ALERT_HANDSHAKE_FAILURE"),
    "TLS 1.2, RSA key exchange only": (V1_2, "AES128-GCM-SHA256", "refused: SSLV3_ALERT_HANDSHAKE_FAILURE"),
}


@pytest.mark.parametrize("case", TLS_CASES)
def test_protocols_and_ciphers(tls_stack: Stack, case: str):
    maximum, ciphers, expected = TLS_CASES[case]
    assert tls_handshake(tls_stack.port, client_context(maximum, ciphers)) == expected


@pytest.fixture
def tls_1_1_server(tls_stack: Stack) -> Iterator[int]:
    """A local server that speaks TLS 1.1 only, with the stack's certificate, for one handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS_CERTIFICATE, TLS_PRIVATE_KEY)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = V1_1
    listener = socket.create_server((HOST, 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(TIMEOUT)


def test_the_client_does_offer_tls_1_1(tls_1_1_server: int):
    """The refusal above is the server's: the same client completes TLS 1.1 where it is allowed."""
    assert tls_handshake(tls_1_1_server, client_context(V1_1)) == "TLSv1.1"


def test_plain_http_redirects_to_https(tls_stack: Stack):
    with httpx.Client(
        base_url=f"http://{HOST}:{tls_stack.http_port}", timeout=TIMEOUT, trust_env=False
    ) as http:
        response = http.get("/api/whoami?x=1")
        assert response.status_code == 301
        assert response.headers["location"] == f"https://{HOST}:{tls_stack.https_port}/api/whoami?x=1"
        assert "strict-transport-security" not in response.headers  # meaningless over plain HTTP
        # Health probes stay reachable inside the network, over plain HTTP.
        assert http.get("/healthz").status_code == 200
    # A WebSocket handshake on the plain port is redirected too, never upgraded.
    plain = Stack(tls_stack.server, tls_stack.project, tls_stack.http_port)
    assert handshake_answer(plain, "/ws/echo/", origin=f"https://{HOST}:{tls_stack.https_port}") == "HTTP 301"


@pytest.mark.parametrize("path", ["/", "/api/whoami", "/healthz"])
def test_hsts_exactly_once(tls_stack: Stack, path: str):
    settings = tls_stack.app_settings()
    with http_client(tls_stack) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert response.headers.get_list("strict-transport-security") == [
        f"max-age={settings['SECURE_HSTS_SECONDS']}; includeSubDomains"
    ]
    assert settings["SECURE_HSTS_SECONDS"] > 0


def test_the_app_sees_https(tls_stack: Stack):
    assert whoami(tls_stack)["scheme"] == "https"


def test_wss_chat(tls_stack: Stack):
    chat_is_stored_and_broadcast(tls_stack, f"over wss {uuid.uuid4().hex}")


def test_secure_settings_in_the_running_app(tls_stack: Stack):
    settings = tls_stack.app_settings()
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["CSRF_COOKIE_SECURE"] is True
    assert settings["SECURE_SSL_REDIRECT"] is True
    assert settings["ALLOWED_HOSTS"] and "*" not in settings["ALLOWED_HOSTS"]
    [container, *_] = tls_stack.containers("app")
    check = subprocess.run(
        ["docker", "exec", container, "python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # Every cookie the site sets over HTTPS is Secure (today it sets none).
    with http_client(tls_stack) as client:
        cookies = client.get("/").headers.get_list("set-cookie")
    assert all("; secure" in cookie.lower() for cookie in cookies), cookies


def test_no_secret_in_the_running_filesystems(tls_stack: Stack):
    """The containers' own filesystems (docker export: without the mounted secrets) hold none of them."""
    secrets = secret_values()
    assert {"tls_private_key.pem", "django_secret_key", "postgres_password"} <= set(secrets)
    for service in ("nginx", "app"):
        for container in tls_stack.containers(service):
            assert secrets_in_archive(["docker", "export", container], secrets) == []


# --- The page in a browser, over HTTPS and WSS ----------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    if not browser_available():
        pytest.skip("needs Debian's chromium and chromium-driver packages")
    # The certificate is self-signed: this browser trusts it the way a developer does once by hand.
    driver = headless_chromium("--ignore-certificate-errors")
    yield driver
    driver.quit()


def test_page_chats_over_wss_in_a_browser(tls_stack: Stack, browser: Any):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(tls_stack.base_url + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Connected"))
    assert browser.execute_script("return window.location.protocol") == "https:"
    field = browser.find_element(By.ID, "message")
    text = f"hello over wss from chromium on {tls_stack.server}"
    field.send_keys(text)
    field.submit()
    wait.until(
        lambda driver: any(
            text in li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li.message")
        )
    )
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / f"chat-tls-{tls_stack.server}.png"))
