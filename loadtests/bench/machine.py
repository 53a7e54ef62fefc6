"""What the report records about the machine, the host's tools and the stack's software."""

import importlib.metadata
import json
import os
import platform
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loadtests.bench import procs, server_process
from loadtests.bench.config import ROOT
from loadtests.bench.stack import Stack

SERVERS_DIR = ROOT / "deploy" / "servers"

# Python packages whose versions the report lists, as the app image has them.
STACK_PACKAGES = (
    "django", "channels", "channels-redis", "asgiref", "psycopg", "redis",
    "daphne", "twisted", "uvicorn", "uvloop", "httptools", "websockets",
    "hypercorn", "granian", "gunicorn",
)  # fmt: skip

_VERSIONS_SCRIPT = f"""
import importlib.metadata as m, json, platform
found = {{"python": platform.python_version()}}
for name in {list(STACK_PACKAGES)!r}:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


def parse_cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def parse_mem_total(meminfo: str) -> int:
    """Bytes of ``MemTotal`` in a ``/proc/meminfo`` text (0 when absent)."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    os_release = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', _read("/etc/os-release"), re.MULTILINE))
    return {
        "cpu_model": parse_cpu_model(_read("/proc/cpuinfo")),
        "cpu_cores": os.cpu_count() or 0,
        "cpu_cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_bytes": parse_mem_total(_read("/proc/meminfo")),
        "os": os_release.get("PRETTY_NAME", platform.system()),
        "kernel": platform.release(),
        "architecture": platform.machine(),
    }


def _first_line(command: list[str], any_exit: bool = False) -> str | None:
    """The first line a tool prints, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        return None
    result = procs.run(command, timeout=60)
    lines = result.output.strip().splitlines()
    if not lines or (result.returncode != 0 and not any_exit):
        return None
    return lines[0].strip()


def host_versions() -> dict[str, str]:
    compose = _first_line(["docker", "compose", "version"]) or _first_line(
        ["docker-compose", "version", "--short"]
    )
    return {
        "python": platform.python_version(),
        "locust": importlib.metadata.version("locust"),
        "websocket-client": importlib.metadata.version("websocket-client"),
        # `wrk -v` prints its version, then its usage, and exits with 1.
        "wrk": _first_line(["wrk", "-v"], any_exit=True) or "not installed",
        "docker": _first_line(["docker", "version", "--format", "{{.Server.Version}}"]) or "unknown",
        "compose": compose or "unknown",
    }


def docker_userland_proxy(port: int) -> bool:
    """Whether Docker's userland proxy (a process per published port) carries ``port``.

    It relays every byte between the host's loopback and the container, so it takes CPU from the
    same cores; the report says whether it was in the path.
    """
    result = procs.run(["ps", "-eo", "args"], timeout=30)
    return any(
        "docker-proxy" in line and f"-host-port {port} " in f"{line} " for line in result.output.splitlines()
    )


def _version_in(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else f"unknown ({text.strip()[:80]})"


def stack_versions(stack: Stack) -> dict[str, str]:
    """Versions inside the running stack: Python and every server from an app container, then
    Nginx, Redis and PostgreSQL from theirs."""
    versions: dict[str, str] = {}
    app = stack.containers("app")
    if app:
        result = stack.run_in(app[0], "python", "-c", _VERSIONS_SCRIPT)
        if result.returncode == 0:
            versions.update(json.loads(result.output.strip().splitlines()[-1]))
    for service, name, command, pattern in (
        ("nginx", "nginx", ["nginx", "-v"], r"nginx/(\S+)"),
        ("redis", "redis-server", ["redis-server", "--version"], r"v=(\S+)"),
        ("postgres", "postgresql", ["postgres", "--version"], r"\(PostgreSQL\)\s+(\S+)"),
    ):
        containers = stack.containers(service)
        if containers:
            versions[name] = _version_in(stack.run_in(containers[0], *command).output, pattern)
    return versions


def image_of(stack: Stack, service: str = "app") -> str:
    """The image id the service's first container runs (the same build for every variant)."""
    containers = stack.containers(service)
    if not containers:
        return "unknown"
    result = procs.run(["docker", "inspect", "--format", "{{.Image}}", containers[0]], timeout=60)
    return result.output.strip() if result.returncode == 0 else "unknown"


def server_settings(stack: Stack, container: str, extra_names: Iterable[str] = ()) -> dict[str, Any]:
    """The command line and start-file variables the server in ``container`` runs with
    (``server_process``), and ``extra_names`` (an app profile's); ``{"error": ...}`` when they
    cannot be read.

    Of the start files' variables only those of the server that runs there (its SERVER) are kept:
    compose passes every variant's to every container, and the others mean nothing there.
    """
    every = server_process.start_file_variables(SERVERS_DIR)
    names = sorted({*every, "SERVER", *extra_names})
    source = Path(server_process.__file__).read_text()
    result = stack.run_in(container, "python", "-c", source, json.dumps(names))
    if result.returncode != 0:
        return {"error": f"reading the server process failed: {result.tail(3)}"}
    try:
        found = json.loads(result.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unexpected answer: {result.tail(3)}"}
    server = found["env"].get("SERVER")
    if server is not None:
        others = set(every) - set(server_process.start_file_variables(SERVERS_DIR, server))
        found["env"] = {k: v for k, v in found["env"].items() if k not in others}
    return {"container": container, **found}
