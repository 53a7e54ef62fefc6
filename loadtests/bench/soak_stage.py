"""The bench's ``soak`` step: loadtests/soak on the stage's stack, its result in results.json.

Selected by ``BENCH_SCENARIOS`` only (never by default, nor by ``BENCH_QUICK``); settings in the
``soak`` section (``BENCH_SET="soak.minutes=10"``, or ``SOAK_MINUTES``). The stage scales its
stack to ``soak.replicas`` first. What the soak wrote (samples.jsonl, soak.json, charts/, Locust's
reports, and every container's log in containers.log, for the warnings a leak leaves there) stays
in ``runs/<stage>/soak/``; the report shows the verdicts and charts per variant.
"""

from __future__ import annotations

import sys
from typing import Any

from loadtests.bench.config import BenchConfig
from loadtests.bench.scenarios import PLAN_LOCUST_START
from loadtests.soak import run

FOLDER = "soak"


def plan(config: BenchConfig) -> run.SoakPlan:
    soak = config.soak
    return run.plan_from_minutes(soak.minutes, users=soak.users, interval=soak.interval)


def planned(config: BenchConfig) -> float:
    """Seconds, for the progress estimate: the plan and two Locust start-ups (the prime's, the churn's)."""
    return plan(config).seconds + 2 * PLAN_LOCUST_START


def run_soak(bench: Any, stage: Any) -> None:
    """Soak the stage's stack (``bench.stack``, scaled already); append the result to the results."""
    stack = bench.stack
    assert stack is not None
    out = bench.out / "runs" / stage.folder / FOLDER
    locust = run.LocustFor(stack.base_url, bench.workers)
    try:
        result = run.run_soak(plan(bench.config), run.targets_of(stack), locust, out, sys.executable)
    finally:
        run.save_container_logs(stack, out)
    result.update(
        stage=stage.name, target=stage.target, profile=stage.profile_name, dir=str(out.relative_to(bench.out))
    )
    bench.results.soaks.append(result)
    if result.get("locust", {}).get("timed_out"):
        bench.error(stage.name, "soak", f"Locust did not stop in time (see {out}/locust.log)")
