"""One compose project of the stack, brought up and down with the Makefile exactly as a user would.

``make up`` builds the image if needed, starts everything and waits until it is healthy; ``make
clean`` removes the project with its volumes. Every compose command goes through ``make compose
ARGS=...``, so it runs with the project, files and profiles ``make up`` used; every other command
is ``docker`` on this project's containers only (by compose's project label).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackctl.host import LOOPBACK, run
from stackctl.registry import ROOT, registry

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
UP_TIMEOUT = 900.0  # a first `make up` builds the image
COMMAND_TIMEOUT = 600.0
COMPOSE_FILE = ROOT / "compose.yaml"
TLS_COMPOSE_FILE = ROOT / "compose.tls.yaml"  # the Makefile lays it over compose.yaml when TLS=1
REDIS_HA_COMPOSE_FILE = ROOT / "compose.redis-ha.yaml"  # and this one when REDIS_HA=1
REDIS_SHARDED_COMPOSE_FILE = ROOT / "compose.redis-sharded.yaml"  # or this one when REDIS_SHARDED=1

# What the caller's environment must not pass on to the stack: make's own variables (when run from
# `make test` or `make bench`), the Makefile's per-stack exports (this stack sets its own), the test
# run's settings (pytest-env's throwaway key and log level), and the load generator's options.
_NOT_INHERITED = frozenset(
    {
        "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
        "SERVER", "WS_SERVER", "WS_HOST", "TLS", "HTTP_PORT", "HTTPS_PORT", "REPLICAS", "PROJECT",
        "MONITORING", "PROMETHEUS_PORT",
        "REDIS_HA", "REDIS_SHARDED",
        "DJANGO_SECRET_KEY", "DJANGO_HTTPS", "DJANGO_SETTINGS_MODULE", "LOG_LEVEL",
        "SCENARIO",
    }
)  # fmt: skip
_NOT_INHERITED_PREFIXES = ("LT_", "LOCUST_")


# Run in an app container by Stack.metrics: the request Prometheus makes, from the backend network.
_SCRAPE_METRICS = """
import os, socket, urllib.request
url = f"http://{socket.gethostname()}:{os.environ.get('METRICS_PORT') or 9100}/metrics"
print(urllib.request.urlopen(url, timeout=10).read().decode())
"""


# Run in a container by Stack.cpu_seconds: the CPU time of its cgroup (every process in it, exited
# ones included), from cgroup v2's cpu.stat or v1's cpuacct.
_CGROUP_CPU_SECONDS = """
from pathlib import Path
v2 = Path("/sys/fs/cgroup/cpu.stat")
if v2.exists():
    print(int(dict(line.split() for line in v2.read_text().splitlines())["usage_usec"]) / 1e6)
else:
    print(int(Path("/sys/fs/cgroup/cpuacct/cpuacct.usage").read_text()) / 1e9)
"""


class StackError(RuntimeError):
    """The stack did not come up (or go away); the message carries what make and Docker said."""


def said(result: subprocess.CompletedProcess[str]) -> str:
    """The end of what a make command wrote: stdout and stderr (one stream where the runner merges
    them, as the bench's does)."""
    return f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}".strip()


def inherited_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The caller's environment without what would leak its own choices into the stack."""
    return {
        key: value
        for key, value in environ.items()
        if key not in _NOT_INHERITED and not key.startswith(_NOT_INHERITED_PREFIXES)
    }


