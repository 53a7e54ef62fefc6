"""One compose stack of the project for the bench: stackctl's Stack, with the bench's additions.

stackctl drives the stack exactly as a user would (``make up`` builds, starts and waits for health;
``make clean`` removes it with its volumes), for the test suites and the bench alike. What the bench
adds: Nginx's per-address limits raised (every Locust user comes from one address), extra compose
files (an app profile's environment, the ceiling's hello-world), every make command in a session of
its own (stopped in order on Ctrl-C, see ``procs``) with its output in the stage's ``stack.log``,
every container's log saved when the stack does not come up, and plain HTTP requests to it.
"""

import contextlib
import json
import re
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.bench import procs
from stackctl import stack as stackctl
from stackctl.stack import COMPOSE_FILE, StackError

__all__ = ["COMPOSE_FILE", "LOAD_TEST_LIMITS", "Stack", "StackError", "memory_pattern", "write_override"]

# Nginx limits each client address (nginx/entrypoint.sh). Under load every user shares the one
# address of the generator, so the defaults would answer 429s: load tests raise them out of reach.
LOAD_TEST_LIMITS = {
    "API_RATE": "1000000r/s",
    "API_BURST": "1000000",
    "WS_HANDSHAKE_RATE": "1000000r/s",
    "WS_HANDSHAKE_BURST": "1000000",
    "WS_CONN_PER_IP": "65535",  # limit_conn's largest value
}


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
class Stack(stackctl.Stack):
    logs: Path = Path("results")  # the stage's folder: stack.log, and containers.log if up fails
    limits: Mapping[str, str] = field(default_factory=lambda: dict(LOAD_TEST_LIMITS))

    @property
    def url(self) -> str:
        return self.base_url

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.limits, **self.env}

    def serves_metrics(self) -> bool:
        """Whether the app containers run the metrics exporter (METRICS=0, e.g. an app profile's,
        turns it off: then the bench reads no /metrics)."""
        return all(
            self.container_env(container).get("METRICS", "1") != "0"
            for service in self.app_services
            for container in self.containers(service)
        )

    def run_make(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        done = procs.run(argv, timeout=timeout, env=self.environment())
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "stack.log").open("a") as log:
            log.write(f"$ {shlex.join(argv)}\n{done.output}")
        if done.timed_out:
            raise subprocess.TimeoutExpired(argv, timeout, output=done.output)
        return subprocess.CompletedProcess(argv, done.returncode, done.output, "")

    def up(self, replicas: int | None = None) -> None:
        try:
            super().up(replicas)
        except StackError as exc:
            saved = self.logs / "containers.log"
            saved.write_text(self.logs_report(tail=200))
            raise StackError(f"{exc}\n(every container's log: {saved})") from exc

    def run_in(self, container: str, *command: str, timeout: float = 60) -> procs.Completed:
        """``command`` in ``container``, its output; never raises on a non-zero exit."""
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


def write_override(path: Path, env: Mapping[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(app_environment_override(env))
    return path
