"""The report, rendered from a results.json: every figure in it is a measured one, formatted once."""

import json
import shutil
from pathlib import Path

import pytest

from loadtests.bench import __main__ as cli
from loadtests.bench import report
from loadtests.bench.analysis import analyse
from loadtests.bench.results import Results
from loadtests.bench.soak_report import tolerance_table
from loadtests.bench.stats import Spread
from loadtests.soak import verdict
from tests.bench.checks import PLACEHOLDERS, assert_report_shows

FIXTURE = Path(__file__).parent / "fixtures" / "results.json"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    shutil.copy(FIXTURE, out / "results.json")
    report.render(out)
    return out


def test_files(rendered):
    for name in ("report.md", "report.html"):
        assert (rendered / name).stat().st_size > 1000
    charts = sorted((rendered / "charts").glob("*.png"))
    assert {c.stem for c in charts} == {"http-locust", "http-wrk", "echo", "chat", "capacity"}
    for chart in charts:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"charts/{chart.name}" in (rendered / "report.md").read_text()
        assert f"charts/{chart.name}" in (rendered / "report.html").read_text()


def test_every_measurement_appears_with_its_figures(rendered):
    results = json.loads(FIXTURE.read_text())
    figures = analyse(Results.from_json(results))
    assert len(figures) == len(results["measurements"])  # every measurement produced figures
    assert_report_shows(rendered, figures)


def test_placeholders_are_caught(tmp_path):
    for text in ("| nan |", "| None |", "{{ value }}", "not measured"):
        assert PLACEHOLDERS.search(text), text
    assert not PLACEHOLDERS.search("| 1,234 (1,200 to 1,260) | 0.00 % (0 of 5,154) | infinite |")


def test_generator_limited_figures_are_marked(rendered):
    figures = analyse(Results.load(FIXTURE.parent))
    limited = [f for f in figures if f.limited]
    assert limited, "the fixture has figures at the generator's ceiling"
    markdown = (rendered / "report.md").read_text()
    for f in limited:
        assert f"{report.fmt_spread(f.rps, report.fmt_rate)} {report.LIMITED_MARK}" in markdown
    assert markdown.count(report.LIMITED_MARK) >= len(limited)


def test_profiles_side_by_side(rendered):
    markdown = (rendered / "report.md").read_text()
    assert "| variant | measure | stock | fast | fast / stock |" in markdown
    assert "| uvicorn · stock |" in markdown and "| gunicorn · fast |" in markdown
    figures = analyse(Results.load(FIXTURE.parent))
    ping = {
        (f.target, f.profile): f.rps.median for f in figures if f.case == "/api/ping" and f.tool == "locust"
    }
    ratio = ping[("uvicorn", "fast")] / ping[("uvicorn", "stock")]
    assert f"{ratio:.2f}x" in markdown


def test_settings_machine_and_versions_are_recorded(rendered):
    results = json.loads(FIXTURE.read_text())
    markdown = (rendered / "report.md").read_text()
    assert results["machine"]["cpu_model"] in markdown
    for name in ("django", "uvicorn", "nginx", "redis-server", "postgresql"):
        assert f"stack: {name} | {results['stack_versions'][name]}" in markdown
    assert f"host: locust | {results['host_versions']['locust']}" in markdown
    assert "WS_CONN_PER_IP=65535" in markdown  # the raised Nginx limits are stated
    assert results["settings"]["locust_mode"] in markdown


def test_chat_settle_is_stated_when_recorded():
    results = json.loads(FIXTURE.read_text())
    assert not any(
        "rooms full" in item for item in report.settings_items(Results.from_json(results))
    )  # older results
    results["settings"]["chat"]["settle"] = 2.0
    chat = next(
        item for item in report.settings_items(Results.from_json(results)) if item.startswith("Chat fan-out")
    )
    assert "from 2.0 s after the last user started (rooms full)" in chat


