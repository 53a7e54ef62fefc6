"""The compose stack under test, brought up and driven with the Makefile's own commands.

Every compose command goes through ``make compose ARGS=...``, so it runs with the project, files
and profiles ``make up`` used. Every other command is ``docker`` on this project's containers only.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "rtd-faults"  # never the user's own stack (realtime-django), nor another test's
REPLICAS = 2
ARTIFACTS = ROOT / "artifacts" / "faults"
T = TypeVar("T")

# CI runs these; `FAULT_VARIANTS="..."` (or "all") picks others. Daphne: the app-side shutdown path
# (Daphne cancels connections) and a supervisor of its own (deploy/bin/prefork.py). gunicorn: sync
# WSGI workers for HTTP and a separate WebSocket service (the Uvicorn sidecar), so every fault hits
# two app services and Uvicorn's own shutdown path. The other four run locally (README table).
DEFAULT_FAULT_VARIANTS = "daphne gunicorn"

# The stacks under test differ from the defaults only here. Every client of a test reaches Nginx
# from one address, so the per-address limits are raised; memberships of killed processes age out
# within a test's patience (the default is 120 s).
STACK_ENV = {
    "CHANNEL_LAYER_GROUP_EXPIRY": "15",
    "API_RATE": "2000r/s",
    "API_BURST": "2000",
    "WS_HANDSHAKE_RATE": "500r/s",
    "WS_HANDSHAKE_BURST": "500",
}
GROUP_EXPIRY = float(STACK_ENV["CHANNEL_LAYER_GROUP_EXPIRY"])
TEST_ONLY_ENV = frozenset({"LOG_LEVEL", "DJANGO_SECRET_KEY", "DJANGO_HTTPS", "DJANGO_SETTINGS_MODULE"})

HEALTHY_TIMEOUT = 240  # seconds for `make up` / a restarted container to be healthy (shared CPUs)
COMMAND_TIMEOUT = 600
READYZ_TIMEOUT = 30
# Per test, its stack's `make up` included (pytest-timeout's default of 120 s is for quick tests).
TEST_TIMEOUT = 1200


def registry() -> dict[str, str]:
    """deploy/servers.txt: variant -> the variant serving its WebSockets."""
    variants: dict[str, str] = {}
    for line in (ROOT / "deploy" / "servers.txt").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            variants[fields[0]] = fields[1]
    return variants


def fault_variants() -> list[str]:
    requested = os.environ.get("FAULT_VARIANTS", DEFAULT_FAULT_VARIANTS).replace(",", " ").split()
    known = list(registry())
    if requested == ["all"]:
        return known
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise ValueError(f"FAULT_VARIANTS names unknown variants {unknown}; known: {known}")
    return requested


def stop_grace_period() -> float:
    """The app containers' stop grace period, read from compose.yaml (where it is defined)."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    value = str(compose["services"]["app"]["stop_grace_period"])
    assert value.endswith("s"), f"stop_grace_period {value!r}: expected seconds"
    return float(value[:-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(every)


def run(args: list[str], timeout: float = COMMAND_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


@dataclass
class Stack:
    server: str
    port: int
    project: str = PROJECT
    env: dict[str, str] = field(default_factory=dict)

    # --- Make and compose ------------------------------------------------------------------------

    @property
    def ws_service(self) -> str:
        """The compose service serving /ws/: the app itself, or the sidecar of a WSGI variant."""
        return "app" if registry()[self.server] == self.server else "ws"

    @property
    def app_services(self) -> list[str]:
        return sorted({"app", self.ws_service})

    def make(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        settings = [f"SERVER={self.server}", f"REPLICAS={REPLICAS}", f"HTTP_PORT={self.port}"]
        # The test run's own settings (pytest-env's LOG_LEVEL) must not reach the stack's containers.
        inherited = {key: value for key, value in os.environ.items() if key not in TEST_ONLY_ENV}
        return run(
            ["make", *args, *settings, f"PROJECT={self.project}"],
            timeout=timeout,
            cwd=ROOT,
            env={**inherited, **STACK_ENV, **self.env},
        )

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.make("compose", f"ARGS={shlex.join(args)}", timeout=timeout)

    def up(self) -> None:
        result = self.make("up", timeout=COMMAND_TIMEOUT)
        assert result.returncode == 0, f"make up failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    def clean(self) -> None:
        result = self.make("clean")
        assert result.returncode == 0, result.stderr

    def scale_args(self) -> list[str]:
        """`--scale` for every app service, as `make up` passes them."""
        return [arg for service in self.app_services for arg in ("--scale", f"{service}={REPLICAS}")]

    # --- Containers ------------------------------------------------------------------------------

    def containers(self, service: str | None = None, *, running: bool = True) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        result = run(["docker", "ps", "-q", "--no-trunc", *([] if running else ["-a"]), *filters])
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.split())

    def container(self, service: str) -> str:
        [container] = self.containers(service)
        return container

    def inspect(self, container: str) -> dict[str, Any]:
        result = run(["docker", "inspect", container])
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        if not state["Running"]:
            return "stopped"
        return state.get("Health", {}).get("Status", "none")

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT) -> None:
        """Every container of the project is running and healthy (scripts/wait-healthy.sh)."""
        result = run(["scripts/wait-healthy.sh", self.project, str(int(timeout))], cwd=ROOT)
        assert result.returncode == 0, result.stderr

    def wait_serving(self, timeout: float = HEALTHY_TIMEOUT) -> None:
        """Every container healthy, and the whole path answering: Nginx, the app, both data stores."""
        self.wait_healthy(timeout)
        wait_until(lambda: self.readyz()[0] == 200, 60, f"/readyz 200 (last: {self.readyz()})")

    def wait_container_healthy(self, container: str, timeout: float = HEALTHY_TIMEOUT) -> None:
        wait_until(lambda: self.health(container) == "healthy", timeout, f"{container[:12]} healthy")

    def docker(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        result = run(["docker", *args], timeout=timeout)
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result

    def exec(self, service: str, *command: str, timeout: float = 60) -> str:
        return self.docker("exec", self.container(service), *command, timeout=timeout).stdout

    def logs_tail(self, lines: int = 40) -> str:
        """The last log lines of every container of the stack, for a failure's report."""
        parts = []
        for container in self.containers(running=False):
            name = self.inspect(container)["Name"].lstrip("/")
            logs = subprocess.run(
                ["docker", "logs", "--timestamps", "--tail", str(lines), container],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=60,
                check=False,
            )
            parts.append(f"--- {name}\n{logs.stdout}")
        return "\n".join(parts)

    def nginx_reloads(self) -> int:
        """How often Nginx's entry point reloaded it for a change of the app's addresses."""
        logs = run(["docker", "logs", self.container("nginx")])
        return sum("; reloading" in line for line in logs.stderr.splitlines())

    # --- Data stores -----------------------------------------------------------------------------

    def redis(self, *command: str) -> str:
        return self.exec("redis", "redis-cli", "--no-raw", *command).strip()

    def room_members(self, group_key: str) -> int:
        """Members of one chat room's channel-layer group (a sorted set in Redis): one per app
        process holding sockets of the room (chat/rooms.py)."""
        return int(self.exec("redis", "redis-cli", "ZCARD", group_key).strip())

    def room_memberships(self, group_key: str) -> dict[str, float]:
        """Each member channel of a room's group, and the time (epoch seconds) it last (re)joined."""
        out = self.exec("redis", "redis-cli", "ZRANGE", group_key, "0", "-1", "WITHSCORES").split()
        return {out[i]: float(out[i + 1]) for i in range(0, len(out), 2)}

    def sql(self, query: str) -> list[list[str]]:
        out = self.exec(
            "postgres",
            "sh",
            "-c",
            f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -AtF "|" -c {shlex.quote(query)}',
        )
        return [line.split("|") for line in out.splitlines() if line]

    # --- HTTP --------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=timeout)

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """/readyz through Nginx, which asks the next replica when one answers 503 (so a 503 takes
        as long as every replica's checks: up to DATABASE_POOL_TIMEOUT each on a WSGI worker)."""
        try:
            response = self.get("/readyz", timeout=READYZ_TIMEOUT)
        except httpx.HTTPError as exc:
            return 0, {"error": repr(exc)}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"body": response.text[:200]}
