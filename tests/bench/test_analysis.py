"""From raw runs to figures: medians over the successful runs, and the generator's ceiling."""

import pytest

from loadtests.bench import analysis
from loadtests.bench.results import Measurement, Results
from loadtests.lib import names

PING = names.HTTP_ENDPOINTS["ping"]
STATIC = names.HTTP_ENDPOINTS["static"]


def summarize(measurement):  # the JSON a bench writes, read back as its records
    return analysis.summarize(Measurement.from_json(measurement))


def analyse(results):
    return analysis.analyse(Results.from_json(results))


def row(rps, p99=10.0, requests=1000, failures=0, **extra):
    return {"type": "GET", "requests": requests, "failures": failures, "rps": rps, "avg_ms": 5.0,
            "max_ms": 50.0, "p50_ms": 4.0, "p95_ms": 8.0, "p99_ms": p99, **extra}  # fmt: skip


def measurement(
    target, scenario, case, rows_per_run, tool="locust", kind="variant", profile="default", main=None
):
    main = main or case
    return {
        "kind": kind, "target": target, "profile": profile, "scenario": scenario, "case": case,
        "tool": tool, "row": main, "runs": [{"rows": rows} for rows in rows_per_run],
    }  # fmt: skip


def http(target, rps_values, tool="locust", kind="variant", case=PING):
    return measurement(target, "http", case, [{case: row(v)} for v in rps_values], tool, kind)


def test_summary_is_over_successful_runs_only():
    m = http("uvicorn", [100, 300, 200])
    m["runs"].append({"error": "Locust exited with 2"})
    m["runs"].append({"rows": {"/other": row(1)}})  # the measured row is missing: no figures from it
    figures = summarize(m)
    assert (figures.rps.median, figures.rps.low, figures.rps.high, figures.runs) == (200, 100, 300, 3)
    assert figures.failed_runs == 2
    assert figures.requests == 3000 and figures.failures == 0


def test_nothing_measured_gives_no_figures():
    assert summarize(measurement("uvicorn", "http", PING, [])) is None
    assert summarize({**http("uvicorn", [1]), "runs": [{"error": "x"}]}) is None


def test_failures_on_other_rows_are_counted_apart():
    rows = {names.ECHO_ROUND_TRIP: row(50, failures=2), "connect /ws/echo/": row(1, failures=3),
            "disconnect /ws/echo/": row(0, requests=0, failures=4)}  # fmt: skip
    figures = summarize(measurement("daphne", "echo", names.ECHO_PATH, [rows], main=names.ECHO_ROUND_TRIP))
    assert figures.failures == 2 and figures.other_failures == 7
    assert figures.error_rate == pytest.approx(0.002)


def test_chat_and_capacity_extras():
    chat = {names.CHAT_DELIVERY: row(900), names.CHAT_ACK: {**row(1), "p50_ms": 3.0, "p99_ms": 9.0}}
    figures = summarize(measurement("uvicorn", "chat", "10 users, 1 room", [chat], main=names.CHAT_DELIVERY))
    assert figures.extra["ack_p50"].median == 3.0 and figures.extra["ack_p99"].median == 9.0

    connect = names.ws_connect(names.ECHO_PATH)
    runs = [{"rows": {connect: row(40, ramp_rps=r)}, "memory": {"connections": 40, "bytes_per_connection": b}}
            for r, b in ((38.0, 2048.0), (40.0, 4096.0))]  # fmt: skip
    m = {**measurement("uvicorn", "capacity", "40 sockets", [], main=connect), "runs": runs}
    figures = summarize(m)
    assert figures.extra["sockets"].median == 40
    assert figures.extra["bytes_per_socket"].median == 3072.0
    assert figures.extra["handshake_rate"].median == 39.0


RESULTS = {
    "settings": {"generator_threshold": 0.8},
    "measurements": [
        http(analysis.NGINX_FIXED, [1000, 1000, 1000], kind="ceiling"),
        http(analysis.NGINX_FIXED, [10000], tool="wrk", kind="ceiling"),
        http(analysis.ASGI_HELLO, [500], kind="ceiling"),
        measurement(
            analysis.ASGI_HELLO,
            "echo",
            names.ECHO_PATH,
            [{names.ECHO_ROUND_TRIP: row(400)}],
            kind="ceiling",
            main=names.ECHO_ROUND_TRIP,
        ),
        http("granian", [850, 790, 900]),  # median 850 >= 80 % of 1000
        http("daphne", [700]),
        http("daphne", [7000], tool="wrk"),
        http("daphne", [960], case=STATIC),
        measurement(
            "daphne", "echo", names.ECHO_PATH, [{names.ECHO_ROUND_TRIP: row(330)}], main=names.ECHO_ROUND_TRIP
        ),
        measurement(
            "daphne", "chat", "9 users, 1 room", [{names.CHAT_DELIVERY: row(8)}], main=names.CHAT_DELIVERY
        ),
    ],
}


@pytest.mark.parametrize(
    ("target", "scenario", "case", "tool", "limited", "share", "hello"),
    [
        ("granian", "http", PING, "locust", True, 0.85, 1.7),
        ("daphne", "http", PING, "locust", False, 0.7, 1.4),
        ("daphne", "http", PING, "wrk", False, 0.7, None),  # wrk's own ceiling; no wrk hello measured
        ("daphne", "http", STATIC, "locust", True, 0.96, None),  # Nginx serves it: no hello comparison
        ("daphne", "echo", names.ECHO_PATH, "locust", True, 0.825, 0.825),  # the raw ASGI echo bounds echo
        ("daphne", "chat", "9 users, 1 room", "locust", False, None, None),  # fixed offered rate: no ceiling
        (analysis.ASGI_HELLO, "http", PING, "locust", False, 0.5, None),  # compared with Nginx alone
        (analysis.NGINX_FIXED, "http", PING, "locust", False, None, None),  # the ceiling itself
    ],
)
def test_ceiling_marks(target, scenario, case, tool, limited, share, hello):
    figures = {(f.target, f.scenario, f.case, f.tool): f for f in analyse(RESULTS)}
    f = figures[(target, scenario, case, tool)]
    assert f.limited is limited
    assert f.ceiling_share == (pytest.approx(share) if share is not None else None)
    assert f.hello_share == (pytest.approx(hello) if hello is not None else None)


def test_threshold_comes_from_the_results():
    strict = {**RESULTS, "settings": {"generator_threshold": 0.9}}
    granian = next(f for f in analyse(strict) if f.target == "granian")
    assert not granian.limited


def test_labels_name_the_profile_only_when_it_is_not_the_default():
    m = http("uvicorn", [1])
    assert summarize(m).label == "uvicorn"
    assert summarize({**m, "profile": "fast"}).label == "uvicorn · fast"