@pytest.mark.parametrize(
    ("fmt", "value", "text"),
    [
        (report.fmt_rate, 1234.4, "1,234"),
        (report.fmt_rate, 84.04, "84.0"),
        (report.fmt_ms, 36.0, "36"),  # Locust's whole milliseconds
        (report.fmt_ms, 4.553, "4.55"),
        (report.fmt_ms, 14.48, "14.5"),
        (report.fmt_ms, 1234.5, "1,234"),
        (report.fmt_kib, 7884.8, "7.7 KiB"),
        (report.fmt_share, 0.856, "86 %"),
    ],
)
def test_formats(fmt, value, text):
    assert fmt(value) == text


@pytest.mark.parametrize(
    ("spread", "text"),
    [
        (Spread(790, 762, 933, 3), "790 (762 to 933)"),
        (Spread(5, 5, 5, 1), "5"),
        (Spread(10.91, 10.9, 10.92, 3), "10.9"),  # a range that formats to one value is not shown
        (Spread(0.0, -2662.4, 2662.4, 3), "0.0 KiB (-2.6 KiB to 2.6 KiB)"),
    ],
)
def test_spread_format(spread, text):
    fmt = report.fmt_kib if "KiB" in text else (report.fmt_rate if spread.median > 9 else report.fmt_ms)
    assert report.fmt_spread(spread, fmt) == text


def test_errors(tmp_path):
    assert report.fmt_errors(3, 1000) == "0.30 % (3 of 1,000)"
    assert report.fmt_errors(0, 0) == "0.00 % (0 of 0)"


def test_partial_results_render_what_there_is(tmp_path):
    results = json.loads(FIXTURE.read_text())
    results["measurements"] = [m for m in results["measurements"] if m["scenario"] == "echo"]
    results["status"] = "interrupted"
    results["errors"] = [{"stage": "daphne", "step": "up", "message": "make up failed\nlong log"}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    report.render(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "This run is interrupted" in markdown
    assert (
        "## WebSocket echo" in markdown and "## HTTP endpoints" not in markdown and "## Chat" not in markdown
    )
    assert "- daphne / up: make up failed" in markdown


def test_report_command(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2  # no results.json there
    assert "usage" in capsys.readouterr().err
    shutil.copy(FIXTURE, tmp_path / "results.json")
    assert cli.main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists()


def test_bad_setting_exits_2_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_SERVERS", "tornado")
    assert cli.main(["--output", str(tmp_path)]) == 2
    assert "unknown server tornado" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no results folder, no stack


def test_each_variant_states_the_settings_its_server_ran_with(rendered):
    """The section is built from the server processes' own command lines and variables."""
    results = json.loads(FIXTURE.read_text())
    for name in ("report.md", "report.html"):
        text = (rendered / name).read_text()
        assert "Server settings" in text
        for stack in results["stacks"]:
            for found in stack["servers"].values():
                assert report.fmt_command(found["argv"]) in text.replace("&#39;", "'"), (name, found["argv"])
    markdown = (rendered / "report.md").read_text()
    gunicorn = next(line for line in markdown.splitlines() if line.startswith("| gunicorn · fast | app |"))
    assert "gunicorn config.wsgi:application" in gunicorn and "--worker-class gthread" in gunicorn
    assert "GUNICORN_THREADS=8 GUNICORN_WORKER_CLASS=gthread KEEPALIVE_TIMEOUT=75" in gunicorn
    assert "| gunicorn · fast | ws (WebSocket sidecar) | uvicorn config.asgi:application" in markdown


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (
            ["/opt/venv/bin/python", "/opt/venv/bin/uvicorn", "a:b", "--ws", "wsproto"],
            "uvicorn a:b --ws wsproto",
        ),
        (["/opt/venv/bin/granian", "--interface", "asgi"], "granian --interface asgi"),
        (["python3", "-m", "hypercorn", "x"], "python3 -m hypercorn x"),
        (["gunicorn", "--forwarded-allow-ips", ""], "gunicorn --forwarded-allow-ips ''"),
        ([], ""),
    ],
)
def test_command_lines_read_as_typed(argv, shown):
    assert report.fmt_command(argv) == shown


def server_settings(data):
    results = Results.from_json(data)
    return report.server_settings_section(report.Index(analyse(results), results), results)


def test_unreadable_server_settings_are_said_so(tmp_path):
    results = json.loads(FIXTURE.read_text())
    for stack in results["stacks"]:
        stack.pop("servers")
    results["stacks"][1]["servers"] = {"app": {"error": "reading the server process failed: no python"}}
    section = server_settings(results)
    assert section is not None
    assert section.tables[0].rows == [
        ["uvicorn · default", "app", "could not be read: reading the server process failed: no python", ""]
    ]
    results["stacks"][1].pop("servers")  # results from a bench that did not read them: no section
    assert server_settings(results) is None


def soak_record(target: str, passed: bool) -> dict:
    fds_after = 100 if passed else 140
    return {
        "target": target, "profile": "default", "dir": f"runs/{target}-default/soak", "status": "complete",
        "passed": passed, "samples": 50, "sample_errors": 0,
        "plan": {"churn": 1800, "users": 100, "warmup": 300, "window": 60},
        "verdicts": [
            {"resource": "rss_bytes", "rule": "growth", "passed": True, "baseline": 400 * 2**20,
             "end": 410 * 2**20, "allowed": 420 * 2**20, "detail": ""},
            {"resource": "fds", "rule": "baseline", "passed": passed, "baseline": 100, "end": fds_after,
             "allowed": 108, "detail": ""},
        ],
        "charts": ["charts/soak-rss_bytes.png", "charts/soak-fds.png"],
    }  # fmt: skip


def test_the_soak_section_has_a_verdict_per_variant_and_its_charts(tmp_path):
    results = json.loads(FIXTURE.read_text())
    results["soaks"] = [soak_record("uvicorn", True), soak_record("daphne", False)]
    (tmp_path / "results.json").write_text(json.dumps(results))
    report.render(tmp_path)
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("## Soak") :]
    assert "| uvicorn | pass | 30 min | 100 | 50 | 0 |" in section
    assert "| daphne | FAIL (fds) | 30 min | 100 | 50 | 0 |" in section
    assert (
        "| Open file descriptors, app containers | back to the baseline "
        "| 100 before, 140 after | 108 | **FAIL** |" in section
    )
    assert "400.0 MiB → 410.0 MiB" in section
    assert "runs/daphne-default/soak/charts/soak-fds.png" in section
    assert "runs/uvicorn-default/soak/charts/soak-rss_bytes.png" in (tmp_path / "report.html").read_text()
    assert "charts/soak.png" not in section  # no samples to draw the variants side by side


