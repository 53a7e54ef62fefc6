"""deploy/swarm/: the stack on a real Docker Swarm, deployed through the Makefile like a user would.

Two kinds of tests:

* without a swarm (run by ``make test-deploy``): the stack file's properties the deployment relies
  on, what ``stack.sh config`` renders (with the docker CLI's ``docker stack config``; skipped
  without the CLI), and ``stack.sh`` refusing bad settings with a clear message before it touches
  anything;
* marked ``e2e`` (``make test-swarm``): a single-node swarm (initialised here when the engine is in
  none, and left again at the end, also on failure), then per variant: deploy with
  ``make swarm-up``, HTTP and WebSockets through Nginx, chat across two replicas, an update whose
  new tasks never turn healthy (rolled back while the old ones keep serving), a rolling update
  under a bounded HTTP load with zero failed requests, and ``make swarm-clean`` leaving nothing.

Swarm publishes Nginx's port on every interface (it has no host address to bind to); every
request here goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml

from stackctl import free_port, registry, run
from stackctl.replicas import check_chat_crosses
from stackctl.testing import require_docker
from tests.deploy.helpers import DEPLOY, REPO

SWARM = DEPLOY / "swarm"
STACK_FILE = SWARM / "stack.yaml"
MONITORING_FILE = SWARM / "monitoring.yaml"  # laid over stack.yaml when MONITORING=1
PROMETHEUS_DIR = DEPLOY / "prometheus"
STACK_SCRIPT = SWARM / "stack.sh"
# An ASGI server alone, and the WSGI server with its ASGI sidecar for /ws/.
E2E_VARIANTS = ["uvicorn", "gunicorn"]
STACK_PREFIX = "rtd-swarm"
REPLICAS = 2
# Shorter than the stack's default (30 s) so an update completes sooner; the behaviour is the same.
UPDATE_MONITOR = "5s"
TIMEOUT = 10  # seconds for one HTTP request or WebSocket frame
UPDATE_TIMEOUT = 240  # seconds for an update or a rollback to finish
GRACEFUL_TIMEOUT = 20  # deploy/servers/common.sh
SWARM_STOP_DELAY = 2  # Swarm removes a task from DNS this long before it sends SIGTERM

e2e = pytest.mark.e2e


# --- The stack file, without a swarm ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_file() -> dict[str, Any]:
    return yaml.safe_load(STACK_FILE.read_text())  # resolves the YAML anchors and merge keys


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    raise ValueError(duration)


def test_no_service_relies_on_a_virtual_ip(stack_file: dict[str, Any]) -> None:
    # Nginx follows the tasks' own addresses, and idle pooled connections through IPVS are cut
    # after 15 minutes; the kernel may not even have IPVS.
    for name, service in stack_file["services"].items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
    ports = stack_file["services"]["nginx"]["ports"]
    assert [port["mode"] for port in ports] == ["host"]


@pytest.mark.parametrize("name", ["app", "ws"])
def test_servers_update_start_first_gated_by_readiness(stack_file: dict[str, Any], name: str) -> None:
    service = stack_file["services"][name]
    update = service["deploy"]["update_config"]
    assert update["order"] == "start-first"
    assert update["parallelism"] < REPLICAS
    assert update["failure_action"] == "rollback"
    assert service["deploy"]["rollback_config"]["order"] == "start-first"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["deploy"]["restart_policy"]["condition"] == "any"
    limits = service["deploy"]["resources"]["limits"]
    assert {"cpus", "memory", "pids"} <= set(limits)
    # The server drains within GRACEFUL_TIMEOUT after SIGTERM, which comes 2 s after DNS removal.
    assert seconds(service["stop_grace_period"]) > GRACEFUL_TIMEOUT + SWARM_STOP_DELAY


@pytest.mark.parametrize("name", ["postgres", "nginx"])
def test_single_holders_stop_before_their_successor_starts(stack_file: dict[str, Any], name: str) -> None:
    # PostgreSQL's data directory and Nginx's host port can each have one task per node.
    assert stack_file["services"][name]["deploy"]["update_config"]["order"] == "stop-first"


def test_secrets_are_files_the_app_reads(stack_file: dict[str, Any]) -> None:
    services = stack_file["services"]
    for name in ("app", "ws", "migrate"):
        environment = services[name]["environment"]
        mounted = set(services[name]["secrets"])
        assert environment["DJANGO_SECRET_KEY_FILE"] == "/run/secrets/django_secret_key"
        assert environment["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
        assert {"django_secret_key", "postgres_password"} <= mounted
        assert "DJANGO_SECRET_KEY" not in environment
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert set(stack_file["secrets"]) == {"django_secret_key", "postgres_password"}
    for secret in stack_file["secrets"].values():
        assert "_VERSION" in secret["name"], "secrets are immutable: a new content needs a new name"


# The same settings reach the same services as in the compose stack (a new variable in one file
# and not the other fails here).
@pytest.mark.parametrize(
    ("compose_file", "swarm_file", "service"),
    [
        ("compose.yaml", "stack.yaml", "app"),
        ("compose.yaml", "stack.yaml", "ws"),
        ("compose.yaml", "stack.yaml", "nginx"),
        ("compose.yaml", "stack.yaml", "postgres"),
        ("compose.tls.yaml", "tls.yaml", "nginx"),
        ("compose.redis-ha.yaml", "redis-ha.yaml", "redis"),
        ("compose.redis-ha.yaml", "redis-ha.yaml", "redis-replica"),
        ("compose.redis-ha.yaml", "redis-ha.yaml", "sentinel-1"),
        ("compose.redis-ha.yaml", "redis-ha.yaml", "sentinel-2"),
        ("compose.redis-ha.yaml", "redis-ha.yaml", "sentinel-3"),
    ],
)
def test_stack_passes_the_variables_compose_passes(compose_file: str, swarm_file: str, service: str) -> None:
    compose = yaml.safe_load((REPO / compose_file).read_text())["services"][service]
    swarm = yaml.safe_load((SWARM / swarm_file).read_text())["services"][service]
    assert set(swarm["environment"]) == set(compose["environment"])


def fake_secrets(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("django_secret_key", "postgres_password"):
        (folder / name).write_text(f"not-a-real-{name}\n")
    return folder


def stack_script(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """deploy/swarm/stack.sh with ``args`` in ``env`` alone; its exit status and output."""
    return run(["bash", str(STACK_SCRIPT), *args], timeout=timeout, env=env)


def render(tmp_path_factory: pytest.TempPathFactory, **settings: str) -> dict[str, Any]:
    """What `stack.sh deploy` would deploy for gunicorn with 3 replicas (`stack.sh config`)."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI for `docker stack config`")
    secrets = fake_secrets(tmp_path_factory.mktemp("secrets"))
    env = {
        **os.environ,
        "STACK": "rtd-check",
        "SERVER": "gunicorn",
        "REPLICAS": "3",
        "SECRETS_DIR": str(secrets),
        "MONITORING": "0",
        **settings,
    }
    result = stack_script("config", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return render(tmp_path_factory)


@pytest.fixture(scope="module")
def rendered_monitoring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same with MONITORING=1: monitoring.yaml and Prometheus' files as configs laid over it."""
    return render(tmp_path_factory, MONITORING="1", PROMETHEUS_PORT="19090")


def test_rendered_stack_runs_the_variant_and_its_sidecar(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert services["app"]["deploy"]["replicas"] == services["ws"]["deploy"]["replicas"] == 3
    assert services["app"]["environment"]["SERVER"] == "gunicorn"
    assert services["ws"]["environment"]["SERVER"] == registry()["gunicorn"]
    assert services["nginx"]["environment"]["WS_HOST"] == "ws"


def test_every_nginx_file_is_a_config(rendered: dict[str, Any]) -> None:
    mounted = {ref["target"]: ref["source"] for ref in rendered["services"]["nginx"]["configs"]}
    expected = {f"/etc/nginx/stack/{p.name}" for p in (REPO / "nginx").iterdir() if p.name != "README.md"}
    assert set(mounted) == expected
    names = set()
    for target, source in mounted.items():
        config = rendered["configs"][source]
        assert Path(config["file"]) == REPO / "nginx" / Path(target).name
        names.add(config["name"])
        assert len(config["name"]) <= 64  # Swarm's limit on object names
    assert len(names) == len(mounted)


# --- Monitoring (monitoring.yaml, MONITORING=1) -----------------------------------------------------------


def test_monitoring_is_there_only_when_asked(
    rendered: dict[str, Any], rendered_monitoring: dict[str, Any]
) -> None:
    assert not {"prometheus", "nginx-exporter"} & set(rendered["services"])
    assert {"prometheus", "nginx-exporter"} <= set(rendered_monitoring["services"])
    assert set(rendered["services"]) <= set(rendered_monitoring["services"])


def test_every_prometheus_file_is_a_config(rendered_monitoring: dict[str, Any]) -> None:
    """prometheus.yml and every rules file, where the configuration's relative paths find them."""
    mounted = {
        ref["target"]: ref["source"] for ref in rendered_monitoring["services"]["prometheus"]["configs"]
    }
    files = [PROMETHEUS_DIR / "prometheus.yml", *sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))]
    assert set(mounted) == {f"/etc/prometheus/{path.relative_to(PROMETHEUS_DIR)}" for path in files}
    names = set()
    for target, source in mounted.items():
        config = rendered_monitoring["configs"][source]
        assert Path(config["file"]) == PROMETHEUS_DIR / Path(target).relative_to("/etc/prometheus")
        assert len(config["name"]) <= 64  # Swarm's limit on object names
        names.add(config["name"])
    assert len(names) == len(mounted)
    # Nginx's configs are all still there beside them.
    nginx_files = [path for path in (REPO / "nginx").iterdir() if path.name != "README.md"]
    assert len(rendered_monitoring["services"]["nginx"]["configs"]) == len(nginx_files)


