"""wrk's command line and its one-line JSON summary (wrk_report.lua)."""

import pytest

from loadtests.bench import wrk

SUMMARY = (
    'WRK_JSON {"requests":3298,"duration_us":2001200,"bytes":1883158,'
    '"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":0},'
    '"latency_us":{"mean":5796.3,"max":58195,"p50":4553,"p95":14482,"p99":37375}}'
)


def test_parse_output():
    row = wrk.parse_output(f"Running 2s test @ http://127.0.0.1:1/api/ping\n  noise\n{SUMMARY}\n")
    assert row["requests"] == 3298
    assert row["failures"] == 3
    assert row["errors"] == {"connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0}
    assert row["rps"] == pytest.approx(3298 / 2.0012)
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (4.553, 14.482, 37.375)
    assert row["avg_ms"] == pytest.approx(5.7963)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("unable to connect to 127.0.0.1:1 Connection refused", "no summary line"),
        ("WRK_JSON {not json", "unreadable"),
        ('WRK_JSON {"requests": 1}', "unreadable"),
        (SUMMARY.replace('"requests":3298', '"requests":0'), "made no request"),
    ],
)
def test_unreadable_output(output, message):
    with pytest.raises(wrk.WrkOutputError, match=message):
        wrk.parse_output(output)


def test_command_uses_the_report_script_and_never_more_threads_than_connections():
    run = wrk.WrkRun("http://127.0.0.1:9/api/ping", connections=1, threads=8, seconds=2.5)
    command = run.command()
    assert command[command.index("-t") + 1] == "1"
    assert command[command.index("-d") + 1] == "3s"
    assert str(wrk.LUA_REPORT) in command and command[-1] == run.url
    assert wrk.LUA_REPORT.is_file()
