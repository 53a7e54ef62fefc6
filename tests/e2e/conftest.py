"""The compose stack, brought up with the Makefile exactly as a user would, once per variant."""

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.browser import browser_available, headless_chromium

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "rtd-e2e"  # never the user's own stack (realtime-django)
REPLICAS = 2


def variants() -> list[str]:
    lines = (ROOT / "deploy" / "servers.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker_available() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


def make(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args, f"PROJECT={PROJECT}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def compose_containers(service: str | None = None) -> list[str]:
    filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    result = subprocess.run(["docker", "ps", "-q", *filters], capture_output=True, text=True, check=True)
    return result.stdout.split()


@dataclass(frozen=True)
class Stack:
    server: str
    port: int
    ws_service: str  # the compose service that serves /ws/ (app, or the ws sidecar)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def exec_python(self, container: str, script: str, timeout: float = 60) -> str:
        """Runs a Python script inside a container (the image has the websockets package)."""
        result = subprocess.run(
            ["docker", "exec", "-i", container, "python", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="session", autouse=True)
def _require_docker() -> None:
    if not docker_available():
        if os.environ.get("E2E_REQUIRED") == "1":
            pytest.fail("E2E_REQUIRED=1 but no Docker engine answers `docker info`")
        pytest.skip("no Docker engine: the end-to-end tests need one (`docker info` failed)")


@pytest.fixture(scope="module", params=variants())
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    server = request.param
    port = free_port()
    up = make("up", f"SERVER={server}", f"REPLICAS={REPLICAS}", f"HTTP_PORT={port}")
    if up.returncode != 0:
        logs = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        make("clean")
        pytest.fail(f"make up SERVER={server} failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}\n{logs}")
    ws_service = "ws" if compose_containers("ws") else "app"
    try:
        yield Stack(server=server, port=port, ws_service=ws_service)
    finally:
        down = make("clean")
        assert down.returncode == 0, down.stderr


ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def browser():
    if not browser_available():
        pytest.skip("needs Debian's chromium and chromium-driver packages")
    driver = headless_chromium()
    yield driver
    driver.quit()