def test_prometheus_is_published_on_its_port_and_reaches_the_backend(
    rendered_monitoring: dict[str, Any],
) -> None:
    prometheus = rendered_monitoring["services"]["prometheus"]
    assert [(port["published"], port["target"], port["mode"]) for port in prometheus["ports"]] == [
        (19090, 9090, "host")
    ]
    assert set(prometheus["networks"]) == {"backend", "edge"}
    assert set(rendered_monitoring["services"]["nginx-exporter"]["networks"]) == {"backend"}
    assert "ports" not in rendered_monitoring["services"]["nginx-exporter"]


@pytest.mark.parametrize("name", ["prometheus", "nginx-exporter"])
def test_monitoring_services_are_deployed_like_the_others(name: str) -> None:
    service = yaml.safe_load(MONITORING_FILE.read_text())["services"][name]
    assert service["deploy"]["endpoint_mode"] == "dnsrr"
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert {"cpus", "memory", "pids"} <= set(service["deploy"]["resources"]["limits"])
    assert service["deploy"]["restart_policy"]["condition"] == "any"


@pytest.mark.parametrize("name", ["prometheus", "nginx-exporter"])
def test_swarm_runs_the_monitoring_compose_runs(name: str) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())["services"][name]
    swarm = yaml.safe_load(MONITORING_FILE.read_text())["services"][name]
    for key in ("image", "user", "command"):
        assert swarm[key] == compose[key], key
    assert swarm.get("healthcheck", {}).get("test") == compose.get("healthcheck", {}).get("test")


