"""One soak of a running stack: prime, baseline, churn, settle, then the verdict and the charts.

    prime (Locust) ── quiet ── baseline ── churn (Locust, warm-up first) ── settle ── after
    sampled all along, every ``interval`` seconds, into samples.jsonl

The prime is a short run of the same churn before the baseline: the pools that grow on demand up
to a bound and keep what they grew (Redis connections, a worker's thread pool, database
connections) reach their working size there, so the baseline is the stack at rest *after* it has
served this load once, and a return to it after the churn means nothing accumulated.

The phases are the sampler's: each sample says which one it was taken in, and the verdict
(``verdict.py``) reads them back. A Ctrl-C (or SIGTERM) inside ``procs.interruptible()`` stops
Locust, stops the sampler after the sample it is taking, writes what was measured so far (with
``status: interrupted`` and no verdict) and goes on as ``procs.Interrupted``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.bench import procs
from loadtests.bench.locust_csv import LocustRun
from loadtests.soak import charts, verdict
from loadtests.soak.sampler import Sampler, Targets
from stackctl import Stack

DEFAULT_MINUTES = 30.0
MAX_WARMUP = 300.0  # the first five minutes of a long soak are not judged
MAX_WINDOW = 60.0  # seconds of each median of the memory growth rule
DEFAULT_USERS = 100  # churning users (plus the HTTP users)
SPAWN_RATE = 10.0


@dataclass(frozen=True)
class SoakPlan:
    churn: float  # seconds of churn
    prime: float = 30.0  # seconds of the same churn before the baseline (not judged)
    quiet: float = 15.0  # seconds between the prime and the baseline
    baseline: float = 20.0  # seconds sampled before the churn
    settle: float = 30.0  # seconds after the churn before the return to baseline is judged
    after: float = 20.0  # seconds sampled for that judgement
    interval: float = 5.0  # seconds between two samples
    users: int = DEFAULT_USERS
    spawn_rate: float = SPAWN_RATE

    @property
    def warmup(self) -> float:
        """Not judged: the first 5 minutes, or the first third of a shorter churn."""
        return min(MAX_WARMUP, self.churn / 3)

    @property
    def window(self) -> float:
        return min(MAX_WINDOW, (self.churn - self.warmup) / 3)

    @property
    def seconds(self) -> float:
        """Planned length (Locust's start-up and the last sample aside)."""
        return self.prime + self.quiet + self.baseline + self.churn + self.settle + self.after

    def problems(self) -> list[str]:
        problems = [
            f"{name} must be > 0, got {value!r}"
            for name, value in (
                ("the churn", self.churn), ("the prime", self.prime), ("the quiet time", self.quiet),
                ("the baseline", self.baseline), ("the settle time", self.settle),
                ("the judged time after it", self.after), ("the sampling interval", self.interval),
                ("the spawn rate", self.spawn_rate),
            )
            if not value > 0
        ]  # fmt: skip
        if self.users < 1:
            problems.append(f"the churning users must be >= 1, got {self.users}")
        for name, seconds in (("baseline", self.baseline), ("after", self.after)):
            if 0 < seconds < self.interval:
                problems.append(f"the {name} ({seconds:g} s) must last at least one sampling interval")
        return problems


def plan_from_minutes(minutes: float, **overrides: Any) -> SoakPlan:
    return SoakPlan(churn=minutes * 60.0, **overrides)


def targets_of(stack: Stack) -> Targets:
    """The stack's app containers (with the ``ws`` sidecar of a WSGI variant), Redis and Nginx."""
    apps = tuple(name for service in stack.app_services for name in stack.containers(service, names=True))
    return Targets(apps=apps, redis=stack.container("redis"), nginx=stack.container("nginx"))


# Lines kept of each container's log: the whole soak of an app server's warnings, not Nginx's access log.
CONTAINER_LOG_LINES = 20_000


def save_container_logs(stack: Stack, out: Path) -> Path:
    """Every container's log (its last ``CONTAINER_LOG_LINES``) beside the samples: containers.log."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "containers.log"
    path.write_text(stack.logs_report(tail=CONTAINER_LOG_LINES))
    return path


def wait(seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Sleep ``seconds``, in short steps so that a signal's handler runs promptly."""
    end = clock() + seconds
    while (left := end - clock()) > 0:
        time.sleep(min(left, 0.5))


HTTP_USERS = 2


@dataclass(frozen=True)
class LocustFor:
    """Locust runs of the churn (the prime's and the measured one) against ``host``."""

    host: str
    workers: int = 0  # Locust worker processes (0: one process)
    extra: tuple[str, ...] = ()  # more options, e.g. ("--soak-idle", "3")

    def __call__(self, plan: SoakPlan, seconds: float, prefix: Path) -> LocustRun:
        """The churning users plus ``HTTP_USERS`` on every endpoint, for ``seconds``."""
        return LocustRun(
            scenario="soak",
            host=self.host,
            users=plan.users + HTTP_USERS,
            spawn_rate=plan.spawn_rate,
            seconds=seconds,
            prefix=prefix,
            processes=self.workers,
            options=("--soak-http-users", str(HTTP_USERS), *self.extra),
        )


def run_soak(
    plan: SoakPlan,
    targets: Targets,
    locust: LocustFor,
    out: Path,
    python: str,
    sampler_factory: Callable[..., Sampler] = Sampler,
) -> dict[str, Any]:
    """Sample, churn, settle; writes samples.jsonl, soak.json and the charts under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").unlink(missing_ok=True)
    sampler = sampler_factory(targets=targets, path=out / "samples.jsonl", interval=plan.interval)
    result: dict[str, Any] = {
        "plan": {**asdict(plan), "warmup": plan.warmup, "window": plan.window},
        "containers": {"apps": list(targets.apps), "redis": targets.redis, "nginx": targets.nginx},
        "status": "interrupted",
    }
    prime, churn = locust(plan, plan.prime, out / "prime"), locust(plan, plan.churn, out / "locust")
    sampler.phase = "prime"
    sampler.start()
    try:
        primed = procs.run(prime.command(python), timeout=prime.timeout, log=out / "prime.log")
        result["prime"] = {"exit": primed.returncode, "timed_out": primed.timed_out}
        sampler.phase = "quiet"
        wait(plan.quiet)
        sampler.phase = "baseline"
        wait(plan.baseline)
        sampler.phase = "churn"
        result["churn_started"] = sampler.clock() - sampler.started
        done = procs.run(churn.command(python), timeout=churn.timeout, log=out / "locust.log")
        result["churn_ended"] = sampler.clock() - sampler.started
        result["locust"] = {"exit": done.returncode, "timed_out": done.timed_out}
        sampler.phase = "settle"
        wait(plan.settle)
        sampler.phase = "after"
        wait(plan.after)
        result["status"] = "complete"
    finally:
        with procs.shielded():
            sampler.stop()
            result["samples"] = len(sampler.samples)
            result["sample_errors"] = sum(len(s["errors"]) for s in sampler.samples)
            if result["status"] == "complete":
                timeline = verdict.Timeline(
                    result["churn_started"], result["churn_ended"], plan.warmup, plan.window
                )
                verdicts = verdict.judge(sampler.samples, timeline)
                result["verdicts"] = [v.as_dict() for v in verdicts]
                result["passed"] = verdict.overall(verdicts)
                result["charts"] = [
                    str(path.relative_to(out)) for path in charts.draw(sampler.samples, timeline, out)
                ]
            (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
