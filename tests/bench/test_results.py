"""results.json read into the bench's records and written back unchanged."""

import json
from pathlib import Path

from loadtests.bench.results import BenchError, Results, Run

FIXTURE = Path(__file__).parent / "fixtures" / "results.json"


def test_a_results_file_reads_and_writes_back_the_same(tmp_path):
    original = json.loads(FIXTURE.read_text())
    results = Results.load(FIXTURE.parent)
    assert results.save(tmp_path) == tmp_path / "results.json"
    assert json.loads((tmp_path / "results.json").read_text()) == {"notes": [], **original}


def test_a_failed_run_has_an_error_and_no_null_fields():
    run = Run(
        tool="locust", started_at="t", seconds=1.0, exit_code=2, dir="runs/x", error="Locust exited with 2"
    )
    assert run.to_json() == {
        "tool": "locust", "started_at": "t", "seconds": 1.0, "exit_code": 2, "dir": "runs/x",
        "error": "Locust exited with 2", "index": 0,
    }  # fmt: skip
    assert not run.ok("/api/ping")
    assert Run(rows={"/api/ping": {"rps": 1.0}}).ok("/api/ping")


def test_measurements_are_made_once_per_key_in_the_order_measured():
    results = Results()
    first = results.measurement("uvicorn", "default", "http", "/api/ping", "wrk", "/api/ping")
    results.measurement("uvicorn", "default", "http", "/api/db", "wrk", "/api/db")
    assert results.measurement("uvicorn", "default", "http", "/api/ping", "wrk", "/api/ping") is first
    first.add(Run(dir="a"))
    first.add(Run(dir="b"))
    assert [run.index for run in first.runs] == [1, 2]
    assert [m.case for m in results.measurements] == ["/api/ping", "/api/db"]


def test_a_failed_stage_attempt_is_forgotten():
    results = Results(stacks=[{"stage": "uvicorn · default", "target": "uvicorn"}, {"stage": "comparison"}])
    results.measurement("uvicorn", "default", "http", "/api/ping", "wrk", "/api/ping", stage="comparison")
    results.measurement("uvicorn", "default", "echo", "/ws/echo/", "locust", "", stage="uvicorn · default")
    results.measurement("daphne", "default", "echo", "/ws/echo/", "locust", "", stage="daphne · default")
    results.errors.append(BenchError("uvicorn · default", "up", "kept: errors are the report's"))
    results.forget("uvicorn · default")
    # The variant's own stage only: its HTTP figures, from the stage that had every stack up, stay.
    assert [(m.target, m.scenario) for m in results.measurements] == [("uvicorn", "http"), ("daphne", "echo")]
    assert results.stacks == [{"stage": "comparison"}]
    assert len(results.errors) == 1
