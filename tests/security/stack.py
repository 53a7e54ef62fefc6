"""The compose stack under test, brought up with the Makefile as a user would, and read back from Docker.

Limits are read from the running stack (the app's settings, Nginx's rendered config), not restated
here, so the tests follow whatever the stack is configured with.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECRETS_DIR = ROOT / ".cache" / "secrets"  # where `make secrets` and `make tls-cert` write
TLS_CERTIFICATE = SECRETS_DIR / "tls_certificate.pem"
TLS_PRIVATE_KEY = SECRETS_DIR / "tls_private_key.pem"
BIND_ADDRESS = os.environ.get("HTTP_BIND") or "127.0.0.1"  # compose.yaml's default for HTTP_BIND
HOST = "127.0.0.1"  # every request of these tests goes here, to the published port


def all_variants() -> list[str]:
    lines = (ROOT / "deploy" / "servers.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def selected_variants(variable: str, default: str) -> list[str]:
    """The variants named in ``variable`` (comma-separated, or ``all``), else ``default``."""
    raw = os.environ.get(variable) or default
    known = all_variants()
    chosen = known if raw.strip() == "all" else [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"{variable}: unknown variant(s) {unknown}; valid: {', '.join(known)} or all")
    return chosen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, errors="replace"
    )


def make(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


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


@dataclass(frozen=True)
class Stack:
    server: str
    project: str
    http_port: int
    https_port: int | None = None  # set when the stack runs with TLS=1

    @property
    def tls(self) -> bool:
        return self.https_port is not None

    @property
    def port(self) -> int:
        """The port clients use: HTTPS when TLS is on (plain HTTP only redirects there)."""
        return self.https_port if self.https_port is not None else self.http_port

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{HOST}:{self.port}"

    @property
    def origin(self) -> str:
        """The Origin a browser on the site's page sends."""
        return self.base_url

    def ssl_context(self) -> ssl.SSLContext | None:
        """Trusts the stack's own certificate, and only it."""
        return ssl.create_default_context(cafile=str(TLS_CERTIFICATE)) if self.tls else None

    # --- Docker -------------------------------------------------------------------------------------

    def containers(self, service: str | None = None, *, stopped: bool = False) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        return docker("ps", "-q", *(["-a"] if stopped else []), *filters).stdout.split()

    def inspect(self, containers: list[str]) -> list[dict[str, Any]]:
        return json.loads(docker("inspect", *containers).stdout) if containers else []

    def app_services(self) -> list[str]:
        """The services running the app image's servers: app, and ws with the gunicorn variant."""
        return ["app", "ws"] if self.containers("ws") else ["app"]

    def logs(self, service: str) -> str:
        """Everything the containers of one service wrote, stdout and stderr."""
        out = []
        for container in self.containers(service, stopped=True):
            result = docker("logs", container)
            out += [result.stdout, result.stderr]
        return "\n".join(out)

    def exec_python(self, service: str, script: str) -> str:
        """Runs a Python script in the first running container of ``service``; its stdout."""
        [container, *_] = self.containers(service)
        result = subprocess.run(
            ["docker", "exec", "-i", container, "python", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def app_settings(self) -> dict[str, Any]:
        return json.loads(self.exec_python("app", SETTINGS_SCRIPT))

    def nginx_config(self) -> str:
        """Nginx's rendered config (all files), as the running container uses it."""
        [container] = self.containers("nginx")
        return docker("exec", container, "sh", "-c", "cat /tmp/nginx/conf/*.conf").stdout

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
