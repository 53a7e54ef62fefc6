"""The sockets-to-the-limit stage: its settings, the tool's command, its result read back as a row,
its stage and stack, its report section and chart; without Docker."""

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from loadtests.bench import config, machine, report, runner, sockets
from loadtests.bench.analysis import analyse
from loadtests.bench.fanout import GeneratorOutputError
from loadtests.bench.results import Results, Run
from loadtests.bench.sockets_report import sockets_section
from loadtests.sockets import __main__ as cli
from loadtests.sockets.plan import Step, summary

STEPS = (2000, 5000, 10000, 20000, 30000)
BASELINE = {"app": {"app-1": 100_000_000}, "nginx": {"nginx-1": 10_000_000}, "redis": {"redis-1": 5_000_000}}


def load(*overrides, environ=None):
    return config.load([f"--set={o}" for o in overrides], environ or {}, known_servers=["uvicorn"])


# --- settings -------------------------------------------------------------------------------------


def test_sockets_runs_only_when_named_with_its_defaults():
    assert "sockets" in config.ON_REQUEST and "sockets" not in load().scenarios
    named = load(environ={"BENCH_SCENARIOS": "sockets"})
    assert named.scenarios == ("sockets",)
    assert named.sockets == config.SocketsSettings(
        steps=(2000, 5000, 10000, 20000, 30000, 40000), rate=200, settle=5, replicas=2, nginx_workers=4,
        nginx_connections=19000, nginx_memory="1g",
    )  # fmt: skip
    assert load(environ={"BENCH_QUICK": "1"}).sockets.steps[-1] < 100  # tiny, for the pipeline's check


def test_the_smallest_nginx_connections_is_the_entry_points():
    entrypoint = (Path(__file__).parents[2] / "nginx" / "entrypoint.sh").read_text()
    assert f'[ "$NGINX_WORKER_CONNECTIONS" -ge {config.NGINX_MIN_CONNECTIONS} ]' in entrypoint


def test_sockets_settings_from_bench_set():
    settings = load(
        environ={"BENCH_SET": "sockets.steps=1000,3000,9000 sockets.rate=250 sockets.settle=2 "
                 "sockets.replicas=3 sockets.nginx_workers=6 sockets.nginx_connections=8000 "
                 "sockets.nginx_memory=768m"}
    )  # fmt: skip
    assert settings.sockets == config.SocketsSettings((1000, 3000, 9000), 250, 2, 3, 6, 8000, "768m")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("sockets.steps=5000,2000", "sockets.steps"),  # not rising
        ("sockets.steps=0,10", "sockets.steps"),
        ("sockets.steps=", "sockets.steps"),
        ("sockets.steps=1k", "sockets.steps"),
        ("sockets.rate=0", "sockets.rate"),
        ("sockets.rate=inf", "sockets.rate"),
        ("sockets.settle=-1", "sockets.settle"),
        ("sockets.settle=nan", "sockets.settle"),
        ("sockets.replicas=0", "sockets.replicas"),
        ("sockets.nginx_workers=0", "sockets.nginx_workers"),
        ("sockets.nginx_workers=auto", "sockets.nginx_workers"),
        ("sockets.nginx_connections=100", "sockets.nginx_connections"),
        ("sockets.nginx_memory=lots", "sockets.nginx_memory"),
        ("sockets.nginx_memory=0m", "sockets.nginx_memory"),
    ],
)
def test_bad_sockets_settings_name_the_setting(override, named):
    with pytest.raises(config.ConfigError, match=named.replace(".", r"\.")):
        load(override)


# --- the tool's command and its result ------------------------------------------------------------


def test_command_carries_every_setting(tmp_path):
    settings = config.SocketsSettings(steps=(100, 2500, 40000), rate=250, settle=1.5)
    run = sockets.SocketsRun("http://127.0.0.1:9", "rtd-bench", settings, tmp_path / "s.json")
    command = run.command("python")
    assert command[:3] == ["python", "-m", "loadtests.sockets"]
    args = cli.parser().parse_args(command[3:])
    assert (args.host, args.project, args.steps) == ("http://127.0.0.1:9", "rtd-bench", "100,2500,40000")
    assert (args.rate, args.settle, args.output) == (250, 1.5, str(tmp_path / "s.json"))
    assert run.seconds >= 40000 / 250 + 3 * 1.5 and run.timeout > run.seconds


