"""What the report concludes: ASGI against the WSGI baseline, the warm-up check, two runs side by side."""

from loadtests.bench import __main__ as cli
from loadtests.bench import verdicts
from loadtests.bench.analysis import analyse
from loadtests.bench.results import Results
from loadtests.lib import names

PING, PING_SYNC, DB = (names.HTTP_ENDPOINTS[e] for e in ("ping", "ping-sync", "db"))


def run(rps: float, p99: float = 10.0) -> dict:
    row = {"requests": 1000, "failures": 0, "rps": rps, "p50_ms": 1.0, "p95_ms": 5.0, "p99_ms": p99}
    return {"rows": {"ROW": row}}


def measurement(
    target: str, case: str, tool: str, *rps: float, scenario: str = "http", kind: str = "variant"
):
    runs = [run(value) for value in rps]
    for r in runs:
        r["rows"] = {case: r["rows"]["ROW"]}
    return {
        "kind": kind,
        "target": target,
        "profile": "default",
        "scenario": scenario,
        "case": case,
        "tool": tool,
        "row": case,
        "runs": runs,
    }


def results(*measurements: dict) -> Results:
    return Results.from_json(
        {
            "settings": {
                "servers": ["uvicorn", "gunicorn"],
                "profiles": [{"name": "default"}],
                "warmup_s": 10,
            },
            "stacks": [
                {"target": "uvicorn", "containers": {"nginx": ["n"], "app": ["a"]}},
                {"target": "gunicorn", "containers": {"nginx": ["n"], "app": ["a"], "ws": ["w"]}},
            ],
            "measurements": list(measurements),
        }
    )


def test_the_wsgi_variant_is_the_one_with_a_websocket_sidecar():
    assert verdicts.wsgi_targets(results()) == {"gunicorn"}


def test_every_asgi_variant_as_a_multiple_of_the_wsgi_one():
    data = results(
        measurement("asgi-hello", PING, "wrk", 10_000, 10_000, 10_000, kind="ceiling"),
        measurement("uvicorn", PING, "wrk", 4_000, 4_100, 3_900),
        measurement("uvicorn", PING_SYNC, "wrk", 1_500, 1_500, 1_500),
        measurement("uvicorn", DB, "wrk", 900, 900, 900),
        measurement("gunicorn", PING_SYNC, "wrk", 1_000, 990, 1_010),
        measurement("gunicorn", DB, "wrk", 300, 300, 300),
    )
    tables = verdicts.baseline_tables(analyse(data), data)
    assert [title for title, _, _ in tables] == ["wrk, against gunicorn"]
    _, columns, rows = tables[0]
    assert columns[0] == "ASGI variant" and len(columns) == 1 + len(verdicts.RATIOS)
    # median 4,000 / 1,000; 1,500 / 1,000; 900 / 300; 4,000 / 10,000. The WSGI variant has no row.
    assert rows == [["uvicorn", "4.00x", "1.50x", "3.00x", "0.40x"]]


def test_a_missing_figure_is_said_not_guessed():
    data = results(measurement("uvicorn", PING, "locust", 2_000, 2_000, 2_000))
    tables = verdicts.baseline_tables(analyse(data), data)
    assert tables == []  # nothing to divide by: no table rather than a row of made-up ratios


def test_a_first_run_slower_than_the_later_ones_is_named():
    data = results(
        measurement(
            "uvicorn", PING, "wrk", 3_000, 4_000, 4_000
        ),  # first run 25 % slower: too short a warm-up
        measurement("uvicorn", DB, "wrk", 1_010, 1_000, 1_000),
        measurement("uvicorn", PING, "locust", 2_000, 2_000),  # two runs: nothing to compare the first with
    )
    columns, rows = verdicts.warmup_table(data)
    assert columns[0] == "runs"
    assert len(rows) == 1 and rows[0][:2] == ["http (wrk)", "2"]
    assert rows[0][3] == "-25.0 % to +1.0 %"
    assert rows[0][4] == f"uvicorn {PING} (-25.0 %)"
    assert verdicts.warmup_table(results()) is None


def test_two_runs_agree_figure_by_figure():
    first = results(
        measurement("uvicorn", PING, "wrk", 4_000, 4_000, 4_000),
        measurement("uvicorn", DB, "wrk", 1_000, 1_000, 1_000),
    )
    second = results(
        measurement("uvicorn", PING, "wrk", 4_200, 4_200, 4_200),
        measurement("uvicorn", DB, "wrk", 850, 850, 850),
    )
    rows, outside = verdicts.agreement(first, second)
    assert [row[-1] for row in rows] == ["+5.0 %", "-15.0 %"]
    assert outside == [f"uvicorn {DB} (wrk): -15.0 %"]
    text = verdicts.agreement_markdown(first, second)
    assert "1 of 2 medians agree within ±10 %." in text


def test_compare_command(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        data = results(measurement("uvicorn", PING, "wrk", 4_000, 4_000, 4_000))
        data.save(tmp_path / name)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "1 of 1 medians agree" in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "a")]) == 2
