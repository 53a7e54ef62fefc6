"""deploy/prometheus/: the configuration and the rules are valid for promtool, every rule passes its
promtool unit tests, each alert is shown both firing and quiet, and every metric a rule or an alert
text names is one the app defines, so a renamed metric fails here instead of silencing an alert.

promtool comes from Debian's ``prometheus`` package, which ``scripts/bootstrap.sh test`` installs
(its daemon kept stopped). Without it the promtool tests are skipped, or fail under
``E2E_REQUIRED=1`` as ``make test`` runs them; the tests that read the files alone always run.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from stackctl.testing import require_tool
from tests.deploy.helpers import DEPLOY, REPO

PROMETHEUS = DEPLOY / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))

# The series a metric of each type is served as (the multiprocess exporter serves no _created).
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
# The app's own series in PromQL or prose; not a part of a recorded name (job:realtime_django_...:rate1m).
APP_SERIES = re.compile(r"(?<![\w:])realtime_django_[a-z0-9_]+(?![\w:])")
# A recorded series' name, level:metric:operations.
RECORDED = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def records() -> list[str]:
    return [rule["record"] for rule in rules() if "record" in rule]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in TEST_FILES for test in load(path)["tests"]]


def series_of(test: dict[str, Any]) -> list[str]:
    return [entry["series"] for entry in test.get("input_series", [])]


@functools.cache
def app_series() -> frozenset[str]:
    """Every series name the app serves from app/core/metrics.py, as a scrape shows it."""
    from core import metrics

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
    return frozenset(names)


def unknown_names(text: str) -> list[str]:
    """The names in ``text`` that neither the app serves nor a recording rule records."""
    unknown = [name for name in APP_SERIES.findall(text) if name not in app_series()]
    return unknown + [name for name in RECORDED.findall(text) if name not in records()]


# --- promtool ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """promtool in deploy/prometheus/, where the files' relative paths start."""
    return subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_config_and_it_loads_every_rules_file(promtool: str) -> None:
    result = run(promtool, "check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    # A rule_files glob that matched nothing would pass the check with no rule loaded.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout, result.stdout


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", *(str(path.relative_to(PROMETHEUS)) for path in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(promtool: str, test_file: Path) -> None:
    result = run(promtool, "test", "rules", str(test_file.relative_to(PROMETHEUS)))
    assert result.returncode == 0, result.stdout + result.stderr


# --- What the unit tests cover ----------------------------------------------------------------------


def test_there_are_rules_and_unit_tests() -> None:
    assert RULE_FILES and TEST_FILES and records() and alerts()


def test_every_rules_file_is_loaded_by_a_unit_test() -> None:
    loaded = {
        (path.parent / name).resolve() for path in TEST_FILES for name in load(path).get("rule_files", [])
    }
    assert [path.name for path in RULE_FILES if path.resolve() not in loaded] == []


def test_every_recording_rule_is_evaluated_by_a_unit_test() -> None:
    evaluated = {case["expr"] for test in unit_tests() for case in test.get("promql_expr_test", [])}
    assert [name for name in records() if name not in evaluated] == []


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_every_alert_is_tested_firing_and_quiet(alert: str) -> None:
    cases = [
        case
        for test in unit_tests()
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case.get("exp_alerts") for case in cases), f"{alert}: no test where it fires"
    assert any(not case.get("exp_alerts") for case in cases), f"{alert}: no test where it stays quiet"


# --- The rules' own shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_every_alert_waits_has_a_severity_and_tells_what_to_look_at(alert: dict[str, Any]) -> None:
    assert alert.get("for"), "a `for:` keeps one bad evaluation from firing it"
    assert alert.get("labels", {}).get("severity") in {"critical", "warning"}
    assert alert.get("annotations", {}).keys() >= {"summary", "description"}


@pytest.mark.parametrize("name", records())
def test_recorded_names_follow_level_metric_operations(name: str) -> None:
    level, metric, operations = name.split(":")
    assert "job" in level.split("_"), "every figure is kept per service"
    assert metric.startswith("realtime_django_") and not metric.endswith("_total"), metric
    assert re.fullmatch(r"[a-z0-9_]+", operations)


# Each job -> the service whose DNS name it looks up: the app's services by their own names, Nginx's
# counters through its exporter.
SCRAPED_SERVICES = {"app": "app", "ws": "ws", "nginx": "nginx-exporter"}


def test_scrape_jobs_are_the_stack_services_they_look_up() -> None:
    jobs = {job["job_name"]: job for job in load(CONFIG)["scrape_configs"]}
    assert set(jobs) == set(SCRAPED_SERVICES)
    compose_services = load(REPO / "compose.yaml")["services"]
    swarm = DEPLOY / "swarm"
    swarm_services = {**load(swarm / "stack.yaml")["services"], **load(swarm / "monitoring.yaml")["services"]}
    for name, job in jobs.items():
        service = SCRAPED_SERVICES[name]
        assert [config["names"] for config in job["dns_sd_configs"]] == [[service]]
        assert service in compose_services and service in swarm_services


def test_the_nginx_job_scrapes_the_port_the_exporter_listens_on() -> None:
    jobs = load(CONFIG)["scrape_configs"]
    (lookup,) = next(job for job in jobs if job["job_name"] == "nginx")["dns_sd_configs"]
    assert lookup["port"] == 9113  # nginx-prometheus-exporter's default --web.listen-address
    for path in (REPO / "compose.yaml", DEPLOY / "swarm" / "monitoring.yaml"):
        command = load(path)["services"]["nginx-exporter"]["command"]
        assert not any(arg.startswith("--web.listen-address") for arg in command), path


# --- The rules name only what exists ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("rate(realtime_django_http_requests_total[1m])", []),
        ("realtime_django_http_request_duration_seconds_bucket", []),
        ("realtime_django_websocket_connections", []),
        ("job:realtime_django_chat_fanout_delivery_seconds:p99_rate1m > 0.1", []),
        ("rate(realtime_django_http_request_total[1m])", ["realtime_django_http_request_total"]),
        ("realtime_django_http_requests", ["realtime_django_http_requests"]),  # a counter without _total
        ("realtime_django_websocket_connections_total", ["realtime_django_websocket_connections_total"]),
        (
            "realtime_django_chat_fanout_delivery_seconds_created",
            ["realtime_django_chat_fanout_delivery_seconds_created"],
        ),
        ("job:realtime_django_http_requests:rate5m", ["job:realtime_django_http_requests:rate5m"]),
    ],
)
def test_the_name_check_finds_what_is_not_defined(text: str, unknown: list[str]) -> None:
    assert unknown_names(text) == unknown