def step_json(count, p99, *, per_socket=(50_000, 28_000, 1_000), refused=0, dropped=0, nginx_errors=None):
    """One step as the tool writes it: ``count`` sockets asked, the ``refused`` fewer open, each
    component grown by ``per_socket`` bytes per open socket since BASELINE."""
    opened = count - refused
    memory = {
        component: {name: before + grown * opened for name, before in BASELINE[component].items()}
        for component, grown in zip(BASELINE, per_socket, strict=True)
    }
    step = Step(
        count, open=opened - dropped, delivered=opened - dropped, latencies_ms=[p99 / 2] * 50 + [p99] * 50,
        memory=memory, handshake_failures=Counter({"HTTP 502": refused}) if refused else Counter(),
        dropped=Counter({"closed 1006": dropped}) if dropped else Counter(), nginx_errors=nginx_errors or {},
    )  # fmt: skip
    return step.judge()


def result(steps):
    return {
        "tool": "sockets", "room": "capacity-x", "processes": 4, "sources": ["127.0.0.1"],
        "steps": [s.to_json(BASELINE) for s in steps], "baseline_memory_bytes": {}, **summary(steps),
    }  # fmt: skip


def test_parse_result_row_is_the_largest_step_that_held():
    steps = [step_json(2000, 10), step_json(5000, 20), step_json(10000, 40, refused=1200)]
    row, found = sockets.parse_result(result(steps))
    assert row["rps"] == row["held"] == row["requests"] == 5000 and row["failures"] == 0
    assert row["stopped"] == "10000 sockets: handshakes failed: HTTP 502 x1200"
    assert (row["p50_ms"], row["p99_ms"], row["max_ms"]) == (10, 20, 20)  # the 5,000 step's broadcast
    assert [s["sockets"] for s in found] == [2000, 5000, 10000]
    assert [s["held"] for s in found] == [True, True, False]
    assert found[1]["bytes_per_socket"] == {"app": 50_000, "nginx": 28_000, "redis": 1_000}
    assert found[2]["open"] == 8800 and found[2]["handshake_failures"] == {"HTTP 502": 1200}


def test_parse_result_when_nothing_held_is_zero_with_the_first_steps_broadcast():
    row, _ = sockets.parse_result(result([step_json(2000, 300, dropped=3)]))
    assert row["rps"] == 0 and row["p99_ms"] == 300
    assert row["stopped"] == "2000 sockets: sockets dropped: closed 1006 x3"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tool": "fanout"}, "not a sockets result"),
        ({"tool": "sockets", "steps": []}, "no step"),
        ({"tool": "sockets", "steps": [{"held": True}], "held": 1, "stopped": ""}, "unreadable"),
    ],
)
def test_parse_result_refuses_what_it_cannot_read(data, message):
    with pytest.raises(GeneratorOutputError, match=message):
        sockets.parse_result(data)


def test_read_takes_the_printed_line_without_a_file(tmp_path):
    run = sockets.SocketsRun("http://x", "p", config.SocketsSettings(), tmp_path / "missing.json")
    printed = json.dumps(result([step_json(2000, 10)]))
    row, steps = run.read(f"sockets: held 2,000\n{cli.MARKER}{printed}\n")
    assert row["held"] == 2000 and len(steps) == 1


# --- the stage and its stack ----------------------------------------------------------------------


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "machine", lambda: {})
    monkeypatch.setattr(machine, "host_versions", lambda: {})

    def make(scenarios, *overrides):
        settings = config.load(
            ["--servers", "uvicorn", "--scenarios", scenarios, "--repeats", "2",
             *(f"--set={o}" for o in overrides)],
            environ={}, known_servers=["uvicorn"],
        )  # fmt: skip
        return runner.Bench(settings, tmp_path, [])

    return make


def test_every_sockets_run_has_a_stage_and_a_stack_of_its_own_and_no_ceiling(bench):
    first, second = bench("sockets", "sockets.nginx_workers=6", "sockets.replicas=3").stages()
    assert (first.name, second.name) == ("uvicorn · default · sockets 1", "uvicorn · default · sockets 2")
    assert (first.folder, second.folder) == ("uvicorn-default-sockets-1", "uvicorn-default-sockets-2")
    for stage, run in ((first, "run 1/2"), (second, "run 2/2")):
        assert [s.label for s in stage.steps] == [
            "up (Nginx: 6 workers of 19,000 connections, 1g)", "scale to 3 replicas",
            f"sockets to the limit {run}",
        ]  # fmt: skip
        assert stage.teardown is not None and stage.teardown.label == "down"
    variant, *apart = bench("capacity sockets").stages()  # beside the variant's own stage, named apart
    assert variant.name == "uvicorn · default"
    assert [stage.name for stage in apart] == [f"uvicorn · default · sockets {k}" for k in (1, 2)]
    assert not any("sockets to the limit" in s.label for s in variant.steps)


