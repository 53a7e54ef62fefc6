"""Every default has one value: the one .env.example states.

A default is written wherever a tool needs it (Django, the start files, Nginx's entry point, compose,
Swarm, Kubernetes, systemd, the Makefile, the image), and nothing else ties those copies together.
This test reads each of those places and compares every default it defines with .env.example. It
fails on a value that differs, and on a variable that has a default somewhere but is documented
nowhere, unless the tables below say why (one line each).

.env.example's format: ``NAME=value`` is a variable and its default; ``# NAME=value`` (commented
out) documents a variable that has no default, being required or computed at run time.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import REPO
from tests.unit.fresh_process import json_from_fresh_process

ENV_EXAMPLE = REPO / ".env.example"

# (variable, place) -> why the value there differs from .env.example's on purpose.
DELIBERATE: dict[tuple[str, str], str] = {
    ("SERVER", "app/config/settings.py"): "a label when no variant is named (whoami, application_name)",
    ("WEB_CONCURRENCY", "deploy/servers/common.sh"): "computed at start: the container's CPU quota",
    ("WEB_CONCURRENCY", "deploy/k8s/base/config.env"): "the pod's CPU limit (deployment.yaml)",
    ("WEB_CONCURRENCY", "deploy/systemd/env.example"): "an example host's CPUs",
    ("SQLITE_PATH", "app/config/settings.py"): "the same file, as an absolute path from app/",
    ("STATIC_ROOT", "app/config/settings.py"): "the same folder, as an absolute path from app/",
    ("STATIC_ROOT", "deploy/Dockerfile"): "where the image collects the static files",
    ("TRUSTED_PROXIES", "compose.yaml"): "the private ranges Docker picks compose networks from",
    ("TRUSTED_PROXIES", "deploy/swarm/stack.yaml"): "Swarm's default address pool for overlay networks",
    ("TRUSTED_PROXIES", "deploy/k8s/base/config.env"): "the ingress controller's pods (the pod CIDR)",
    ("DJANGO_ALLOWED_HOSTS", "deploy/k8s/base/config.env"): "the production value .env.example shows",
    ("DJANGO_ALLOWED_HOSTS", "deploy/systemd/env.example"): "the production value .env.example shows",
    ("DJANGO_CSRF_TRUSTED_ORIGINS", "deploy/k8s/base/config.env"): "the production value .env.example shows",
    ("DJANGO_CSRF_TRUSTED_ORIGINS", "deploy/systemd/env.example"): "the production value .env.example shows",
    ("DATABASE_URL", "deploy/k8s/base/config.env"): "the cluster's PostgreSQL",
    ("DATABASE_URL", "deploy/systemd/env.example"): "the host's PostgreSQL",
    ("REDIS_URL", "deploy/k8s/base/config.env"): "the cluster's Redis",
    ("REDIS_URL", "deploy/systemd/env.example"): "the host's Redis",
    ("DATABASE_POOL_MAX_SIZE", "deploy/k8s/base/config.env"): "replicas x processes x 4 fits max_connections",
    (
        "DATABASE_POOL_MAX_SIZE",
        "deploy/systemd/env.example",
    ): "WEB_CONCURRENCY x 4 fits the host's PostgreSQL",
    ("DJANGO_SECRET_KEY_FILE", "deploy/k8s/base/config.env"): "where the pod mounts the secret",
    ("DATABASE_PASSWORD_FILE", "deploy/k8s/base/config.env"): "where the pod mounts the secret",
    ("REPLICAS", "deploy/swarm/stack.sh"): "run by hand, two tasks: one can fail and the stack serves",
    ("SECRETS_DIR", "deploy/swarm/stack.sh"): "the same folder made absolute (stack.sh runs from anywhere)",
    ("TLS_DIR", "deploy/swarm/stack.sh"): "computed: SECRETS_DIR, where `make tls-cert` writes",
    ("CLUSTER_DIR", "deploy/swarm/cluster.sh"): "computed: /var/lib/ and the cluster's name",
    ("GRACEFUL_TIMEOUT", "tests/harness/app.py"): "the integration tests stop servers in seconds",
}

# Variables given a default somewhere but not in .env.example, and why nobody sets them there.
INTERNAL: dict[str, str] = {
    "APP_HOST": "Nginx's upstream name: the compose and Swarm service name",
    "APP_PORT": "Nginx's upstream port: the image's PORT",
    "WS_HOST": "Nginx's WebSocket upstream: from SERVER and deploy/servers.txt (its entry point, stack.sh)",
    "WS_SERVER": "the WebSocket sidecar's variant: derived from deploy/servers.txt",
    "NGINX_RESOLVER": "Docker's embedded DNS, fixed inside Nginx's container",
    "NGINX_HTTP_PORT": "Nginx's port inside its container; HTTP_PORT publishes it",
    "NGINX_HTTPS_PORT": "Nginx's TLS port inside its container; HTTPS_PORT publishes it",
    "NGINX_STATUS_PORT": "Nginx's stub_status port inside its container, never published",
    "HTTPS_PUBLIC_PORT": "derived from HTTPS_PORT by compose.tls.yaml and Swarm's tls.yaml",
    "TLS_CERT_FILE": "set by compose.tls.yaml and Swarm's tls.yaml to the mounted secret",
    "TLS_KEY_FILE": "set by compose.tls.yaml and Swarm's tls.yaml to the mounted secret",
    "NGINX_STATIC_ROOT": "the static volume's mount point in Nginx's container",
    "NGINX_TMP_DIR": "the writable tmpfs of Nginx's read-only container",
    "UPSTREAM_WATCH_INTERVAL": "the entry point's DNS poll; compose and Swarm do not pass it",
    "NGINX_SHUTDOWN_TIMEOUT": "not passed by compose or Swarm: bound to their fixed 30 s stop grace",
    "SERVERS_FILE": "where compose mounts deploy/servers.txt in Nginx's container",
    "SERVERS_REGISTRY": "where compose mounts deploy/registry.sh, the registry's reader, in Nginx",
    "SIDECAR_HOST": "the WebSocket sidecar's service name in compose and Swarm",
    "APP_IMAGE_ID": "set by stack.sh from the local image",
    "PATH": "the image's own search path",
    "PYTHONPATH": "the image's own layout",
    "PYTHONUNBUFFERED": "Python's own switch, fixed in the image",
    "PYTHONDONTWRITEBYTECODE": "Python's own switch, fixed in the image (read-only file system)",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip's own switch, build stage only",
    "PIP_NO_CACHE_DIR": "pip's own switch, build stage only",
}


@dataclass(frozen=True)
class Default:
    """One default as a place defines it; ``value`` None: passed through empty, the default is elsewhere."""

    name: str
    value: str | None


def unquoted(value: str) -> str:
    """A value with spaces is quoted in .env.example, so that the shell can source it too."""
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value


def documented() -> dict[str, str | None]:
    """.env.example: each variable -> its default (None: documented without one)."""
    variables: dict[str, str | None] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            variables[match[1]] = unquoted(match[2])
        elif match := re.fullmatch(r"# ?([A-Z][A-Z0-9_]*)=.*", line):
            variables.setdefault(match[1], None)
    return variables


# --- Readers: one per way a default is written ----------------------------------------------------


def shell_assignments(path: Path) -> Iterator[Default]:
    """``: "${NAME:=value}"``, the start files' and entry points' one way to give a default;
    ``: "${NAME:=}"`` only declares the variable (for ``set -u``), it gives none."""
    for match in re.finditer(r'^\s*: "\$\{([A-Z][A-Z0-9_]*):=([^}]*)\}"', path.read_text(), re.MULTILINE):
        yield Default(match[1], match[2] or None)


def interpolations(path: Path) -> Iterator[Default]:
    """``${NAME:-value}`` in a compose or stack file; ``${NAME:-}`` passes the variable through."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    for match in re.finditer(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", text):
        yield Default(match[1], match[2] or None)


