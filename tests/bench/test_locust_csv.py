"""Locust's command line for one run, and its CSV files read back."""

import pytest

from loadtests.bench import locust_csv
from loadtests.bench.locust_csv import LocustOutputError, LocustRun

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)
STATS = f"""{HEADER}
GET,/api/ping,3105,2,36,50.1,2.7,239.0,14.0,632.06,0.4,36,53,64,74,110,140,190,220,240,240,240
WS,disconnect /ws/echo/,0,3,0,0.0,0,0,0.0,0.0,0.1,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
,Aggregated,3105,5,36,50.1,2.7,239.0,14.0,632.06,0.5,36,53,64,74,110,140,190,220,240,240,240
"""


def test_parse_stats():
    rows = locust_csv.parse_stats(STATS)
    assert set(rows) == {"/api/ping", "disconnect /ws/echo/"}  # no Aggregated
    ping = rows["/api/ping"]
    assert ping == {
        "type": "GET",
        "requests": 3105,
        "failures": 2,
        "rps": 632.06,
        "avg_ms": 50.1,
        "max_ms": 239.0,
        "p50_ms": 36.0,
        "p95_ms": 140.0,
        "p99_ms": 220.0,
    }
    assert rows["disconnect /ws/echo/"]["failures"] == 3
    assert rows["disconnect /ws/echo/"]["p99_ms"] == 0.0  # N/A: the row has no successful request


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Type,Name\nGET,/x\n", "lacks columns"),
        (STATS.replace("632.06", "fast"), "is not a number"),
        (STATS.replace("632.06", "nan"), "is 'nan'"),
    ],
)
def test_unreadable_stats(text, message):
    with pytest.raises(LocustOutputError, match=message):
        locust_csv.parse_stats(text)


def test_parse_failures_most_frequent_first():
    text = (
        "Method,Name,Error,Occurrences,First Seen,Last Seen\n"
        "WS,connect /ws/echo/,handshake refused: HTTP 429,3,1,2\n"
        "GET,/api/db,HTTP 502,40,1,2\n"
    )
    assert locust_csv.parse_failures(text) == [
        "/api/db: HTTP 502 (x40)",
        "connect /ws/echo/: handshake refused: HTTP 429 (x3)",
    ]


HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,Total Request Count,Total Failure Count"
)


@pytest.mark.parametrize(
    ("counts", "rate"),
    [
        ([0, 0, 100, 300, 400, 400, 400], 400 / 3),  # growing for seconds 2..4
        ([50, 50, 50], 50.0),  # all within one second
        ([0, 0], 0.0),  # nothing happened
    ],
)
def test_ramp_rate(counts, rate):
    lines = [HISTORY_HEADER] + [
        f"{1000 + i},10,WS,connect /ws/echo/,0,0,1,{c},0" for i, c in enumerate(counts)
    ]
    lines.append("1000,10,,Aggregated,0,0,1,999999,0")  # other rows do not count
    assert locust_csv.ramp_rate("\n".join(lines), "connect /ws/echo/") == pytest.approx(rate)


def test_read_run(tmp_path):
    prefix = tmp_path / "locust"
    (tmp_path / "locust_stats.csv").write_text(STATS)
    rows, failures = locust_csv.read_run(prefix)
    assert rows["/api/ping"]["requests"] == 3105 and failures == []
    with pytest.raises(LocustOutputError, match=r"wrote no other_stats\.csv"):
        locust_csv.read_run(tmp_path / "other")


def test_command(tmp_path):
    run = LocustRun(
        "http", "http://127.0.0.1:9", users=8, spawn_rate=8.0, seconds=2.2, prefix=tmp_path / "p",
        processes=2, options=("--http-endpoints", "db"), reset_stats=True,
    )  # fmt: skip
    command = run.command("python")
    assert command[:3] == ["python", "-m", "locust"]
    assert command[command.index("-f") + 1].endswith("loadtests/locustfiles/http_endpoints.py")
    assert command[command.index("-t") + 1] == "3s"
    assert command[command.index("--processes") + 1] == "2"
    # Its master on a port of its own, on the loopback, where its workers look for it.
    port = command[command.index("--master-bind-port") + 1]
    assert command[command.index("--master-port") + 1] == port and port != "5557"
    assert command[command.index("--master-bind-host") + 1] == "127.0.0.1"
    assert "--reset-stats" in command and "--only-summary" in command and "--csv-full-history" not in command
    assert command[-2:] == ["--http-endpoints", "db"]
    assert run.timeout > run.seconds
    with pytest.raises(ValueError, match="no locustfile"):
        LocustRun("ftp", "http://x", 1, 1.0, 1.0, tmp_path / "p").command("python")


@pytest.mark.parametrize(
    ("users", "workers", "rate"), [(8, 0, 8.0), (1000, 0, 100.0), (1000, 2, 200.0), (64, 2, 64.0)]
)
def test_spawn_rate(users, workers, rate):
    assert locust_csv.spawn_rate(users, workers) == rate


def test_scenario_options():
    assert locust_csv.scenario_options([("--chat-rooms", 10), ("--chat-interval", 0.5)]) == (
        "--chat-rooms", "10", "--chat-interval", "0.5",
    )  # fmt: skip
