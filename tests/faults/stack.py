"""The compose stack under test, brought up and driven with the Makefile's own commands.

Every compose command goes through ``make compose ARGS=...``, so it runs with the project, files
and profiles ``make up`` used. Every other command is ``docker`` on this project's containers only.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import yaml

import stackctl
from stackctl import ROOT, run, selected_variants

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

HEALTHY_TIMEOUT = 240  # seconds for `make up` / a restarted container to be healthy (shared CPUs)
READYZ_TIMEOUT = 30
# Per test, its stack's `make up` included (pytest-timeout's default of 120 s is for quick tests).
TEST_TIMEOUT = 1200


def fault_variants() -> list[str]:
    return selected_variants("FAULT_VARIANTS", DEFAULT_FAULT_VARIANTS)


def spread_faults() -> bool:
    """FAULT_SPREAD=1 (`make test-faults`, what CI runs): each test module on one of the variants, in
    turn, so every variant meets some of the faults in about half the time. Unset or 0
    (`make test-faults-full`): every fault on every variant."""
    return os.environ.get("FAULT_SPREAD", "0") == "1"


def stop_grace_period() -> float:
    """The app containers' stop grace period, read from compose.yaml (where it is defined)."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    value = str(compose["services"]["app"]["stop_grace_period"])
    assert value.endswith("s"), f"stop_grace_period {value!r}: expected seconds"
    return float(value[:-1])


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


class Stack(stackctl.Stack):
    """The stack as the fault tests drive it: health, the data stores, Nginx's reloads."""

    def scale_args(self) -> list[str]:
        """`--scale` for every app service, as `make up` passes them."""
        return [arg for service in self.app_services for arg in ("--scale", f"{service}={self.replicas}")]

    # --- Containers ------------------------------------------------------------------------------

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

    def nginx_reloads(self) -> int:
        """How often Nginx's entry point reloaded it for a change of the app's addresses."""
        logs = self.container_logs(self.container("nginx"))
        return sum("; reloading" in line for line in logs.splitlines())

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