def test_the_soak_section_draws_every_variant_side_by_side_from_their_samples(tmp_path):
    results = json.loads(FIXTURE.read_text())
    results["soaks"] = [soak_record("uvicorn", True), soak_record("daphne", False)]
    for soak in results["soaks"]:
        soak.update(churn_started=20.0, churn_ended=1820.0)
        folder = tmp_path / soak["dir"]
        folder.mkdir(parents=True)
        totals = {
            "rss_bytes": 400 * 2**20,
            "websocket_connections": 0,
            "asyncio_tasks": 3,
            "fds_without_pools": 90,
        }
        lines = [{"t": t, "phase": "churn", "totals": totals} for t in range(0, 1900, 60)]
        (folder / "samples.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    (tmp_path / "results.json").write_text(json.dumps(results))
    report.render(tmp_path)
    section = (tmp_path / "report.md").read_text().split("## Soak")[1]
    assert "charts/soak.png" in section
    assert (tmp_path / "charts" / "soak.png").stat().st_size > 0


def test_the_soak_rules_table_states_every_judged_rule():
    allowed = {row[0]: row[1] for row in tolerance_table().rows}
    for resource in verdict.RESOURCES:
        judged = resource.rule != "shown"
        assert (allowed[resource.label] != "not judged") == judged, resource.key
    close_wait = next(r for r in verdict.RESOURCES if r.key == "close_wait")
    assert allowed[close_wait.label].startswith("none")


def test_no_soak_no_section(rendered):
    assert "Soak" not in (rendered / "report.md").read_text()
