"""One compose stack of the project, driven through the Makefile exactly as a user would.

``make up`` builds the image if needed, starts everything and waits for health; ``make clean``
removes the stack with its volumes. What the bench adds on top: its own project name and port,
Nginx's per-address limits raised (every Locust user comes from one address), extra compose files
(an app profile's environment, the ceiling's hello-world), and a check that nothing is left.

The variants, free ports and which variables a stack must not inherit are stackctl's, as for the
test suites. Unlike stackctl.Stack, every command here runs through ``procs`` (a session of its
own, its output in the stage's log, stopped in order on Ctrl-C), and the stack is taken by name.
"""

import contextlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.bench import procs
from loadtests.bench.config import ROOT
from stackctl.stack import inherited_environment

COMPOSE_FILE = ROOT / "compose.yaml"
UP_TIMEOUT = 900.0  # a first `make up` builds the image
DOWN_TIMEOUT = 300.0

# Nginx limits each client address (nginx/entrypoint.sh). Under load every user shares the one
# address of the generator, so the defaults would answer 429s: load tests raise them out of reach.
LOAD_TEST_LIMITS = {
    "API_RATE": "1000000r/s",
    "API_BURST": "1000000",
    "WS_HANDSHAKE_RATE": "1000000r/s",
    "WS_HANDSHAKE_BURST": "1000000",
    "WS_CONN_PER_IP": "65535",  # limit_conn's largest value
}

_LABEL = "com.docker.compose.project"


class StackError(RuntimeError):
    """The stack did not come up (or down); the message carries the end of the log."""


