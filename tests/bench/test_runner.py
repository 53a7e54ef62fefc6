"""The runner's bookkeeping without Docker: a stage whose stack fails runs once more from scratch."""

import io

import pytest

from loadtests.bench import config, machine, runner
from loadtests.bench.progress import Progress
from loadtests.bench.results import Run
from loadtests.bench.stack import StackError
from loadtests.lib import names


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "machine", lambda: {"cpu_model": "test"})
    monkeypatch.setattr(machine, "host_versions", lambda: {})
    settings = config.load(["--servers", "uvicorn"], environ={}, known_servers=["uvicorn"])
    return runner.Bench(settings, tmp_path, [])


def stage_failing(bench, failures):
    """A stage whose measuring step fails on its first ``failures`` attempts."""
    attempts = []
    stage = runner.Stage("variant", "uvicorn", config.DEFAULT_PROFILE)

    def measure():
        attempts.append(len(attempts) + 1)
        m = bench.results.measurement(
            "uvicorn", "default", "http", "/api/ping", "locust", "/api/ping", stage=stage.name
        )
        m.runs.append(Run(dir=f"attempt {len(attempts)}"))
        if len(attempts) <= failures:
            raise runner.StageAborted("the stack stopped answering")

    downs = []
    stage.steps = [runner.Step("measure", 1.0, measure)]
    stage.teardown = runner.Step("down", 1.0, lambda: downs.append(True))
    return stage, attempts, downs


def test_a_failed_stage_runs_again_from_scratch(bench):
    stage, attempts, downs = stage_failing(bench, failures=1)
    out = io.StringIO()
    bench.run_stage(stage, Progress(2, 2.0, out=out))
    assert attempts == [1, 2] and len(downs) == 2  # taken down after each attempt
    assert bench.results.errors == []
    assert len(bench.results.notes) == 1 and "run again from scratch" in bench.results.notes[0]
    [measurement] = bench.results.measurements
    assert measurement.runs == [Run(dir="attempt 2")]  # the failed attempt's figures are gone
    assert "[4/4] uvicorn · default · down" in out.getvalue()  # the progress counts the second attempt


def test_a_stage_that_fails_twice_is_an_error(bench):
    stage, attempts, downs = stage_failing(bench, failures=2)
    bench.run_stage(stage, Progress(2, 2.0, out=io.StringIO()))
    assert attempts == [1, 2] and len(downs) == 2
    assert [e.step for e in bench.results.errors] == ["stage"]
    assert "the stack stopped answering" in bench.results.errors[0].message
    assert (bench.out / "results.json").exists()


def test_a_fault_of_the_bench_is_not_retried(bench):
    stage = runner.Stage("variant", "uvicorn", config.DEFAULT_PROFILE)
    calls = []
    stage.steps = [runner.Step("measure", 1.0, lambda: calls.append(1) or {}["missing"])]
    stage.teardown = runner.Step("down", 1.0, lambda: None)
    bench.run_stage(stage, Progress(2, 2.0, out=io.StringIO()))
    assert calls == [1]
    assert "unexpected KeyError" in bench.results.errors[0].message


def test_teardown_failure_is_reported(bench):
    stage, _, _ = stage_failing(bench, failures=0)

    def broken_down():
        raise StackError("make clean left containers behind")

    stage.teardown = runner.Step("down", 1.0, broken_down)
    bench.run_stage(stage, Progress(2, 2.0, out=io.StringIO()))
    assert [(e.step, e.message) for e in bench.results.errors] == [
        ("down", "make clean left containers behind")
    ]


def test_stages_in_order_with_every_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "machine", lambda: {})
    monkeypatch.setattr(machine, "host_versions", lambda: {})
    settings = config.load(
        ["--servers", "uvicorn gunicorn", "--profiles", "a:X=1 b:X=2"],
        environ={},
        known_servers=["uvicorn", "gunicorn"],
    )
    stages = runner.Bench(settings, tmp_path, []).stages()
    assert [s.name for s in stages] == [
        "ceiling",
        "comparison",
        "uvicorn · a",
        "uvicorn · b",
        "gunicorn · a",
        "gunicorn · b",
    ]
    # The comparison: every stack up, then round by round each variant and profile in turn.
    labels = [step.label for step in stages[1].steps]
    assert labels[0] == "up (4 stacks)"
    measured = [label for label in labels if " run " in label]
    order = [(label.split(" · ")[0], label.rsplit("run ", 1)[1]) for label in measured]
    per_round = len(settings.http.endpoints) * 2  # Locust and wrk
    variants = ["uvicorn-a", "uvicorn-b", "gunicorn-a", "gunicorn-b"]
    assert order == [
        (variant, f"{k}/{settings.repeats}")
        for k in range(1, settings.repeats + 1)
        for variant in variants
        for _ in range(per_round)
    ]
    # Each variant's own stage: the WebSocket scenarios, no HTTP.
    labels = [step.label for step in stages[2].steps]
    assert labels[0] == "up" and labels[-1].startswith("chat") and "scale to 2 replicas" in labels
    assert not any("http" in label for label in labels)
    # BENCH_INTERLEAVE=0: HTTP in each variant's stage, as many runs.
    apart = config.load(
        ["--no-interleave", "--no-ceiling", "--servers", "uvicorn"], environ={}, known_servers=["uvicorn"]
    )
    [stage] = runner.Bench(apart, tmp_path, []).stages()
    labels = [step.label for step in stage.steps]
    assert sum("(locust) run" in label for label in labels) == len(apart.http.endpoints) * apart.repeats
    http_only = config.load(
        ["--no-ceiling", "--servers", "uvicorn", "--scenarios", "http wrk"],
        environ={},
        known_servers=["uvicorn"],
    )
    assert [s.name for s in runner.Bench(http_only, tmp_path, []).stages()] == ["comparison"]


