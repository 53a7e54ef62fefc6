"""The app under one of the stack's servers, run by its start file, on a free loopback port."""

from __future__ import annotations

import http.client
import os
import sys
from pathlib import Path

from stackctl import free_port, registry, variants
from tests.harness._process import HarnessError, Service

REPO_ROOT = Path(__file__).resolve().parents[2]
# HARNESS_APP_DIR runs another copy of the app (e.g. a patched one) with the same tests.
APP_DIR = Path(os.environ.get("HARNESS_APP_DIR") or REPO_ROOT / "app")
START_FILES = REPO_ROOT / "deploy" / "servers"  # deploy/servers/<name>.sh: how each server runs
TEST_SECRET_KEY = "harness-only-secret-key-never-used-outside-tests-0123456789abcdef"

# Each server runs from its own start file, as in production, with four differences: one process,
# listening on 127.0.0.1, its access log on, and a short graceful stop. SERVERS serve WebSockets
# themselves (every variant of deploy/servers.txt but the WSGI one, whose WebSockets go to a
# sidecar); HTTP_SERVERS are every variant.
HTTP_SERVERS = tuple(variants())
SERVERS = tuple(name for name, ws_server in registry().items() if ws_server == name)
PROCESSES = 1
GRACEFUL_TIMEOUT = 5
WS_MAX_MESSAGE_BYTES = 65_536  # the start files' default (common.sh)
LAYER_BACKEND_ENV = "TEST_CHANNEL_LAYER_BACKEND"

_INHERITED_PREFIXES_DROPPED = (
    "DJANGO_", "DATABASE_", "REDIS_", "CHANNEL_LAYER_", "CHAT_", "WS_", "READINESS_", "LOG_",
    "SQLITE_", "STATIC_", "GRANIAN_", "UVICORN_", "HYPERCORN_", "GUNICORN_", "DAPHNE_",
)  # fmt: skip
_INHERITED_NAMES_DROPPED = frozenset(
    {
        "SERVER", "TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS", "REQUEST_BODY_MAX_BYTES", "PORT",
        "WEB_CONCURRENCY", "BIND_HOST", "GRACEFUL_TIMEOUT", "KEEPALIVE_TIMEOUT", "SERVER_ACCESS_LOG",
        "ASGI_FAST_PATH", "PYTHONPATH", "METRICS", "METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR",
    }
)  # fmt: skip


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
        if server not in HTTP_SERVERS:
            raise HarnessError(f"unknown server {server!r}; known: {', '.join(HTTP_SERVERS)}")
        self.server = server
        self.name = server
        self.database_url = database_url
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.python = python or sys.executable
        self.app_dir = app_dir
        self.collectstatic = collectstatic
        super().__init__(port=port, keep=keep)
        self.metrics_port = free_port()  # the exporter's (deploy/servers/common.sh), kept across restarts

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
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

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
                # The start file's own variables: its commands from this interpreter's virtualenv,
                # the app importable as in the image (PYTHONPATH=/opt/stack/app).
                "PATH": f"{Path(self.python).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "PYTHONPATH": str(self.app_dir),
                "BIND_HOST": "127.0.0.1",
                "PORT": str(self.port),
                "WEB_CONCURRENCY": str(PROCESSES),
                "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
                "SERVER_ACCESS_LOG": "1",
                "TMPDIR": str(self.tmp),  # Hypercorn's start file writes its config file there
                "METRICS_PORT": str(self.metrics_port),
                "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "prometheus"),
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
        # As in the image's release task: the metrics folder is the server's (common.sh makes it).
        env = {key: value for key, value in self.environment().items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        options = {"cwd": self.app_dir, "env": env}
        self.run_step([*manage, "migrate", "--noinput", "-v", "0"], **options)
        if self.collectstatic:
            self.run_step([*manage, "collectstatic", "--noinput", "-v", "0"], **options)

    def command(self) -> list[str]:
        return [str(START_FILES / f"{self.server}.sh")]

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