def app_environment_override(env: Mapping[str, str]) -> str:
    """A compose file adding ``env`` to the app containers (``app`` and the ``ws`` sidecar).

    Values are written as JSON strings, which YAML reads as the same strings.
    """
    lines = ["# Written by loadtests/bench: the app profile's environment.", "services:"]
    for service in ("app", "ws"):
        lines += [f"  {service}:", "    environment:"]
        lines += [f"      {key}: {json.dumps(value)}" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def memory_pattern(project: str) -> str:
    """Names of the app containers (compose v1 ``P_app_1``, v2 ``P-app-1``), sidecar included."""
    return rf"^{re.escape(project)}[-_](app|ws)[-_][0-9]+$"


@dataclass
class Stack:
    server: str
    project: str
    port: int
    logs: Path  # folder for make's output
    compose_files: Sequence[Path] = ()  # on top of compose.yaml
    env: Mapping[str, str] = field(default_factory=dict)  # for make and compose (WEB_CONCURRENCY, ...)
    limits: Mapping[str, str] = field(default_factory=lambda: dict(LOAD_TEST_LIMITS))
    replicas: int = 0  # as last brought up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        files = [COMPOSE_FILE, *self.compose_files]
        return {
            **inherited_environment(),
            **self.limits,
            **self.env,
            # For compose commands the Makefile runs without -f (make clean).
            "COMPOSE_FILE": os.pathsep.join(str(path) for path in files),
        }

    def make_variables(self) -> list[str]:
        """The Makefile variables that select this stack (the bench always runs plain HTTP)."""
        variables = [f"SERVER={self.server}", f"PROJECT={self.project}", f"HTTP_PORT={self.port}", "TLS=0"]
        if self.compose_files:
            files = [COMPOSE_FILE, *self.compose_files]
            variables.append("COMPOSE_FILES=" + " ".join(f"-f {path}" for path in files))
        return variables

    def make(self, target: str, *extra: str, timeout: float, log: str) -> procs.Completed:
        command = ["make", "--no-print-directory", target, *self.make_variables(), *extra]
        return procs.run(command, timeout=timeout, log=self.logs / log, env=self.environment())

    def up(self, replicas: int = 1) -> None:
        """Start (or rescale) the stack and wait until every container is healthy."""
        result = self.make("up", f"REPLICAS={replicas}", timeout=UP_TIMEOUT, log="up.log")
        if result.returncode != 0 or result.timed_out:
            reason = "timed out" if result.timed_out else f"exit {result.returncode}"
            failed = self.save_container_logs()
            command = f"make up SERVER={self.server} REPLICAS={replicas}"
            raise StackError(
                f"{command} failed ({reason}); exited with an error: {', '.join(failed) or 'no container'} "
                f"(logs in {self.logs / 'containers'}): {self._log_tail('up.log', 8)}"
            )
        self.replicas = replicas

    def save_container_logs(self) -> list[str]:
        """Every container's log into ``logs/containers/``; returns those that exited non-zero."""
        listing = procs.run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label={_LABEL}={self.project}",
                "--format",
                "{{.Names}}\t{{.Status}}",
            ],
            timeout=60,
        )
        failed = []
        for line in listing.output.splitlines():
            name, _, status = line.partition("\t")
            if not name:
                continue
            logs = procs.run(["docker", "logs", "--tail", "200", name], timeout=60)
            path = self.logs / "containers" / f"{name}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{status}\n{logs.output}")
            if status.startswith("Exited") and not status.startswith("Exited (0)"):
                failed.append(f"{name} ({status})")
        return failed

    def down(self) -> list[str]:
        """Remove the stack and its volumes; returns what had to be removed by force (nothing, normally)."""
        result = self.make("clean", timeout=DOWN_TIMEOUT, log="down.log")
        leftovers = self.resources()
        forced: list[str] = []
        for kind, ids in leftovers.items():
            if ids:
                remove = {
                    "container": ["rm", "-f"],
                    "network": ["network", "rm"],
                    "volume": ["volume", "rm", "-f"],
                }[kind]
                procs.run(["docker", *remove, *ids], timeout=120, log=self.logs / "down.log")
                forced += [f"{kind} {item}" for item in ids]
        still = {kind: ids for kind, ids in self.resources().items() if ids}
        if still:
            raise StackError(f"make clean left {still} behind (exit {result.returncode})")
        return forced

    def resources(self) -> dict[str, list[str]]:
        """This project's containers, networks and volumes (by compose's project label)."""
        found: dict[str, list[str]] = {}
        for kind, command in (
            ("container", ["docker", "ps", "-aq"]),
            ("network", ["docker", "network", "ls", "-q"]),
            ("volume", ["docker", "volume", "ls", "-q"]),
        ):
            result = procs.run([*command, "--filter", f"label={_LABEL}={self.project}"], timeout=60)
            found[kind] = result.output.split() if result.returncode == 0 else []
        return found

    def containers(self, service: str) -> list[str]:
        """Names of the running containers of ``service``."""
        result = procs.run(
            [
                "docker", "ps", "--format", "{{.Names}}",
                "--filter", f"label={_LABEL}={self.project}",
                "--filter", f"label=com.docker.compose.service={service}",
            ],
            timeout=60,
        )  # fmt: skip
        return sorted(result.output.split()) if result.returncode == 0 else []

    def compose_config(self) -> str:
        """The effective compose configuration (every value resolved), as the report's record.

        Asked of the Makefile's own COMPOSE command (``--eval``), so the compose binary, project and
        profiles are the ones ``make up`` used.
        """
        result = procs.run(
            [
                "make", "-s", "--no-print-directory",
                "--eval", "bench-compose-config: ; @$(COMPOSE) config", "bench-compose-config",
                *self.make_variables(), f"REPLICAS={self.replicas or 1}",
            ],
            timeout=120,
            env=self.environment(),
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"compose config failed: {result.tail()}")
        return result.output

    def container_env(self, container: str) -> dict[str, str]:
        """The environment a container was started with."""
        result = procs.run(["docker", "inspect", "--format", "{{json .Config.Env}}", container], timeout=60)
        if result.returncode != 0:
            raise StackError(f"docker inspect {container} failed: {result.tail()}")
        return dict(item.partition("=")[::2] for item in json.loads(result.output))

    def exec(self, container: str, *command: str, timeout: float = 60) -> procs.Completed:
        return procs.run(["docker", "exec", container, *command], timeout=timeout)

    def get(
        self, path: str, port: int | None = None, timeout: float = 5
    ) -> tuple[int, dict[str, str], bytes]:
        """One GET through the published port: status, headers (lower-case), body."""
        url = f"http://127.0.0.1:{port or self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def healthy(self) -> bool:
        """Nginx answers and the app behind it too (the stack's liveness endpoint)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return self.get("/healthz")[0] == 200
        return False

    def _log_tail(self, name: str, lines: int = 25) -> str:
        path = self.logs / name
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def write_override(path: Path, env: Mapping[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(app_environment_override(env))
    return path
