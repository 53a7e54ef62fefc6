"""A one-minute soak on the real stack (uvicorn, two replicas): every resource back to its baseline.

Asserts the mechanics only: every phase sampled, sessions that left in each of the three ways, and
after the churn every resource of the baseline and bounded rules back within its tolerance. Never a speed, and
not the memory growth: a minute says nothing about it (the bench's 30-minute soak does).
"""

import csv
import json
import sys

import pytest

from loadtests.bench.stack import Stack
from loadtests.lib import names
from loadtests.soak import run, verdict
from stackctl import free_port
from stackctl.testing import require_docker, running

PROJECT = "rtd-soak-ci"  # its own project: never the bench's, a user's, or another suite's
# The soak's own prime (30 s): with 10 s, a server process could still be short of its working
# thread count when the churn began, and reach it during the churn (12 to 14 threads).
PLAN = run.SoakPlan(churn=60, quiet=5, baseline=10, settle=10, after=15, interval=5, users=30)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_docker("soak test")
    stack = Stack(
        server="uvicorn",
        project=PROJECT,
        http_port=free_port(),
        replicas=2,
        logs=tmp_path_factory.mktemp("stack"),
    )
    with running(stack):
        yield stack


def test_a_short_soak_returns_every_resource_to_its_baseline(stack, tmp_path):
    locust = run.LocustFor(stack.url, workers=0, extra=("--soak-idle", "3", "--soak-room-lifetime", "20"))
    result = run.run_soak(PLAN, run.targets_of(stack), locust, tmp_path, sys.executable)

    assert result["status"] == "complete"
    assert len(result["containers"]["apps"]) == 2
    samples = [line for line in (tmp_path / "samples.jsonl").read_text().splitlines() if line]
    assert len(samples) == result["samples"]
    phases = {s["phase"] for s in map(json.loads, samples) if s["totals"]}
    assert {"baseline", "churn", "after"} <= phases, "a phase without a complete sample"

    with (tmp_path / "locust_stats.csv").open() as stats:
        rows = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(stats)}
    for how in names.SOAK_LEAVES:
        assert rows.get(names.soak_leave(how), 0) > 0, f"no session left by {how}: {rows}"
    for path in names.SOAK_HTTP_PATHS:
        assert rows.get(path, 0) > 0, f"{path} was never requested: {rows}"

    verdicts = [verdict.Verdict(**v) for v in result["verdicts"]]
    rules = ("baseline", "bounded")
    judged = {v.resource for v in verdicts if v.rule in rules and v.passed is not None}
    assert judged == {r.key for r in verdict.RESOURCES if r.rule in rules}, "a resource went unjudged"
    assert verdict.returned_to_baseline(verdicts) == [], (tmp_path / "soak.json").read_text()