def test_sockets_runs_go_round_by_round_over_the_variants(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "host_versions", lambda: {})
    settings = config.load(
        ["--servers", "uvicorn daphne", "--scenarios", "capacity sockets", "--repeats", "2"],
        environ={}, known_servers=["uvicorn", "daphne"],
    )  # fmt: skip
    names = [stage.name for stage in runner.Bench(settings, tmp_path, []).stages()]
    assert names == [
        "uvicorn · default", "daphne · default",
        "uvicorn · default · sockets 1", "daphne · default · sockets 1",
        "uvicorn · default · sockets 2", "daphne · default · sockets 2",
    ]  # fmt: skip


def test_one_sockets_run_keeps_the_plain_stage_name(bench):
    b = bench("sockets")
    b.config = dataclasses.replace(b.config, repeats=1)
    [stage] = b.stages()
    assert stage.name == "uvicorn · default · sockets" and stage.folder == "uvicorn-default-sockets"


def test_only_the_sockets_stack_gets_the_larger_nginx(bench, monkeypatch):
    b = bench("capacity sockets", "sockets.nginx_memory=2g")
    variant, apart, _ = b.stages()
    ups = []
    monkeypatch.setattr(
        b, "variant_up", lambda stage, target, profile, env=None: ups.append((stage.name, env))
    )
    variant.steps[0].action()
    apart.steps[0].action()
    assert ups == [
        ("uvicorn · default", None),
        (
            "uvicorn · default · sockets 1",
            {"NGINX_WORKER_PROCESSES": "4", "NGINX_WORKER_CONNECTIONS": "19000", "NGINX_MEMORY_LIMIT": "2g"},
        ),
    ]


def test_the_stage_env_reaches_make_up(bench, tmp_path):
    b = bench("sockets")
    env = sockets.nginx_environment(b.config.sockets)
    stack = b._new_stack(runner.Target("uvicorn"), tmp_path / "stack", [], env, "rtd-bench")
    made = stack.environment()
    assert made["NGINX_WORKER_PROCESSES"] == "4" and made["NGINX_MEMORY_LIMIT"] == "1g"
    assert made["NGINX_WORKER_CONNECTIONS"] == "19000"
    assert made["WS_CONN_PER_IP"] == "65535"  # the load test's limits stay raised
    plain = b._new_stack(runner.Target("uvicorn"), tmp_path / "plain", [], {}, "rtd-bench")
    nginx_sizes = {"NGINX_WORKER_PROCESSES", "NGINX_WORKER_CONNECTIONS", "NGINX_MEMORY_LIMIT"}
    assert not nginx_sizes & set(plain.env)  # other stages' stacks


def test_a_job_runs_the_tool_on_the_benchs_project(bench, tmp_path):
    b = bench("sockets")
    [job] = b.sockets.jobs(runner.Target("uvicorn"), 1)
    tool = job.command("http://127.0.0.1:5", tmp_path)
    assert isinstance(tool, sockets.SocketsRun)
    assert (tool.project, tool.output) == ("rtd-bench", tmp_path / "sockets.json")
    assert (job.scenario, job.case, job.tool, job.row) == (
        "sockets",
        "up to 40,000 sockets",
        "sockets",
        sockets.ROW,
    )


# --- the report -----------------------------------------------------------------------------------


def runs_of(results, target, runs):
    measurement = results.measurement(target, "default", "sockets", "up to 30,000 sockets", "sockets",
                                      sockets.ROW)  # fmt: skip
    for steps in runs:
        row, found = sockets.parse_result(result(steps))
        measurement.add(Run(tool="sockets", rows={sockets.ROW: row}, steps=found))