def test_prometheus_keeps_one_task_on_its_volume() -> None:
    prometheus = yaml.safe_load(MONITORING_FILE.read_text())["services"]["prometheus"]
    assert prometheus["deploy"]["replicas"] == 1
    assert prometheus["deploy"]["update_config"]["order"] == "stop-first"
    assert prometheus["deploy"]["placement"]["constraints"]


@pytest.fixture(scope="module")
def rendered_redis_ha(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What `stack.sh deploy` would deploy with REDIS_HA=1 (`stack.sh config`)."""
    return render(tmp_path_factory, REDIS_HA="1")


SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]


def test_without_redis_ha_the_app_uses_the_one_redis(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert not {"redis-replica", *SENTINELS} & set(services)
    for name in ("app", "ws", "migrate"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert "REDIS_SENTINELS" not in services[name]["environment"]


def test_redis_ha_adds_a_replica_and_three_sentinels(rendered_redis_ha: dict[str, Any]) -> None:
    services = rendered_redis_ha["services"]
    assert {"redis", "redis-replica", *SENTINELS} <= set(services)
    # Each member announces its own name and asks the same sentinels; one primary to start with.
    members = ["redis", "redis-replica", *SENTINELS]
    assert [services[name]["environment"]["REDIS_HA_SELF"] for name in members] == members
    assert {services[name]["environment"]["REDIS_SENTINELS"] for name in members} == {
        ",".join(f"{name}:26379" for name in SENTINELS)
    }
    assert {services[name]["environment"]["REDIS_HA_PRIMARY"] for name in members} == {"redis"}
    assert {services[name]["environment"]["SENTINEL_QUORUM"] for name in SENTINELS} == {"2"}
    for name in members:
        service = services[name]
        assert service["entrypoint"][:2] == ["bash", "/etc/redis-ha/start.sh"]
        assert service["deploy"]["replicas"] == 1 and service["deploy"]["endpoint_mode"] == "dnsrr"
        assert service["read_only"] and service["cap_drop"] == ["ALL"] and service["user"] == "999:999"
        # A sentinel writes its file: in /tmp, as Swarm gives a tmpfs the image folder's owner.
        scratch = "/tmp" if name in SENTINELS else "/data"
        assert {"type": "tmpfs", "target": scratch} in service["volumes"]
    assert {services[name]["environment"]["SENTINEL_DIR"] for name in SENTINELS} == {"/tmp"}
    assert [services[name]["command"] for name in SENTINELS] == [["sentinel"]] * 3
    # The Redis servers keep stack.yaml's options (no persistence, bounded memory).
    assert services["redis-replica"]["command"] == services["redis"]["command"]
    assert services["redis"]["entrypoint"][2:] == services["redis-replica"]["entrypoint"][2:] == ["redis"]


def test_redis_ha_members_go_anywhere_unless_placed(
    rendered_redis_ha: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One node by default; on several, each member where its setting says (cluster.sh sets them)."""
    members = {
        "redis": "SWARM_REDIS_CONSTRAINT",
        "redis-replica": "SWARM_REDIS_REPLICA_CONSTRAINT",
        **{name: f"SWARM_{name.upper().replace('-', '_')}_CONSTRAINT" for name in SENTINELS},
    }

    def constraints(rendered: dict[str, Any]) -> dict[str, list[str]]:
        return {name: rendered["services"][name]["deploy"]["placement"]["constraints"] for name in members}

    assert set(map(tuple, constraints(rendered_redis_ha).values())) == {("node.platform.os == linux",)}
    placed = render(
        tmp_path_factory,
        REDIS_HA="1",
        **{setting: f"node.labels.m == {name}" for name, setting in members.items()},
    )
    assert constraints(placed) == {name: [f"node.labels.m == {name}"] for name in members}
    # Only the placement differs: the sentinels keep their own resources.
    assert placed["services"]["sentinel-1"]["deploy"]["resources"]["limits"]["memory"] == "67108864"  # 64M


def test_redis_ha_start_script_is_a_versioned_config(rendered_redis_ha: dict[str, Any]) -> None:
    config = rendered_redis_ha["configs"]["redis_ha_start"]
    assert Path(config["file"]) == DEPLOY / "redis-ha" / "start.sh"
    assert config["name"].startswith("rtd-check_redis-ha-start-") and len(config["name"]) <= 64
    for name in ("redis", "redis-replica", *SENTINELS):
        targets = {ref["target"] for ref in rendered_redis_ha["services"][name]["configs"]}
        assert targets == {"/etc/redis-ha/start.sh"}


def test_with_redis_ha_the_app_asks_the_sentinels(rendered_redis_ha: dict[str, Any]) -> None:
    """REDIS_URL empty (the app refuses both at once), REDIS_SENTINELS naming the three."""
    for name in ("app", "ws", "migrate"):
        environment = rendered_redis_ha["services"][name]["environment"]
        assert environment["REDIS_URL"] == ""
        assert environment["REDIS_SENTINELS"] == ",".join(f"{sentinel}:26379" for sentinel in SENTINELS)
        assert environment["REDIS_SENTINEL_MASTER"] == "mymaster"


# Each bad setting is refused before anything is deployed, with a message naming it.
DEPLOY_REFUSALS = {
    "SERVER=tornado": "unknown SERVER 'tornado'. Valid: daphne",
    "REPLICAS=0": "REPLICAS must be a whole number >= 1, got '0'",
    "REPLICAS=two": "REPLICAS must be a whole number >= 1, got 'two'",
    "HTTP_PORT=70000": "HTTP_PORT must be a port number, got '70000'",
    "STACK=my stack": "STACK 'my stack': letters, digits",
    "SWARM_RESOLVE_IMAGE=sometimes": "SWARM_RESOLVE_IMAGE must be always, changed or never",
    "SWARM_WAIT_TIMEOUT=5m": "SWARM_WAIT_TIMEOUT must be a number of seconds, got '5m'",
    "TLS=yes": "TLS must be 0 or 1, got 'yes'",
    "REDIS_HA=yes": "REDIS_HA must be 0 or 1, got 'yes'",
    "HTTPS_PORT=-1": "HTTPS_PORT must be a port number, got '-1'",
    "MONITORING=yes": "MONITORING must be 0 or 1, got 'yes'",
    "MONITORING=1,PROMETHEUS_PORT=0": "PROMETHEUS_PORT must be a port number, got '0'",
    "SECRETS_DIR=/nonexistent/secrets": "run 'make secrets'",
    "SECRETS_DIR={tmp}/empty": "django_secret_key is missing or empty: run 'make secrets'",
    "SECRETS_DIR={tmp}/secrets,TLS=1": "tls_certificate.pem: run 'make tls-cert'",
}
USAGE = "usage: stack.sh deploy|config|wait|rm|purge"


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        *(
            (["deploy"], dict(item.split("=", 1) for item in settings.split(",")), message)
            for settings, message in DEPLOY_REFUSALS.items()
        ),
        (["upgrade"], {}, USAGE),
        ([], {}, USAGE),
    ],
)
def test_stack_script_refuses_bad_settings(
    args: list[str], settings: dict[str, str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    fake_secrets(tmp_path / "secrets")
    settings = {key: value.format(tmp=tmp_path) for key, value in settings.items()}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **settings}
    result = stack_script(*args, env=env)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_every_variant_is_accepted_by_the_script() -> None:
    # The registry is the script's list: each name passes the settings check and the script goes
    # on to the next one, the secrets (missing here, so it stops there).
    for variant in registry():
        env = {"PATH": "/usr/bin:/bin", "SERVER": variant, "SECRETS_DIR": "/nonexistent"}
        result = stack_script("deploy", env=env)
        assert "run 'make secrets'" in result.stderr, f"{variant}: {result.stderr}"


# --- A real swarm ----------------------------------------------------------------------------------------


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr}")
    return result