@dataclass
class Stack:
    server: str  # a variant of deploy/servers.txt
    project: str  # the compose project: never the user's own stack (realtime-django)
    http_port: int  # published on the loopback address
    replicas: int = 1
    https_port: int | None = None  # set: the stack runs with TLS=1
    prometheus_port: int | None = None  # set: with MONITORING=1, Prometheus published on this port
    env: Mapping[str, str] = field(default_factory=dict)  # for make and compose (WEB_CONCURRENCY, ...)
    compose_files: Sequence[Path] = ()  # laid over compose.yaml (and compose.tls.yaml)
    redis_ha: bool = False  # the channel layer on Redis with Sentinel (REDIS_HA=1)
    redis_sharded: bool = False  # the channel layer sharded over two Redis (REDIS_SHARDED=1)

    # --- Make and compose ------------------------------------------------------------------------

    def make_variables(self) -> list[str]:
        """The Makefile variables that select this stack."""
        variables = [
            f"SERVER={self.server}",
            f"PROJECT={self.project}",
            f"HTTP_PORT={self.http_port}",
            f"REPLICAS={self.replicas}",
        ]
        if self.https_port is not None:
            variables += ["TLS=1", f"HTTPS_PORT={self.https_port}"]
        else:
            variables.append("TLS=0")
        if self.monitoring:
            variables += ["MONITORING=1", f"PROMETHEUS_PORT={self.prometheus_port}"]
        if self.redis_ha:
            variables.append("REDIS_HA=1")
        if self.redis_sharded:
            variables.append("REDIS_SHARDED=1")
        if self.compose_files:
            variables.append("COMPOSE_FILES=" + " ".join(f"-f {path}" for path in self.all_compose_files()))
        return variables

    def all_compose_files(self) -> list[Path]:
        return [
            COMPOSE_FILE,
            *([TLS_COMPOSE_FILE] if self.tls else []),
            *([REDIS_HA_COMPOSE_FILE] if self.redis_ha else []),
            *([REDIS_SHARDED_COMPOSE_FILE] if self.redis_sharded else []),
            *self.compose_files,
        ]

    def environment(self) -> dict[str, str]:
        extra_files = {}
        if self.compose_files:  # also for the compose commands the Makefile runs without -f (make clean)
            extra_files = {"COMPOSE_FILE": os.pathsep.join(str(path) for path in self.all_compose_files())}
        return {**inherited_environment(), **self.env, **extra_files}

    def make(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``make <args>`` with this stack's variables; the completed process (its returncode)."""
        return self.run_make(["make", "--no-print-directory", *args, *self.make_variables()], timeout)

    def run_make(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Where every make command runs: here, to its end, its output captured. Subclasses that
        must log it or stop it in order (the bench) run it their way; TimeoutExpired on a timeout."""
        return run(argv, timeout=timeout, cwd=ROOT, env=self.environment())

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.make("compose", f"ARGS={shlex.join(args)}", timeout=timeout)

    def compose_config(self) -> str:
        """The effective compose configuration, every value resolved, as ``make up`` sees it."""
        result = self.compose("config")
        if result.returncode != 0:
            raise StackError(f"compose config failed (exit {result.returncode}): {said(result)}")
        return result.stdout

    def up(self, replicas: int | None = None) -> None:
        """Start (or rescale to ``replicas``) and wait until every container is healthy."""
        if replicas is not None:
            self.replicas = replicas
        try:
            result = self.make("up", timeout=UP_TIMEOUT)
        except subprocess.TimeoutExpired:
            reason, output = f"timed out after {UP_TIMEOUT:.0f} s", ""
        else:
            reason, output = f"exit {result.returncode}", said(result)
            if result.returncode == 0:
                return
        states = run(["docker", "ps", "-a", "--filter", f"label={PROJECT_LABEL}={self.project}"])
        command = f"make up {' '.join(self.make_variables())}"
        raise StackError(f"{command} failed ({reason}):\n{output}\n{states.stdout}")

    def clean(self) -> list[str]:
        """Remove the project, its volumes included (also one an interrupted run left behind).

        What ``make clean`` left behind is removed by force and returned (nothing, normally: a
        caller may report it); what even that cannot remove raises StackError.
        """
        result = self.make("clean")
        if result.returncode != 0:
            raise StackError(f"make clean failed (exit {result.returncode}): {said(result)}")
        removal = {"container": ["rm", "-f"], "network": ["network", "rm"], "volume": ["volume", "rm", "-f"]}
        forced: list[str] = []
        for kind, ids in self.resources().items():
            if ids:
                run(["docker", *removal[kind], *ids], timeout=120)
                forced += [f"{kind} {item}" for item in ids]
        still = {kind: ids for kind, ids in self.resources().items() if ids}
        if still:
            raise StackError(f"make clean left {still} behind, and removing it by force failed")
        return forced

    def resources(self) -> dict[str, list[str]]:
        """This project's containers, networks and volumes (by compose's project label)."""
        label = ["--filter", f"label={PROJECT_LABEL}={self.project}"]
        return {
            "container": self.docker("ps", "-aq", *label).stdout.split(),
            "network": self.docker("network", "ls", "-q", *label).stdout.split(),
            "volume": self.docker("volume", "ls", "-q", *label).stdout.split(),
        }

    # --- Services and containers -----------------------------------------------------------------

    @property
    def ws_service(self) -> str:
        """The compose service serving /ws/: the app itself, or the sidecar of a WSGI variant."""
        return "app" if registry()[self.server] == self.server else "ws"

    @property
    def app_services(self) -> list[str]:
        """The services running the app image's servers: app, and ws for a WSGI variant."""
        return sorted({"app", self.ws_service})

    def containers(
        self, service: str | None = None, *, running: bool = True, names: bool = False
    ) -> list[str]:
        """IDs (``names``: names) of the project's containers (of one service), running or
        (``running=False``) all."""
        filters = ["--filter", f"label={PROJECT_LABEL}={self.project}"]
        if service:
            filters += ["--filter", f"label={SERVICE_LABEL}={service}"]
        listing = ["--format", "{{.Names}}"] if names else ["-q", "--no-trunc"]
        result = self.docker("ps", *listing, *([] if running else ["-a"]), *filters)
        return sorted(result.stdout.split())

    def container(self, service: str) -> str:
        """The one running container of ``service`` (redis, postgres, nginx, or a single replica)."""
        found = self.containers(service)
        if len(found) != 1:
            raise StackError(f"{self.project}: {len(found)} running containers of {service}, expected 1")
        return found[0]

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(self.docker("inspect", container).stdout)[0]

    def container_env(self, container: str) -> dict[str, str]:
        """The environment a container was started with."""
        return dict(item.partition("=")[::2] for item in self.inspect(container)["Config"]["Env"])

    def docker(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``docker <args>``; a failure raises StackError with what Docker said."""
        result = run(["docker", *args], timeout=timeout)
        if result.returncode != 0:
            raise StackError(f"docker {shlex.join(args)}: {result.stderr.strip()}")
        return result

    def exec(self, service: str, *command: str, timeout: float = 60) -> str:
        """Run ``command`` in the one container of ``service``; its stdout."""
        return self.docker("exec", self.container(service), *command, timeout=timeout).stdout

    def exec_python(self, container: str, script: str, timeout: float = 120) -> str:
        """Run a Python script in ``container`` (the app image has Django and websockets); its stdout."""
        result = run(["docker", "exec", "-i", container, "python", "-"], input=script, timeout=timeout)
        if result.returncode != 0:
            raise StackError(f"python in {container[:12]} failed: {result.stderr[-4000:]}")
        return result.stdout

    def metrics(self, container: str) -> str:
        """An app container's /metrics (Prometheus' text format), fetched inside it through its
        address on the backend network: the exporter listens there only, unpublished."""
        return self.exec_python(container, _SCRAPE_METRICS, timeout=30)

    def cpu_seconds(self, container: str) -> float:
        """The CPU seconds a container's processes have used since it started (its cgroup's account,
        whatever runs in it: with or without the metrics exporter)."""
        return float(self.exec_python(container, _CGROUP_CPU_SECONDS, timeout=30))

    def container_logs(self, container: str, *, tail: int | None = None, timestamps: bool = False) -> str:
        """What one container wrote, stdout and stderr interleaved."""
        options = [*(["--tail", str(tail)] if tail else []), *(["--timestamps"] if timestamps else [])]
        return run(["docker", "logs", *options, container], timeout=60, merged=True).stdout

    def logs(self, service: str) -> str:
        """Everything the containers of ``service`` wrote, stopped ones included."""
        return "\n".join(self.container_logs(c) for c in self.containers(service, running=False))

    def logs_report(self, tail: int | None = None) -> str:
        """Every container's log under its name, for a failure's report (the stack is gone after)."""
        parts = []
        for container in self.containers(running=False):
            name = self.inspect(container)["Name"].lstrip("/")
            parts.append(f"===== {name}\n{self.container_logs(container, tail=tail, timestamps=True)}")
        return "\n".join(parts)

    # --- Addresses ---------------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.https_port is not None

    @property
    def monitoring(self) -> bool:
        """Prometheus and Nginx's exporter run too (compose.yaml's profile `monitoring`)."""
        return self.prometheus_port is not None

    @property
    def prometheus_url(self) -> str:
        if self.prometheus_port is None:
            raise StackError(f"{self.project} runs without monitoring: no Prometheus")
        return f"http://{LOOPBACK}:{self.prometheus_port}"

    @property
    def port(self) -> int:
        """The port clients use: HTTPS when TLS is on (plain HTTP then only redirects there)."""
        return self.https_port if self.https_port is not None else self.http_port

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{LOOPBACK}:{self.port}"
