"""One compose stack per variant serves every security test of that variant (bringing one up is the
slow part), and one stack with TLS=1 serves the TLS tests.

    SECURITY_VARIANTS=uvicorn,gunicorn      the plain stacks (default: all of deploy/servers.txt)
    SECURITY_TLS_VARIANTS=all               the TLS stacks (default: gunicorn)

The TLS default is gunicorn because it carries two servers at once: Gunicorn's WSGI path for HTTP and
the Uvicorn sidecar for WSS. TLS itself ends at Nginx, the same for every variant.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidHandshake

from stackctl import ROOT, StackError, free_port, selected_variants
from stackctl.testing import require_docker
from tests.security.clients import http_client, join
from tests.security.stack import Stack

PROJECT = "rtd-sec"  # never the user's own stack, nor another suite's
TLS_PROJECT = "rtd-sec-tls"
VARIANTS = selected_variants("SECURITY_VARIANTS", "all")
TLS_VARIANTS = selected_variants("SECURITY_TLS_VARIANTS", "gunicorn")
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="session", autouse=True)
def _require_docker() -> None:
    require_docker("security tests, which drive the compose stack,")


def serving(stack: Stack) -> bool:
    """Nginx reaches the app: /readyz is 200 and a WebSocket is accepted."""
    try:
        with http_client(stack) as client:
            if client.get("/readyz").status_code != 200:
                return False
        with join(stack, "/ws/echo/"):
            return True
    except (OSError, httpx.HTTPError, InvalidHandshake):
        return False


def wait_until_serving(stack: Stack, timeout: float = 120) -> None:
    # Every container is healthy when `make up` returns; Nginx may still need a second to see the
    # app's address (its upstream watcher), so the first request is made only once it answers.
    deadline = time.monotonic() + timeout
    while not serving(stack):
        if time.monotonic() > deadline:
            pytest.fail(f"the {stack.server} stack does not serve through Nginx after {timeout:g}s")
        time.sleep(1)


def save_logs(stack: Stack) -> Path:
    """Every container's output, for a run that failed: the stack is gone after the session."""
    folder = ARTIFACTS / "security-logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stack.project}-{stack.server}.log"
    path.write_text(stack.logs_report())
    return path


def bring_up(request: pytest.FixtureRequest, project: str, *, tls: bool) -> Iterator[Stack]:
    stack = Stack(
        server=request.param,
        project=project,
        http_port=free_port(),
        https_port=free_port() if tls else None,
        # The slow-client check reads the servers' access logs: no trickled request may reach them.
        env={"SERVER_ACCESS_LOG": "1"},
    )
    stack.clean()  # a stack left over by an interrupted run
    failures_before = request.session.testsfailed
    came_up = False
    try:
        try:
            stack.up()
        except StackError as exc:
            pytest.fail(str(exc))
        came_up = True
        wait_until_serving(stack)
        yield stack
    finally:
        if request.session.testsfailed > failures_before or not came_up:
            print(f"\n{stack.server}: container logs saved to {save_logs(stack)}")
        stack.clean()


@pytest.fixture(scope="session", params=VARIANTS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    yield from bring_up(request, PROJECT, tls=False)


@pytest.fixture(scope="session", params=TLS_VARIANTS)
def tls_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    yield from bring_up(request, TLS_PROJECT, tls=True)


@pytest.fixture(scope="session")
def app_image() -> str:
    """The app image as `make build` makes it (the build is cached when a stack was brought up)."""
    # One image serves every variant: any of them names the build.
    build = Stack(server=VARIANTS[0], project=PROJECT, http_port=free_port()).make("build")
    assert build.returncode == 0, build.stderr[-4000:]
    image = os.environ.get("APP_IMAGE") or "realtime-django-stack:local"  # compose.yaml's default
    assert subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    return image
