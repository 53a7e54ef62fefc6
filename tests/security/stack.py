"""The compose stack under test, brought up with the Makefile as a user would, and read back from Docker.

Limits are read from the running stack (the app's settings, Nginx's rendered config), not restated
here, so the tests follow whatever the stack is configured with.
"""

from __future__ import annotations

import functools
import json
import os
import re
import ssl
import subprocess
from dataclasses import dataclass
from typing import Any

import stackctl
from stackctl import ROOT, run
from stackctl.host import LOOPBACK

HOST = LOOPBACK  # every request of these tests goes here, to the published port

SECRETS_DIR = ROOT / ".cache" / "secrets"  # where `make secrets` and `make tls-cert` write
TLS_CERTIFICATE = SECRETS_DIR / "tls_certificate.pem"
TLS_PRIVATE_KEY = SECRETS_DIR / "tls_private_key.pem"
BIND_ADDRESS = os.environ.get("HTTP_BIND") or "127.0.0.1"  # compose.yaml's default for HTTP_BIND


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker <args>`` on anything (images, networks, a stack's containers); ``check``: a failure
    fails the test with what Docker said."""
    result = run(["docker", *args], timeout=timeout)
    assert not check or result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result


@dataclass(frozen=True)
class Limits:
    """What the running stack enforces, as the app and Nginx were configured."""

    ws_max_message_bytes: int  # every server closes a bigger message with 1009
    chat_message_max_chars: int
    ws_rate_burst: int
    ws_rate_strikes: int
    body_max_bytes: int  # Nginx's client_max_body_size
    header_line_max_bytes: int  # Nginx's large_client_header_buffers size
    client_header_timeout: float  # seconds Nginx waits for a complete request header
    ws_conn_per_ip: int  # Nginx's limit_conn on /ws/
    ws_handshakes_per_second: float  # Nginx's limit_req rate on /ws/


# The app's view of its settings, printed from inside a running app container.
SETTINGS_SCRIPT = """
import json, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.conf import settings as s
print(json.dumps({name: getattr(s, name) for name in (
    "DEBUG", "ALLOWED_HOSTS", "WS_MAX_MESSAGE_BYTES", "CHAT_MESSAGE_MAX_CHARS", "WS_RATE_BURST",
    "WS_RATE_STRIKES", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS")}))
"""


class Stack(stackctl.Stack):
    """The stack as these tests read it: what the app and Nginx enforce, as they were configured."""

    def ssl_context(self) -> ssl.SSLContext | None:
        """Trusts the stack's own certificate, and only it."""
        return ssl.create_default_context(cafile=str(TLS_CERTIFICATE)) if self.tls else None

    @property
    def origin(self) -> str:
        """The Origin a browser on the site's page sends."""
        return self.base_url

    def app_settings(self) -> dict[str, Any]:
        return json.loads(self.exec_python(self.containers("app")[0], SETTINGS_SCRIPT))

    def nginx_config(self) -> str:
        """Nginx's rendered config (all files), as the running container uses it."""
        return self.exec("nginx", "sh", "-c", "cat /tmp/nginx/conf/*.conf")

    @functools.cached_property
    def limits(self) -> Limits:
        app = self.app_settings()
        conf = self.nginx_config()

        def directive(pattern: str) -> str:
            match = re.search(pattern, conf)
            assert match, f"{pattern!r} is not in Nginx's rendered config"
            return match.group(1)

        rate, unit = directive(r"zone=ws_handshake:\S+ rate=(\d+r/[sm]);").split("r/")
        return Limits(
            ws_max_message_bytes=app["WS_MAX_MESSAGE_BYTES"],
            chat_message_max_chars=app["CHAT_MESSAGE_MAX_CHARS"],
            ws_rate_burst=app["WS_RATE_BURST"],
            ws_rate_strikes=app["WS_RATE_STRIKES"],
            body_max_bytes=int(directive(r"client_max_body_size (\d+);")),
            header_line_max_bytes=int(directive(r"large_client_header_buffers \d+ (\d+)k;")) * 1024,
            client_header_timeout=float(directive(r"client_header_timeout (\d+)s;")),
            ws_conn_per_ip=int(directive(r"limit_conn ws_conn (\d+);")),
            ws_handshakes_per_second=int(rate) / (1 if unit == "s" else 60),
        )