def lines(*args: str) -> list[str]:
    return docker(*args).stdout.split()


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").stdout.strip()


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A swarm manager: this engine's swarm, or a single-node one made here and left afterwards."""
    require_docker("swarm tests")
    state = swarm_state()
    if state == "active true":
        yield  # someone else's swarm: use it, never leave it
        return
    if state.split()[0] != "inactive":
        pytest.fail(f"this engine is in a swarm but not a manager ({state}): run the tests on a manager")
    gwbridge_existed = bool(lines("network", "ls", "-q", "--filter", "name=^docker_gwbridge$"))
    # Loopback only: the swarm's management port is not opened on the machine's network.
    docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
    try:
        yield
    finally:
        docker("swarm", "leave", "--force")
        if not gwbridge_existed:
            # The bridge Swarm created for its tasks' outside traffic; in use by nothing now.
            docker("network", "rm", "docker_gwbridge", check=False)
        assert swarm_state().split()[0] == "inactive"


def make(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARM_UPDATE_MONITOR": UPDATE_MONITOR, "SWARM_WAIT_TIMEOUT": "300"}
    return subprocess.run(
        ["make", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass(frozen=True)
class Stack:
    name: str
    server: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_service(self) -> str:
        """The service that serves /ws/: the app itself, or the sidecar."""
        return "app" if registry()[self.server] == self.server else "ws"

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def containers(self, short: str) -> list[str]:
        return lines("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.service(short)}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=TIMEOUT)


def leftovers(stack: str) -> dict[str, list[str]]:
    label = f"label=com.docker.stack.namespace={stack}"
    found = {
        "services": lines("service", "ls", "-q", "--filter", label),
        "containers": lines("ps", "-aq", "--filter", label),
        "networks": lines("network", "ls", "-q", "--filter", label),
        "volumes": lines("volume", "ls", "-q", "--filter", label),
        "secrets": lines("secret", "ls", "-q", "--filter", label),
        "configs": lines("config", "ls", "-q", "--filter", label),
    }
    return {kind: ids for kind, ids in found.items() if ids}


@pytest.fixture(scope="module", params=E2E_VARIANTS)
def stack(request: pytest.FixtureRequest, swarm: None) -> Iterator[Stack]:
    server = request.param
    deployed = Stack(name=f"{STACK_PREFIX}-{server}", server=server, port=free_port())
    settings = [
        f"SERVER={server}",
        f"STACK={deployed.name}",
        f"REPLICAS={REPLICAS}",
        f"HTTP_PORT={deployed.port}",
    ]
    try:
        started = time.monotonic()
        up = make("swarm-up", *settings)
        assert up.returncode == 0, f"make swarm-up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}"
        print(f"\n{deployed.name}: deployed in {time.monotonic() - started:.0f} s")
        yield deployed
    finally:
        clean = make("swarm-clean", f"STACK={deployed.name}")
        assert clean.returncode == 0, clean.stderr


@e2e
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_through_nginx(stack: Stack, path: str) -> None:
    response = stack.get(path)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


@e2e
def test_whoami_names_the_variant_and_the_database_is_migrated(stack: Stack) -> None:
    assert stack.get("/api/whoami").json()["server"] == stack.server
    assert len(stack.get("/api/db").json()["items"]) == 20


@e2e
def test_static_files_published_to_nginx(stack: Stack) -> None:
    page = stack.get("/")
    assert page.status_code == 200
    stylesheet = next(word for word in page.text.split('"') if word.startswith("/static/chat/chat."))
    css = stack.get(stylesheet)
    assert css.status_code == 200
    assert "immutable" in css.headers["cache-control"]


async def _echo(stack: Stack) -> dict[str, Any]:
    url = stack.base_url.replace("http", "ws", 1) + "/ws/echo/"
    async with websockets.connect(url, origin=stack.base_url, open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"message": "hello swarm"}))
        return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


@e2e
def test_websocket_through_nginx(stack: Stack) -> None:
    assert asyncio.run(_echo(stack)) == {"message": "hello swarm"}


@e2e
def test_chat_crosses_replicas(stack: Stack) -> None:
    containers = stack.containers(stack.ws_service)
    assert len(containers) == REPLICAS
    check_chat_crosses(containers, room=f"swarm-{uuid.uuid4().hex[:8]}")


# --- Updates under load ------------------------------------------------------------------------------


class BoundedLoad:
    """GET /api/whoami from a few threads until stopped, for at most UPDATE_TIMEOUT + 60 s and
    MAX_REQUESTS requests. About 25 requests/s: under Nginx's /api/ rate limit (50/s per client
    address, and every request here comes from the same one).

    One connection per request. Nginx reloads when the app's addresses change, and a reload closes
    the idle keep-alive connections of its clients: a request sent on one at that very instant gets
    no answer at all, and HTTP clients retry it on a new connection (RFC 9112, 9.3.1; browsers do).
    httpx does not, so reusing connections here would count that race, which is not a lost request.
    """

    THREADS = 3
    PAUSE = 0.1
    MAX_REQUESTS = 20_000

    def __init__(self, stack: Stack) -> None:
        self.url = stack.base_url + "/api/whoami"
        self.deadline = time.monotonic() + UPDATE_TIMEOUT + 60
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.hosts: list[str] = []  # the replica of each answer, in order
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.THREADS)]

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    if self.statuses.total() >= self.MAX_REQUESTS:
                        return
                try:
                    response = client.get(self.url)
                    outcome, host = str(response.status_code), ""
                    if response.status_code == 200:
                        host = response.json()["hostname"]
                    else:
                        outcome += f" {response.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome, host = f"{type(exc).__name__}: {exc}", ""
                with self.lock:
                    self.statuses[outcome.split()[0]] += 1
                    if host:
                        self.hosts.append(host)
                    else:
                        self.failures.append(outcome)
                time.sleep(self.PAUSE)

    def __enter__(self) -> BoundedLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT + 5)