def env_file(path: Path) -> Iterator[Default]:
    """``NAME=value`` lines (kustomize's config.env, systemd's EnvironmentFile)."""
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            yield Default(match[1], match[2])


def makefile(path: Path) -> Iterator[Default]:
    """``NAME ?= value``, with ``$(OTHER)`` resolved from the lines above and ``$(CURDIR)/`` dropped
    (.env.example gives paths from the repository root)."""
    values: dict[str, str] = {}
    for match in re.finditer(r"^([A-Z][A-Z0-9_]*) \?= ?(.*)$", path.read_text(), re.MULTILINE):
        value = match[2].replace("$(CURDIR)/", "")
        value = re.sub(r"\$\((\w+)\)", lambda ref: values.get(ref[1], ref[0]), value)
        values[match[1]] = value
        yield Default(match[1], value or None)


def dockerfile(path: Path) -> Iterator[Default]:
    """``ARG NAME=value`` and ``ENV NAME=value ...`` (continued lines joined)."""
    for instruction in path.read_text().replace("\\\n", " ").splitlines():
        if re.match(r"(ARG|ENV) ", instruction):
            for match in re.finditer(r"([A-Z][A-Z0-9_]*)=(\S*)", instruction):
                yield Default(match[1], match[2])


def kubernetes_env(folder: Path) -> Iterator[Default]:
    """``env: [{name, value}]`` of every container in the manifests."""

    def walk(node: object) -> Iterator[Default]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "env" and isinstance(value, list):
                    yield from (Default(e["name"], str(e["value"])) for e in value if "value" in e)
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for manifest in sorted(folder.glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            yield from walk(document)


def python_environ(path: Path) -> Iterator[Default]:
    """``os.environ.get("NAME") or "value"`` and ``os.environ.get("NAME", "value")``."""
    text = path.read_text()
    for pattern in (
        r'environ\.get\("([A-Z][A-Z0-9_]*)"\) or "([^"]*)"',
        r'environ\.get\("([A-Z][A-Z0-9_]*)", "([^"]*)"\)',
    ):
        for match in re.finditer(pattern, text):
            yield Default(match[1], match[2])


def module_constants(path: Path) -> Iterator[Default]:
    """Module-level ``NAME = literal`` whose name is a documented variable (a copy of its default)."""
    names = documented()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in names:
                    yield Default(target.id, str(node.value.value))


def prometheus_scrape_ports(path: Path) -> Iterator[Default]:
    """The port of each DNS lookup of the app's services (`app`, `ws`): METRICS_PORT (the file reads
    no variable). The `nginx` job scrapes the exporter's own fixed port."""
    for job in yaml.safe_load(path.read_text())["scrape_configs"]:
        if job["job_name"] not in {"app", "ws"}:
            continue
        for lookup in job.get("dns_sd_configs", []):
            yield Default("METRICS_PORT", str(lookup["port"]))


def kubernetes_metrics_ports(path: Path) -> Iterator[Default]:
    """The app containers' port named ``metrics``, and the port of the ``prometheus.io/port`` scrape
    annotation: the app's METRICS_PORT (the manifests read no variable)."""
    for manifest in sorted(path.rglob("*.yaml")):
        text = manifest.read_text()
        for match in re.finditer(r"- name: metrics\n\s+containerPort: (\d+)", text):
            yield Default("METRICS_PORT", match[1])
        for match in re.finditer(r'prometheus\.io/port: "(\d+)"', text):
            yield Default("METRICS_PORT", match[1])


# Imports the settings module with each env helper wrapped to record the default it is called with.
# Only the outermost call counts (get_int reads through get_str with the default as text).
_RECORD_SETTINGS = """
import json
from config import env

calls, depth = [], 0

def recording(read):
    def wrapper(name, *args, **kwargs):
        global depth
        default = args[0] if args else kwargs.get("default", "")
        if depth == 0:
            calls.append([name, ("1" if default else "0") if isinstance(default, bool) else str(default)])
        depth += 1
        try:
            return read(name, *args, **kwargs)
        finally:
            depth -= 1
    return wrapper

for helper in ("get_str", "get_bool", "get_int", "get_float", "get_list"):
    setattr(env, helper, recording(getattr(env, helper)))
import config.settings
print(json.dumps(calls))
"""


def django_settings(path: Path) -> Iterator[Default]:
    """The defaults settings.py passes to config.env, read in fresh processes (in app/, beside ``path``)
    with nothing set but the secret key: once as is, once with PostgreSQL and Redis configured, which
    is when their settings are read."""
    base = {"PATH": os.environ["PATH"], "DJANGO_SECRET_KEY": "test-only-secret-key-for-reading-defaults"}
    services = {"DATABASE_URL": "postgres://app@postgres:5432/app", "REDIS_URL": "redis://redis:6379/0"}
    seen: set[Default] = set()
    for environment in (base, base | services):
        for name, value in json_from_fresh_process(_RECORD_SETTINGS, environment):
            default = Default(name, value)
            # A variable set for this run had its default read in the other one.
            if name not in environment and default not in seen:
                seen.add(default)
                yield default


@dataclass(frozen=True)
class Place:
    path: str
    read: Callable[[Path], Iterator[Default]]
    may_define_none: bool = False  # e.g. a start file that takes every default from common.sh

    @functools.cached_property
    def defaults(self) -> list[Default]:
        return list(self.read(REPO / self.path))


PLACES = [
    Place("app/config/settings.py", django_settings),
    *(
        Place(f"deploy/servers/{path.name}", shell_assignments, may_define_none=path.name != "common.sh")
        for path in sorted((REPO / "deploy/servers").glob("*.sh"))
    ),
    Place("deploy/bin/run_daphne.py", python_environ),
    Place("nginx/entrypoint.sh", shell_assignments),
    Place("scripts/bootstrap.sh", shell_assignments),
    Place("compose.yaml", interpolations),
    Place("compose.tls.yaml", interpolations),
    Place("compose.redis-ha.yaml", interpolations),
    Place("deploy/Dockerfile", dockerfile),
    Place("Makefile", makefile),
    Place("deploy/swarm/stack.yaml", interpolations),
    Place("deploy/swarm/monitoring.yaml", interpolations),
    Place("deploy/swarm/stack.sh", shell_assignments),
    Place("deploy/swarm/redis-ha.yaml", interpolations),
    Place("deploy/swarm/cluster.sh", shell_assignments),
    Place("deploy/k8s/base/config.env", env_file),
    Place("deploy/k8s/base", kubernetes_env, may_define_none=True),
    Place("deploy/systemd/env.example", env_file),
    Place("deploy/prometheus/prometheus.yml", prometheus_scrape_ports),
    Place("deploy/k8s", kubernetes_metrics_ports),
    # The harness runs the start files with values of its own (a short graceful stop), and its
    # tests send messages of the start files' default size.
    Place("tests/harness/app.py", module_constants, may_define_none=True),
]


def same(documented_value: str | None, value: str) -> bool:
    """Equal as text, or as numbers (settings.py's 5.0 is .env.example's 5)."""
    if documented_value is None:  # no default documented: none may be given either
        return value == ""
    if documented_value == value:
        return True
    try:
        return float(documented_value) == float(value)
    except ValueError:
        return False


def drift(place: Place) -> list[str]:
    """What is wrong in one place: a value that differs from .env.example's, a variable it lacks."""
    variables = documented()
    problems = []
    for default in place.defaults:
        if default.name not in variables:
            if default.name not in INTERNAL:
                problems.append(f"{default.name}: defined in {place.path}, not documented in .env.example")
            continue
        if default.value is None or (default.name, place.path) in DELIBERATE:
            continue
        if not same(variables[default.name], default.value):
            shown = "no default" if variables[default.name] is None else repr(variables[default.name])
            problems.append(f"{default.name}: {place.path} has {default.value!r}, .env.example has {shown}")
    return problems


def test_env_example_lists_each_variable_once() -> None:
    names = re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize("place", PLACES, ids=lambda place: place.path)
def test_defaults_match_env_example(place: Place) -> None:
    if not place.may_define_none:
        assert place.defaults, f"{place.path}: no default found, the reader no longer matches the file"
    assert drift(place) == []


def test_exceptions_are_still_needed() -> None:
    """An entry in the tables above whose reason is gone (the value now agrees, the variable is now
    documented or defined nowhere) is removed, so the tables keep describing the tree."""
    variables = documented()
    defined = {place.path: place.defaults for place in PLACES}
    stale = []
    for name, path in DELIBERATE:
        values = [d.value for d in defined.get(path, []) if d.name == name and d.value is not None]
        if all(same(variables.get(name), value) for value in values):
            stale.append(f"DELIBERATE {name} in {path}: {path} agrees with .env.example or defines no {name}")
    all_names = {d.name for defaults in defined.values() for d in defaults}
    stale += [f"INTERNAL {name}: now documented" for name in INTERNAL if name in variables]
    stale += [f"INTERNAL {name}: defined nowhere any more" for name in INTERNAL if name not in all_names]
    assert stale == []