def test_every_run_of_a_stage_has_its_own_folder_and_the_static_file_is_measured_once(bench):
    plan = {stage.name: [step.label for step in stage.steps] for stage in bench.stages()}
    static = names.HTTP_ENDPOINTS["static"]
    assert sum(static in label for label in plan["ceiling"]) == 2 * bench.config.repeats  # Locust and wrk
    assert not any(static in label for label in plan["uvicorn · default"])
    for scenario in (bench.http, bench.wrk, bench.echo, bench.capacity, bench.chat):
        jobs = scenario.rounds(runner.Target("uvicorn"))
        assert jobs and len({job.folder for job in jobs}) == len(jobs), scenario.name
        if scenario is bench.capacity:  # memory grown by a first run stays: measured once per stack
            assert len(jobs) == 1 < bench.config.repeats
        assert {job.target.name for job in jobs} == {"uvicorn"}


def test_the_soak_is_a_step_of_its_own_when_named_and_its_result_is_kept(tmp_path, monkeypatch):
    from loadtests.bench import soak_stage
    from loadtests.soak import run as soak_run

    monkeypatch.setattr(machine, "machine", lambda: {})
    monkeypatch.setattr(machine, "host_versions", lambda: {})
    settings = config.load(
        ["--servers", "uvicorn", "--no-ceiling", "--scenarios", "http soak"],
        environ={},
        known_servers=["uvicorn"],
    )
    bench = runner.Bench(settings, tmp_path, [])
    comparison, stage = bench.stages()  # HTTP with every variant up at once; the soak in its own stage
    assert (comparison.name, stage.name) == (runner.COMPARISON, "uvicorn · default")
    labels = [step.label for step in stage.steps]
    assert labels[-2:] == ["scale to 2 replicas", "soak 30 min"]
    default = config.load(["--servers", "uvicorn"], environ={}, known_servers=["uvicorn"])
    assert not any(
        "soak" in step.label for s in runner.Bench(default, tmp_path, []).stages() for step in s.steps
    )

    seen = {}

    def fake_soak(plan, targets, locust, out, python, **_):
        seen.update(plan=plan, targets=targets, out=out)
        return {"status": "complete", "passed": True, "verdicts": []}

    monkeypatch.setattr(soak_run, "run_soak", fake_soak)
    monkeypatch.setattr(soak_run, "targets_of", lambda stack: "targets")
    tails = []

    def logs_report(self, tail=None):
        tails.append(tail)
        return "===== app-1\nWARNING took too long to shut down\n"

    bench.stack = type("FakeStack", (), {"base_url": "http://127.0.0.1:1", "logs_report": logs_report})()
    stage.steps[-1].action()
    assert seen["plan"].churn == 30 * 60 and seen["plan"].users == settings.soak.users
    assert seen["out"] == tmp_path / "runs" / stage.folder / soak_stage.FOLDER
    assert tails == [soak_run.CONTAINER_LOG_LINES]  # the containers' logs are kept beside the samples
    assert "took too long" in (seen["out"] / "containers.log").read_text()
    [kept] = bench.results.soaks
    assert (kept["target"], kept["profile"], kept["passed"]) == ("uvicorn", "default", True)
    bench.forget(stage)  # a failed attempt of the stage drops its soak too
    assert bench.results.soaks == []


def test_a_sharded_profile_lays_the_sharded_file_and_proves_both_redis(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "machine", lambda: {})
    monkeypatch.setattr(machine, "host_versions", lambda: {})
    settings = config.load(
        ["--servers", "uvicorn", "--profiles", "sharded:REDIS_SHARDED=1,METRICS=0"],
        environ={},
        known_servers=["uvicorn"],
    )
    bench = runner.Bench(settings, tmp_path, [])
    [profile] = settings.profiles
    apps = {"REDIS_URL": "redis://redis:6379/0,redis://redis-2:6379/0", "METRICS": "0"}
    monkeypatch.setattr(runner.Stack, "up", lambda self, replicas=None: None)
    monkeypatch.setattr(runner.Stack, "containers", lambda self, service=None, names=False: [service])
    monkeypatch.setattr(runner.Stack, "container_env", lambda self, container: dict(apps))
    stage = runner.Stage("variant", "uvicorn", profile)
    bench.variant_up(stage, runner.Target("uvicorn", profile=profile.name), profile)
    assert bench.stack is not None and bench.stack.redis_sharded
    [override] = bench.stack.compose_files
    assert "METRICS" in override.read_text() and "REDIS_SHARDED" not in override.read_text()
    apps["REDIS_URL"] = "redis://redis:6379/0"  # the overlay missing: the figures would lie
    with pytest.raises(StackError, match="lists 1 Redis"):
        bench.check_profile(profile)
