"""Samples of the stack's resources every few seconds, appended to a JSON-lines file as they come.

One sample reads every app container (the app service and, for a WSGI variant, its ``ws``
sidecar), Redis and Nginx at once (a thread per probe, so the figures of one sample are taken
within the same second or two), and carries the phase of the soak it was taken in. A probe that
fails leaves its figures out of that sample and says why in ``errors``; the sampling goes on.

Each line of ``samples.jsonl``::

    {"t": 12.0, "phase": "churn", "totals": {"rss_bytes": ..., "fds": ..., ...},
     "containers": {"rtd-app-1": {"rss_bytes": ..., "processes": [...], ...}},
     "redis": {...}, "nginx": {...}, "errors": []}
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.soak import probes
from stackctl import run

PROBE_TIMEOUT = 30.0

# A command run in a container: (container, argv, stdin) → (exit status, stdout, stderr).
Exec = Callable[[str, Sequence[str], str | None], tuple[int, str, str]]


def docker_exec(container: str, argv: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
    command = ["docker", "exec", *(["-i"] if stdin is not None else []), container, *argv]
    try:
        done = run(command, timeout=PROBE_TIMEOUT, input=stdin)
    except subprocess.TimeoutExpired:
        return 124, "", f"no answer within {PROBE_TIMEOUT:.0f} s"
    return done.returncode, done.stdout, done.stderr


@dataclass(frozen=True)
class Targets:
    """The containers one sample reads (names or ids)."""

    apps: tuple[str, ...]
    redis: str
    nginx: str


@dataclass
class Sampler:
    targets: Targets
    path: Path  # samples.jsonl, appended to
    interval: float = 5.0
    execute: Exec = docker_exec
    clock: Callable[[], float] = time.monotonic
    phase: str = "baseline"  # set by the soak as it moves on
    started: float = field(default=0.0, init=False)
    samples: list[dict[str, Any]] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    # --- one sample ----------------------------------------------------------------------------

    def _probe(self, container: str, argv: Sequence[str], stdin: str | None, parse: Callable) -> Any:
        code, out, err = self.execute(container, argv, stdin)
        if code != 0:
            raise probes.ProbeError(f"exit {code}: {(err or out).strip()[-300:]}")
        return parse(out)

    def sample_once(self) -> dict[str, Any]:
        t = self.clock() - self.started
        phase = self.phase
        jobs: dict[str, tuple[str, Sequence[str], str | None, Callable]] = {
            f"app {name}": (name, ("python", "-"), probes.APP_PROBE, probes.parse_app)
            for name in self.targets.apps
        }
        jobs["redis"] = (self.targets.redis, probes.REDIS_COMMAND, None, probes.parse_redis)
        jobs["nginx"] = (self.targets.nginx, probes.NGINX_COMMAND, None, probes.parse_nginx)
        found: dict[str, Any] = {}
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {key: pool.submit(self._probe, *job) for key, job in jobs.items()}
            for key, future in futures.items():
                try:
                    found[key] = future.result()
                except (probes.ProbeError, OSError, subprocess.SubprocessError) as exc:
                    errors.append(f"{key}: {exc}")
        apps = {name: found[f"app {name}"] for name in self.targets.apps if f"app {name}" in found}
        sample: dict[str, Any] = {
            "t": round(t, 2),
            "phase": phase,
            "containers": apps,
            "redis": found.get("redis"),
            "nginx": found.get("nginx"),
            "errors": errors,
        }
        # Totals only from a complete sample: a sum over fewer containers would read as a drop.
        complete = len(apps) == len(self.targets.apps) and "redis" in found and "nginx" in found
        sample["totals"] = probes.totals(apps, found["redis"], found["nginx"]) if complete else None
        return sample

    def record(self, sample: dict[str, Any]) -> None:
        self.samples.append(sample)
        with self.path.open("a") as out:
            out.write(json.dumps(sample, separators=(",", ":")) + "\n")

    # --- in the background ---------------------------------------------------------------------

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started = self.clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = self.clock()
            self.record(self.sample_once())
            self._stop.wait(max(0.0, self.interval - (self.clock() - began)))

    def stop(self, timeout: float = PROBE_TIMEOUT + 5) -> None:
        """Stop after the sample being taken (if any); returns once the thread has ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The samples of a ``samples.jsonl`` (none before the first; a line cut short is skipped)."""
    if not path.exists():
        return []
    samples = []
    for line in path.read_text().splitlines():
        try:
            samples.append(json.loads(line))
        except ValueError:
            continue
    return samples