def update_state(service: str) -> str:
    return docker(
        "service", "inspect", service, "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"
    ).stdout.strip()


def wait_for_update(service: str, final: set[str]) -> str:
    deadline = time.monotonic() + UPDATE_TIMEOUT
    state = update_state(service)
    while state not in final and time.monotonic() < deadline:
        time.sleep(1)
        state = update_state(service)
    return state


def settle() -> None:
    """A few seconds of the finished state under load, so the last old task's removal is covered."""
    time.sleep(5)


@e2e
def test_update_that_never_turns_healthy_is_rolled_back(stack: Stack) -> None:
    # New tasks whose Redis does not exist: /readyz answers 503, the health check fails, and the
    # update must roll back without the old tasks ever leaving.
    if stack.server != E2E_VARIANTS[0]:
        pytest.skip(f"the health gate is the stack's, not the server's: checked on {E2E_VARIANTS[0]}")
    service = stack.service("app")
    before = set(stack.containers("app"))
    with BoundedLoad(stack) as load:
        time.sleep(2)
        docker(
            "service", "update", "--detach", "--env-add", "REDIS_URL=redis://no-such-redis:6379/0",
            "--health-start-period", "2s", "--health-interval", "2s", "--health-retries", "2", service,
        )  # fmt: skip
        state = wait_for_update(service, {"rollback_completed", "rollback_paused", "paused", "completed"})
        settle()
    assert state == "rollback_completed", docker("service", "ps", "--no-trunc", service).stdout
    assert set(stack.containers("app")) == before
    spec_env = docker(
        "service", "inspect", service, "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}"
    )
    assert "no-such-redis" not in spec_env.stdout
    assert load.failures == [], load.statuses
    assert set(load.hosts) <= {container[:12] for container in before}


