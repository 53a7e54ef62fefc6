"""The server's side of a run: /metrics before and after, their difference, and what the report shows."""

import pytest

from loadtests.bench import report, server_metrics
from loadtests.bench.analysis import analyse, route_of
from loadtests.bench.results import Measurement, Results, Run
from loadtests.bench.server_metrics import CounterResetError, difference, histogram_quantile, snapshot
from loadtests.lib import names


def scrape(ping: int, ping_seconds: list[float], cpu: float, fanout: int = 0) -> str:
    """One container's /metrics as the exporter writes it: ``ping`` requests of /api/ping, their
    times (in the histogram), CPU seconds, ``fanout`` deliveries of 3 ms."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total", "", ["route", "method", "status", "handler"],
        namespace="realtime_django", registry=registry,
    )  # fmt: skip
    duration = Histogram(
        "http_request_duration_seconds", "", ["route"], namespace="realtime_django", registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025),
    )  # fmt: skip
    fan = Histogram(
        "chat_fanout_delivery_seconds", "", namespace="realtime_django", registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025),
    )  # fmt: skip
    cpu_counter = Counter("process_cpu_seconds", "", registry=registry)
    frames = Counter("websocket_frames_sent", "", ["route"], namespace="realtime_django", registry=registry)
    requests.labels("ping", "GET", "2xx", "fast").inc(ping - 1)
    requests.labels("ping", "HEAD", "2xx", "fast").inc(1)  # every method and status of the route counts
    requests.labels("healthz", "GET", "2xx", "fast").inc(5)
    for seconds in ping_seconds:
        duration.labels("ping").observe(seconds)
    for _ in range(5):
        duration.labels("healthz").observe(0.0001)
    for _ in range(fanout):
        fan.observe(0.003)
    cpu_counter.inc(cpu)
    frames.labels("chat").inc(fanout)
    return generate_latest(registry).decode()


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does():
    buckets = {0.001: 10.0, 0.0025: 60.0, 0.005: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.10, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.50, buckets) == pytest.approx(0.001 + 0.0015 * 40 / 50)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.0025 + 0.0025 * 39 / 40)
    # In the +Inf bucket: the highest finite bound (Prometheus' answer too).
    assert histogram_quantile(0.99, {0.001: 1.0, float("inf"): 10.0}) == pytest.approx(0.001)
    assert histogram_quantile(0.5, {0.001: 0.0, float("inf"): 0.0}) is None


def test_the_difference_is_the_run_alone_summed_over_containers():
    before = snapshot([scrape(10, [0.002] * 10, cpu=1.0), scrape(4, [0.002] * 4, cpu=2.0)])
    after = snapshot(
        [
            scrape(10 + 100, [0.002] * 10 + [0.0009] * 50 + [0.004] * 50, cpu=1.5, fanout=20),
            scrape(4 + 100, [0.002] * 4 + [0.0009] * 50 + [0.004] * 50, cpu=2.7),
        ]
    )
    figures = difference(before, after)
    assert set(figures["routes"]) == {"ping"}  # healthz did not change: not in the run
    ping = figures["routes"]["ping"]
    assert ping["requests"] == 200
    assert ping["mean_ms"] == pytest.approx((0.0009 + 0.004) / 2 * 1000, rel=1e-6)
    assert ping["p50_ms"] == pytest.approx(1.0)  # 100 of 200 at or under the 1 ms bound
    assert 2.5 < ping["p99_ms"] <= 5.0
    assert figures["cpu_seconds"] == pytest.approx(1.2)
    assert figures["frames_sent"] == 20
    assert figures["fanout"]["deliveries"] == 20
    assert 2.5 < figures["fanout"]["p99_ms"] <= 5.0


def test_without_the_exporter_only_the_containers_cpu_is_measured():
    # METRICS=0: no /metrics to read, the cgroups' CPU account still is.
    figures = difference(snapshot([], [10.0, 4.0]), snapshot([], [12.0, 4.5]))
    assert figures == {"container_cpu_seconds": 2.5}
    assert server_metrics.cpu_ms_per_request(figures, 1000) is None
    assert server_metrics.cpu_ms_per_request(figures, 1000, "container_cpu_seconds") == pytest.approx(2.5)


def test_a_container_restarted_during_the_run_is_no_figure():
    before = snapshot([scrape(100, [0.002] * 100, cpu=5.0)])
    after = snapshot([scrape(3, [0.002] * 3, cpu=0.2)])
    with pytest.raises(CounterResetError, match="restarted"):
        difference(before, after)


def test_cpu_per_request_uses_the_requests_the_client_completed():
    assert server_metrics.cpu_ms_per_request({"cpu_seconds": 2.0}, 1000) == pytest.approx(2.0)
    assert server_metrics.cpu_ms_per_request({"cpu_seconds": 2.0}, 0) is None
    assert server_metrics.cpu_ms_per_request({}, 10) is None


def results_with_server_figures() -> Results:
    results = Results(settings={"servers": ["uvicorn"], "repeats": 2})
    ping = names.HTTP_ENDPOINTS["ping"]
    m = results.measurement("uvicorn", "default", "http", ping, "locust", "GET " + ping)
    for cpu, p99 in ((1.0, 4.0), (1.2, 5.0)):
        server = {
            "routes": {"ping": {"requests": 1000, "mean_ms": 1.1, "p50_ms": 0.9, "p99_ms": p99}},
            "cpu_seconds": cpu,
            "container_cpu_seconds": cpu + 0.5,
        }
        row = {"requests": 1000, "failures": 0, "rps": 500, "p50_ms": 3, "p95_ms": 8, "p99_ms": 12}
        m.add(Run(tool="locust", rows={"GET " + ping: row}, server=server))
    results.measurements.append(
        Measurement("variant", "uvicorn", "default", "http", names.HTTP_ENDPOINTS["db"], "wrk", "GET")
    )
    return results


def test_analysis_keeps_the_median_and_spread_of_the_server_figures():
    [f] = analyse(results_with_server_figures())
    assert route_of(f.case) == "ping"
    assert f.extra["cpu_ms_per_request"].median == pytest.approx(1.1)  # 1.0 and 1.2 ms per request
    assert (f.extra["server_p99"].low, f.extra["server_p99"].high) == (4.0, 5.0)
    assert f.extra["server_p50"].median == pytest.approx(0.9)
    assert "server_fanout_p99" not in f.extra


def test_a_figure_without_every_run_s_server_side_has_none():
    results = results_with_server_figures()
    results.measurements[0].runs[1].server = None
    [f] = analyse(results)
    assert "cpu_ms_per_request" not in f.extra and "server_p99" not in f.extra


def test_the_report_sets_django_s_time_beside_the_client_s():
    results = results_with_server_figures()
    figures = analyse(results)
    section = report.server_side_section(report.Index(figures, results))
    assert section is not None
    [table] = section.tables
    assert table.rows == [
        [
            "uvicorn",
            "GET /api/ping",
            "locust",
            "3",
            "0.90",
            "12",
            "4.50 (4 to 5)",
            "1.10 (1.00 to 1.20)",
            "1.60 (1.50 to 1.70)",
        ]
    ]


def test_profiles_side_by_side_compare_their_cpu_per_request():
    # The cost of a profile (METRICS=0 against METRICS=1) as CPU per request, beside req/s.
    results = results_with_server_figures()
    results.settings["profiles"] = [{"name": "default", "env": {}}, {"name": "nometrics", "env": {}}]
    ping = names.HTTP_ENDPOINTS["ping"]
    m = results.measurement("uvicorn", "nometrics", "http", ping, "locust", "GET " + ping)
    for cpu in (1.1, 1.3):
        row = {"requests": 1000, "failures": 0, "rps": 550, "p50_ms": 3, "p95_ms": 8, "p99_ms": 12}
        m.add(Run(tool="locust", rows={"GET " + ping: row}, server={"container_cpu_seconds": cpu}))
    [table] = report.profile_tables(report.Index(analyse(results), results))
    rows = {row[1]: row[2:] for row in table.rows}
    assert rows["/api/ping req/s (locust)"] == ["500", "550", "1.10x"]
    assert rows["/api/ping container CPU ms per request (locust)"] == ["1.60", "1.20", "0.75x"]


def test_no_section_without_server_figures():
    results = results_with_server_figures()
    for run in results.measurements[0].runs:
        run.server = None
    assert report.server_side_section(report.Index(analyse(results), results)) is None