def fake_results() -> Results:
    settings = config.SocketsSettings(steps=STEPS, nginx_workers=4, nginx_memory="1g")
    results = Results(
        status="complete",
        settings={"servers": ["uvicorn", "daphne"], "profiles": [{"name": "default", "env": {}}],
                  "repeats": 3, "sockets": dataclasses.asdict(settings)},
    )  # fmt: skip
    # Every run in a stack of its own: each one's memory per socket counts.
    less, more = (46_000, 27_000, 1_000), (54_000, 29_000, 1_000)
    said = {"[error] upstream timed out (110: Connection timed out)": 3,
            "[error] no live upstreams while connecting to upstream": 1200}  # fmt: skip
    refused = step_json(30000, 900, refused=1200, nginx_errors=said)
    runs_of(results, "uvicorn", [
        [step_json(2000, 5), step_json(5000, 10), step_json(10000, 40), step_json(20000, 80), refused],
        [step_json(2000, 5, per_socket=less), step_json(5000, 10, per_socket=less),
         step_json(10000, 50, per_socket=less), step_json(20000, 100, per_socket=less), refused],
        [step_json(2000, 5, per_socket=more), step_json(5000, 10, per_socket=more),
         step_json(10000, 60, per_socket=more), step_json(20000, 200, dropped=7)],
    ])  # fmt: skip
    runs_of(results, "daphne", [
        [step_json(n, p99, per_socket=(40_000, 27_000, 2_000))
         for n, p99 in zip(STEPS, (5, 10, 30, 60, 90), strict=True)],
        [step_json(n, p99, per_socket=(38_000, 27_000, 2_000))
         for n, p99 in zip(STEPS, (5, 10, 35, 70, 95), strict=True)],
    ])  # fmt: skip
    return results


def test_report_section_shows_held_stopped_memory_and_p99():
    results = fake_results()
    section = sockets_section(
        report.Index(analyse(results), results), results, {"sockets": "charts/sockets.png"}
    )
    assert section is not None and section.title == "Capacity to the limit"
    [table] = section.tables
    assert table.columns[1:4] == ["sockets held", "stopped (median run)", "memory at (sockets)"]
    assert table.columns[4:9] == [
        "app per socket", "Nginx per socket", "Redis per socket",
        "broadcast p99 ms at 10,000", "broadcast p99 ms at 20,000",
    ]  # fmt: skip
    uvicorn, daphne = table.rows
    assert uvicorn == [
        "uvicorn", "20,000 (10,000 to 20,000)",
        "30000 sockets: handshakes failed: HTTP 502 x1200; memory then: app 1,469 MiB, Nginx 779 MiB, "
        "Redis 32 MiB; Nginx said: [error] no live upstreams while connecting to upstream (x1,200)",
        # Each run's largest step that held: 20,000, 20,000 and 10,000.
        "20,000 (10,000 to 20,000)", "48.8 KiB (44.9 KiB to 52.7 KiB)", "27.3 KiB (26.4 KiB to 28.3 KiB)",
        "1.0 KiB",
        "50 (40 to 60)", "90 (80 to 100)",  # at 20,000: the two runs that held it
        "3",
    ]  # fmt: skip
    assert daphne == [
        "daphne", "30,000", "every step held up to 30,000", "30,000", "38.1 KiB (37.1 KiB to 39.1 KiB)",
        "26.4 KiB", "2.0 KiB",
        "32.5 (30 to 35)", "65 (60 to 70)", "2",
    ]  # fmt: skip
    settings = section.paragraphs[0]
    for stated in ("2,000, 5,000, 10,000, 20,000, 30,000", "200 handshakes/s", "2 app replicas",
                   "Nginx with 4 workers of 19,000 connections", "a 1g memory limit",
                   "settles 5 s"):  # fmt: skip
        assert stated in settings
    assert section.charts == [
        ("charts/sockets.png", "sockets held, and memory per socket of the app, Nginx and Redis")
    ]


def test_a_step_not_reached_and_memory_not_read_are_said_so():
    results = fake_results()
    measurement = sockets.measurement(results, "uvicorn", "default")
    for run in measurement.runs:
        run.steps = [{**step, "bytes_per_socket": {}} for step in run.steps[:3]]  # no --project
    section = sockets_section(report.Index(analyse(results), results), results, {})
    uvicorn = section.tables[0].rows[0]
    assert uvicorn[4:7] == ["not measured"] * 3 and uvicorn[8] == "not reached"
    assert section.charts == []


def test_report_renders_the_section_headline_and_chart(tmp_path):
    fake_results().save(tmp_path)
    report.render(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Capacity to the limit" in text and "every step held up to 30,000" in text
    assert "| sockets held |" in text.split("## Capacity to the limit")[0]  # in the headline too
    chart = tmp_path / "charts" / "sockets.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    assert "charts/sockets.png" in text and "charts/sockets.png" in (tmp_path / "report.html").read_text()


def test_no_sockets_no_section_and_no_chart(tmp_path):
    results = fake_results()
    results.measurements = []
    assert sockets_section(report.Index(analyse(results), results), results, {}) is None
