"""compose.yaml on its own, as a team that copies it runs it: no Makefile, only the environment.

SERVER=gunicorn is the case that needs the most from the file: Gunicorn serves HTTP only, so /ws/
must reach the `ws` sidecar, which runs only with the sidecar profile, and Nginx must route to it
knowing nothing but SERVER. Each compose binary on the machine is tried (v2 and v1.29), with the
profile given each documented way.
"""

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from stackctl import ROOT, free_port

pytestmark = pytest.mark.e2e
TIMEOUT = 10


def compose_binaries() -> list[list[str]]:
    found = []
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        found.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    return found


def machine_images() -> dict[str, str]:
    """The base images this machine uses: the stand-ins when the bootstrap chose them (no registry)."""
    state = ROOT / ".cache" / "stack.env"
    if "OFFLINE=1" not in (state.read_text() if state.exists() else ""):
        return {}
    images = (ROOT / "deploy" / "offline" / "images.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in images if "=" in line and not line.startswith("#")) | {
        "OFFLINE_WHEELS": "1"
    }


@pytest.fixture(params=["--profile flag", "COMPOSE_PROFILES"])
def gunicorn_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    binaries = compose_binaries()
    if not binaries:
        pytest.fail("no docker compose v2 and no docker-compose")
    compose = binaries[0] if request.param == "--profile flag" else binaries[-1]
    secrets = tmp_path / "secrets"
    subprocess.run([str(ROOT / "scripts" / "make-secrets.sh"), str(secrets)], check=True, capture_output=True)
    port = free_port()
    project = "rtd-bare"
    # Only what a user's shell or .env would hold: none of the Makefile's exports.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "SERVER": "gunicorn",
        "HTTP_PORT": str(port),
        "SECRETS_DIR": str(secrets),
        **machine_images(),
    }
    profile = ["--profile", "sidecar"]
    if request.param == "COMPOSE_PROFILES":
        env["COMPOSE_PROFILES"] = "sidecar"
        profile = []
    command = [*compose, "-p", project, "-f", str(ROOT / "compose.yaml"), *profile]

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    try:
        up = run("up", "-d")
        assert up.returncode == 0, up.stderr[-4000:]
        healthy = subprocess.run(
            [str(ROOT / "scripts" / "wait-healthy.sh"), project, "180"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert healthy.returncode == 0, healthy.stderr[-4000:]
        yield f"127.0.0.1:{port}"
    finally:
        run("--profile", "sidecar", "down", "--volumes", "--remove-orphans", timeout=300)


async def _echo(address: str) -> dict:
    async with websockets.connect(
        f"ws://{address}/ws/echo/", origin=f"http://{address}", open_timeout=TIMEOUT
    ) as ws:
        await ws.send(json.dumps({"message": "hello"}))
        return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


def test_gunicorn_stack_serves_http_and_websockets_without_make(gunicorn_stack: str) -> None:
    whoami = httpx.get(f"http://{gunicorn_stack}/api/whoami", timeout=TIMEOUT).json()
    assert whoami["server"] == "gunicorn"
    # Gunicorn cannot answer a WebSocket handshake: an echo means Nginx found the sidecar by itself.
    assert asyncio.run(_echo(gunicorn_stack)) == {"message": "hello"}
