"""``make loadtest SCENARIO=soak``: the soak on the local stack, its verdict on the terminal.

``SOAK_MINUTES`` (default 30) sets the churn's length; ``USERS`` the churning users (100). The
stack runs with two app replicas at least, so rooms span replicas and the channel layer carries
every broadcast. Results land in the run's folder: samples.jsonl, soak.json, charts/soak-*.png,
Locust's reports (prime_*, locust_*) and every container's log (containers.log).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loadtests.bench import procs
from loadtests.bench.config import ConfigError
from loadtests.soak import run, summary
from stackctl import Stack

MIN_REPLICAS = 2


def minutes_from_environment(environ: dict[str, str] | None = None) -> float:
    raw = (environ if environ is not None else dict(os.environ)).get("SOAK_MINUTES", "").strip()
    if not raw:
        return run.DEFAULT_MINUTES
    try:
        minutes = float(raw)
    except ValueError:
        raise ConfigError(f"SOAK_MINUTES must be a number of minutes, got {raw!r}") from None
    if not minutes > 0:
        raise ConfigError(f"SOAK_MINUTES must be > 0, got {raw!r}")
    return minutes


def plan_for(users: int | None, environ: dict[str, str] | None = None) -> run.SoakPlan:
    plan = run.plan_from_minutes(minutes_from_environment(environ), users=users or run.DEFAULT_USERS)
    problems = plan.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    return plan


def soak(stack: Stack, plan: run.SoakPlan, out: Path, workers: int, extra: tuple[str, ...]) -> int:
    """Run the soak on the stack that is up; its exit status (0 pass, 1 fail, 130 interrupted)."""
    print(
        f"soak: {plan.churn / 60:g} min of churn by {plan.users} users (+{run.HTTP_USERS} HTTP), "
        f"about {plan.seconds / 60:.0f} min in all; samples every {plan.interval:g} s in {out}/samples.jsonl",
        flush=True,
    )
    try:
        with procs.interruptible():
            result = run.run_soak(
                plan,
                run.targets_of(stack),
                run.LocustFor(stack.base_url, workers, extra),
                out,
                sys.executable,
            )
    except procs.Interrupted as exc:
        print(f"soak: {exc}; what was sampled is in {out}/", file=sys.stderr)
        return 128 + exc.signum
    finally:
        run.save_container_logs(stack, out)
    print(summary.table(result))
    print(f"soak: {summary.headline(result)}; charts in {out}/charts/")
    return 0 if result.get("passed") else 1