def test_unit_tests_feed_series_the_app_serves() -> None:
    """The synthetic series are named as a scrape names them: Prometheus' own `up`, or the app's."""
    fed = {test_series.split("{")[0] for test in unit_tests() for test_series in series_of(test)}
    assert sorted(name for name in fed - {"up"} if name not in app_series()) == []


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule.get("record") or rule["alert"])
def test_rules_and_their_texts_name_only_defined_metrics(rule: dict[str, Any]) -> None:
    texts = [rule["expr"], *rule.get("annotations", {}).values()]
    assert [name for text in texts for name in unknown_names(text)] == [], (
        "a name the app does not serve (app/core/metrics.py) or no rule records"
    )


# --- compose.yaml's `monitoring` profile, as the file says it on its own -----------------------------

MONITORING_SERVICES = ("prometheus", "nginx-exporter")


@pytest.fixture(scope="module")
def compose_services() -> dict[str, Any]:
    return load(REPO / "compose.yaml")["services"]


@pytest.mark.parametrize("name", MONITORING_SERVICES)
def test_monitoring_services_run_only_with_their_profile_and_hardened(
    compose_services: dict[str, Any], name: str
) -> None:
    service = compose_services[name]
    assert service["profiles"] == ["monitoring"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert service["mem_limit"] and service["pids_limit"]
    assert not service["user"].startswith("0"), "never root"
    assert service["restart"] == "unless-stopped"


def test_prometheus_reads_this_folder_read_only_and_is_published_on_loopback_only(
    compose_services: dict[str, Any],
) -> None:
    prometheus = compose_services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert [port.split(":")[0] for port in prometheus["ports"]] == ["127.0.0.1"]
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])
    assert "backend" in prometheus["networks"]


def test_the_exporter_is_on_the_backend_network_only(compose_services: dict[str, Any]) -> None:
    exporter = compose_services["nginx-exporter"]
    assert exporter["networks"] == ["backend"]
    assert "ports" not in exporter
    assert "ports" not in compose_services["app"]
    # Nginx publishes its site's port alone; the exporter reads the status port over the network.
    assert [port.rsplit(":", 1)[1] for port in compose_services["nginx"]["ports"]] == ["8080"]
    assert any("http://nginx:8081/stub_status" in arg for arg in exporter["command"])