@e2e
def test_rolling_update_loses_no_request(stack: Stack) -> None:
    service = stack.service("app")
    before = {container[:12] for container in stack.containers("app")}
    with BoundedLoad(stack) as load:
        time.sleep(2)
        docker("service", "update", "--detach", "--force", service)
        state = wait_for_update(service, {"completed", "paused", "rollback_completed", "rollback_paused"})
        settle()
    after = {container[:12] for container in stack.containers("app")}
    print(f"\n{stack.name}: {load.statuses.total()} requests during the update: {dict(load.statuses)}")
    assert state == "completed", docker("service", "ps", "--no-trunc", service).stdout
    assert len(after) == REPLICAS and not after & before, "every task was replaced"
    assert load.failures == [], f"{len(load.failures)} failed, e.g. {load.failures[:5]}"
    # The load ran from before the update to after it: old and new tasks both answered.
    assert before & set(load.hosts) and after & set(load.hosts)
    assert set(load.hosts[-20:]) <= after


@e2e
def test_swarm_clean_leaves_nothing(stack: Stack) -> None:
    """Runs last for each variant: removes the stack and its volumes, secrets, configs, networks."""
    result = make("swarm-clean", f"STACK={stack.name}")
    assert result.returncode == 0, result.stderr
    assert leftovers(stack.name) == {}
    with pytest.raises(httpx.HTTPError):
        stack.get("/healthz")
