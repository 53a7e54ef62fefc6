"""The app under one of the real ASGI servers, on a free loopback port."""

from __future__ import annotations

import http.client
import os
import sys
from pathlib import Path

from tests.harness._process import HarnessError, Service

REPO_ROOT = Path(__file__).resolve().parents[2]
# HARNESS_APP_DIR runs another copy of the app (e.g. a patched one) with the same tests.
APP_DIR = Path(os.environ.get("HARNESS_APP_DIR") or REPO_ROOT / "app")
ASGI_APP = "config.asgi:application"
TEST_SECRET_KEY = "harness-only-secret-key-never-used-outside-tests-0123456789abcdef"

# Every server the stack runs over ASGI. The command lines follow deploy/servers/<name>.sh (same
# WebSocket size limit, pings, proxy-header and lifespan settings), with two differences: one
# process, bound to 127.0.0.1. Proxy headers are left to the app (TRUSTED_PROXIES): uvicorn, which
# would otherwise rewrite the client address itself for 127.0.0.1, is told not to.
SERVERS = ("uvicorn", "daphne", "hypercorn", "granian")
DAPHNE_RUNNER = REPO_ROOT / "deploy" / "bin" / "run_daphne.py"  # Daphne with its close codes fixed
WS_MAX_MESSAGE_BYTES = 65_536
WS_PING_INTERVAL = 20
GRACEFUL_TIMEOUT = 5
LAYER_BACKEND_ENV = "TEST_CHANNEL_LAYER_BACKEND"


def server_command(server: str, python: str, port: int, workdir: Path) -> list[str]:
    """The command serving the app on 127.0.0.1:port; ``workdir`` takes any config file it needs."""
    host = "127.0.0.1"
    size = str(WS_MAX_MESSAGE_BYTES)
    ping = str(WS_PING_INTERVAL)
    grace = str(GRACEFUL_TIMEOUT)
    if server == "uvicorn":
        return [
            python, "-m", "uvicorn", ASGI_APP, "--host", host, "--port", str(port),
            "--ws", "wsproto", "--ws-max-size", size,
            "--ws-ping-interval", ping, "--ws-ping-timeout", ping, "--ws-per-message-deflate", "false",
            "--timeout-graceful-shutdown", grace, "--no-proxy-headers", "--lifespan", "off",
        ]  # fmt: skip
    if server == "daphne":
        runner = [python, str(DAPHNE_RUNNER)] if DAPHNE_RUNNER.exists() else [python, "-m", "daphne"]
        return [
            *runner, "-b", host, "-p", str(port),
            "--websocket-max-message-size", size, "--websocket-max-frame-size", size,
            "--ping-interval", ping, "--ping-timeout", ping, "--websocket_timeout", "-1",
            "--application-close-timeout", grace, "--access-log", "-", ASGI_APP,
        ]  # fmt: skip
    if server == "hypercorn":
        config = workdir / "hypercorn.toml"
        config.write_text(
            f'bind = ["{host}:{port}"]\n'
            f"workers = 1\n"
            f"websocket_max_message_size = {size}\n"
            f"websocket_ping_interval = {ping}\n"
            f"graceful_timeout = {grace}\n"
            'accesslog = "-"\n'
            'errorlog = "-"\n'
        )
        return [python, "-m", "hypercorn", "--config", str(config), ASGI_APP]
    if server == "granian":
        return [
            python, "-m", "granian", "--interface", "asgi", "--host", host, "--port", str(port),
            "--workers", "1", "--http", "1", "--ws", "--no-reload", "--access-log", ASGI_APP,
        ]  # fmt: skip
    raise HarnessError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")


_INHERITED_PREFIXES_DROPPED = (
    "DJANGO_", "DATABASE_", "REDIS_", "CHANNEL_LAYER_", "CHAT_", "WS_", "READINESS_", "LOG_",
    "SQLITE_", "STATIC_", "GRANIAN_", "UVICORN_", "HYPERCORN_", "GUNICORN_",
)  # fmt: skip
_INHERITED_NAMES_DROPPED = frozenset(
    {"SERVER", "TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS", "REQUEST_BODY_MAX_BYTES", "PORT", "WEB_CONCURRENCY"}
)


class AppServer(Service):
    """``manage.py migrate`` (and ``collectstatic``), then the server; ready when /healthz answers 200."""

    stop_timeout = 15.0

    def __init__(
        self,
        server: str,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        keep: bool | None = None,
        python: str | None = None,
        app_dir: Path = APP_DIR,
        collectstatic: bool = True,
    ) -> None:
        if server not in SERVERS:
            raise HarnessError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")
        self.server = server
        self.name = server
        self.database_url = database_url
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.python = python or sys.executable
        self.app_dir = app_dir
        self.collectstatic = collectstatic
        super().__init__(port=port, keep=keep)

    # --- Addresses ---------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The Origin a browser on this site sends (the server refuses any other)."""
        return self.url

    # --- Service -----------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        # Hermetic: none of the caller's app or server settings leak in (make test-services exports
        # DATABASE_URL and REDIS_URL, a developer's shell may have anything).
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_INHERITED_PREFIXES_DROPPED) and key not in _INHERITED_NAMES_DROPPED
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DJANGO_SECRET_KEY": TEST_SECRET_KEY,
                "DJANGO_HTTPS": "0",
                "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
                "SERVER": self.server,
                "TRUSTED_PROXIES": "127.0.0.1/32",
                "STATIC_ROOT": str(self.tmp / "static"),
                "LOG_LEVEL": "INFO",
                "WS_MAX_MESSAGE_BYTES": str(WS_MAX_MESSAGE_BYTES),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        else:
            env["SQLITE_PATH"] = str(self.tmp / "db.sqlite3")  # never the repository's app/db.sqlite3
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.server == "granian":  # no WebSocket pings in granian: the app sends heartbeats
            env["WS_APP_HEARTBEAT"] = str(WS_PING_INTERVAL)
        # The whole suite can run on the other channel layer: TEST_CHANNEL_LAYER_BACKEND=core|pubsub.
        backend = os.environ.get(LAYER_BACKEND_ENV)
        if backend:
            env["CHANNEL_LAYER_BACKEND"] = backend
        env.update(self.extra_env)
        return env

    def cwd(self) -> Path:
        return self.app_dir

    def before_start(self) -> None:
        if self.process is not None:  # a restart: already migrated
            return
        manage = [self.python, "manage.py"]
        options = {"cwd": self.app_dir, "env": self.environment()}
        self.run_step([*manage, "migrate", "--noinput", "-v", "0"], **options)
        if self.collectstatic:
            self.run_step([*manage, "collectstatic", "--noinput", "-v", "0"], **options)

    def command(self) -> list[str]:
        return server_command(self.server, self.python, self.port, self.tmp)

    def ready(self) -> bool:
        try:
            return self.get_status("/healthz") == 200
        except OSError:
            return False

    def get_status(self, path: str, timeout: float = 2.0) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": self.host})
            return conn.getresponse().status
        finally:
            conn.close()
