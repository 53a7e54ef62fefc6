"""The fan-out throughput scenario's mechanics: the steps, the sustained figure, the result read back,
its settings, its report section; and the generator's counts against a broadcaster on 127.0.0.1."""

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtests.bench import config, fanout, report
from loadtests.bench.analysis import analyse
from loadtests.bench.charts import plain_log_axes, plt
from loadtests.bench.fanout_report import STEP_COLUMNS, fanout_section
from loadtests.bench.results import Results, Run
from loadtests.fanout import __main__ as cli
from loadtests.fanout import cpu
from loadtests.fanout.generator import FanoutRun, Plan
from loadtests.fanout.steps import MIN_DELIVERIES, StepResult, geometric_rates, judge, sustained
from tests.loadtests.chat_server import Broadcaster

# --- steps ----------------------------------------------------------------------------------------


def test_geometric_rates():
    assert geometric_rates(20, 1.5, 100) == [20, 30, 45, 67.5]
    assert geometric_rates(10, 2, 80) == [10, 20, 40, 80]  # the stop itself is a step
    for bad in ((0, 2, 10), (10, 1, 20), (10, 2, 5)):
        with pytest.raises(ValueError, match="rates need"):
            geometric_rates(*bad)


def step(rate, deliveries_per_s, p99, *, missing=0, errors=None, closes=None, cores=(None, None)):
    seconds = 4.0
    delivered = int(deliveries_per_s * seconds)
    result = StepResult(
        rate=rate, senders=1, seconds=seconds, messages=int(rate * seconds), expected=delivered + missing,
        deliveries=delivered, p50_ms=p99 / 2, p99_ms=p99, errors=errors or {}, closes=closes or {},
        machine_cores=cores[0], generator_cores=cores[1],
    )  # fmt: skip
    return judge(result, threshold_ms=100)


def test_sustained_is_the_best_step_before_the_first_that_failed():
    steps = [step(20, 1000, 5), step(30, 1500, 8), step(45, 2250, 150), step(67, 3300, 20)]
    assert [s.passed for s in steps] == [True, True, False, True]
    assert sustained(steps) is steps[1]  # the step after the failure does not count
    assert "p99 150 ms > 100 ms" in steps[2].why


@pytest.mark.parametrize(
    ("failure", "why"),
    [
        ({"missing": 1}, "1 deliveries missing"),
        ({"errors": {"rate_limited": 2}}, "errors rate_limited x2"),
        ({"closes": {"too_slow": 1}}, "closed too_slow x1"),
    ],
)
def test_any_failure_disqualifies_a_step(failure, why):
    steps = [step(20, 1000, 5), step(30, 1500, 8, **failure)]
    assert not steps[1].passed and why in steps[1].why
    assert steps[1].failures >= 1
    assert sustained(steps) is steps[0]


def test_too_few_deliveries_is_no_percentile_and_nothing_held():
    thin = step(1, (MIN_DELIVERIES - 1) / 4, 1)
    assert not thin.passed and "only" in thin.why
    assert sustained([thin]) is None
    assert sustained([]) is None


# --- the generator's result, read back ------------------------------------------------------------


def result(steps, threshold=100.0):
    best = sustained(steps)
    return {
        "tool": "fanout", "rooms": 4, "members": 50, "sockets": 200, "threshold_ms": threshold,
        "steps": [s.to_json() for s in steps], "sustained": best.to_json() if best else None,
        "stopped": "rate 45/s: p99 150 ms > 100 ms",
    }  # fmt: skip


def test_parse_result_row_is_the_sustained_step():
    steps = [step(20, 1000, 5), step(30, 1500, 8), step(45, 2250, 150)]
    row, found = fanout.parse_result(result(steps))
    assert row["rps"] == 1500 and row["requests"] == 6000 and row["p99_ms"] == 8
    assert row["failures"] == 0 and row["offered_mps"] == 30
    assert [s["rate"] for s in found] == [20, 30, 45]


def test_parse_result_when_nothing_held_is_zero_with_the_first_steps_latency():
    row, _ = fanout.parse_result(result([step(20, 1000, 300)]))
    assert row["rps"] == 0 and row["requests"] == 0 and row["p99_ms"] == 300


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tool": "fanout", "error": "OSError: refused"}, "generator failed: OSError"),
        ({"tool": "wrk"}, "not a fan-out result"),
        ({"tool": "fanout", "steps": []}, "no step"),
        ({"tool": "fanout", "steps": [{}], "sustained": None}, "unreadable"),
    ],
)
def test_parse_result_refuses_what_it_cannot_read(data, message):
    with pytest.raises(fanout.GeneratorOutputError, match=message):
        fanout.parse_result(data)


def test_read_output_prefers_the_file_then_the_printed_line(tmp_path):
    out = tmp_path / "fanout.json"
    assert fanout.read_output(f'noise\n{cli.MARKER}{{"tool": "fanout"}}\n', out) == {"tool": "fanout"}
    out.write_text('{"tool": "fanout", "steps": []}')
    assert fanout.read_output("", out)["steps"] == []
    with pytest.raises(fanout.GeneratorOutputError, match="no result"):
        fanout.read_output("nothing", tmp_path / "missing.json")


def test_command_carries_every_setting(tmp_path):
    settings = config.FanoutSettings(rooms=3, members=7, start=5, factor=2, max_rate=40, p99_ms=50, warmup=3)
    run = fanout.FanoutRun("http://127.0.0.1:9", settings, tmp_path / "r.json")
    args = cli.parser().parse_args(run.command()[3:])
    plan = cli.plan_of(args)
    assert (plan.rooms, plan.members, plan.rates, plan.threshold_ms) == (3, 7, (5, 10, 20, 40), 50)
    assert (plan.warmup, plan.settle, plan.seconds) == (3, settings.settle, settings.duration)
    assert run.steps == 4 and run.timeout > run.seconds


# --- settings -------------------------------------------------------------------------------------


def load(*overrides):
    return config.load([f"--set={o}" for o in overrides], {}, known_servers=["uvicorn"])


def test_fanout_runs_only_when_named():
    assert "fanout" not in load().scenarios
    assert config.load(["--scenarios", "fanout"], {}, known_servers=["uvicorn"]).scenarios == ("fanout",)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("fanout.rooms=0", "fanout.rooms"),
        ("fanout.members=0", "fanout.members"),
        ("fanout.factor=1", "fanout.factor"),
        ("fanout.start=0", "fanout.start"),
        ("fanout.p99_ms=0", "fanout.p99_ms"),
        ("fanout.p99_ms=nan", "fanout.p99_ms"),
        ("fanout.max_rate=10", "fanout.max_rate"),  # below start
        ("fanout.max_rate=3000", "fanout.max_rate"),  # more than the members may send
        ("fanout.settle=-1", "fanout.settle"),
        ("fanout.warmup=-1", "fanout.warmup"),
        ("fanout.duration=0", "fanout.duration"),
        ("fanout.replicas=0", "fanout.replicas"),
        ("fanout.rooms=x", "fanout.rooms"),
    ],
)
def test_bad_fanout_settings_name_the_setting(override, named):
    with pytest.raises(config.ConfigError, match=named.replace(".", r"\.")):
        load(override)


# --- the report -----------------------------------------------------------------------------------


def fake_results(tmp_path: Path) -> Results:
    results = Results(
        status="complete",
        settings={"servers": ["uvicorn"], "profiles": [{"name": "default", "env": {}}], "repeats": 3,
                  "generator_threshold": 0.8, "fanout": {"p99_ms": 100.0, "factor": 1.5, "start": 20,
                  "settle": 2, "duration": 4, "replicas": 2}},
    )  # fmt: skip
    case = "4 rooms x 50 members"
    runs = (("variant", "uvicorn", (1500, 2250, 1000)), ("ceiling", "asgi-hello", (1800,)))
    for kind, target, bests in runs:
        measurement = results.measurement(target, "" if kind == "ceiling" else "default", "fanout", case,
                                          "fanout", fanout.ROW, kind)  # fmt: skip
        for best in bests:
            steps = [
                step(20, 1000, 5, cores=(1.9, 0.4)),
                step(30, 1500, 8),
                step(36, 1800, 8),
                step(45, 2250, 9),
            ]
            steps = [s for s in steps if s.deliveries_per_s <= best] + [step(99, best * 1.5, 500)]
            row, found = fanout.parse_result(result(steps))
            measurement.add(Run(tool="fanout", rows={fanout.ROW: row}, steps=found))
    return results


def test_report_section_shows_median_ceiling_and_steps(tmp_path):
    results = fake_results(tmp_path)
    figures = analyse(results)
    index = report.Index(figures, results)
    section = fanout_section(index, results, {"fanout": "charts/fanout.png"})
    assert section is not None
    variant, ceiling = section.tables[0].rows
    assert variant[0] == "uvicorn" and variant[1] == f"1,500 (1,000 to 2,250) {report.LIMITED_MARK}"
    assert ceiling[0].endswith("(ceiling)") and ceiling[1] == "1,800"  # 1,500 is 83 % of it
    median_steps = section.tables[1]
    assert median_steps.title == "uvicorn: steps of run 1"  # the run whose figure is the median
    assert [r[-1] for r in median_steps.rows][:2] == ["yes", "yes"]
    assert median_steps.rows[-1][-1].startswith("no: p99 500 ms")
    machine, generator = (STEP_COLUMNS.index(c) for c in ("machine CPU, cores busy", "generator CPU, cores"))
    cpu_cells = [(r[machine], r[generator]) for r in median_steps.rows]
    assert cpu_cells[:2] == [("1.90", "0.40"), ("-", "-")]  # a step without a reading says so
    assert section.charts == [("charts/fanout.png", "fan-out: offered deliveries/s against delivery p99")]


def test_report_renders_the_section_and_its_chart(tmp_path):
    fake_results(tmp_path).save(tmp_path)
    report.render(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Chat fan-out throughput" in text and "deliveries/s at p99 <= 100 ms" in text
    assert "| fan-out deliveries/s (p99 bound) |" in text  # in the headline too
    assert (tmp_path / "charts" / "fanout.png").stat().st_size > 1000


# --- the generator against a broadcaster on 127.0.0.1 ---------------------------------------------


BURN_ONE_CORE_FOR_60_S = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"


@pytest.mark.parametrize("processes", [1, 2])
async def test_generator_counts_every_delivery_exactly(processes):
    broadcaster = Broadcaster(processes)
    async with serve(broadcaster.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        # Enough deliveries per step for a percentile (MIN_DELIVERIES), even in half a room.
        plan = Plan(f"http://127.0.0.1:{port}", rooms=2, members=10, rates=(20.0, 40.0), settle=0.3,
                    seconds=1.2, threshold_ms=1000, grace=0.3)  # fmt: skip
        run = FanoutRun(plan)
        # A process that keeps one core busy throughout: each step's machine reading must see it,
        # however light the steps themselves are (/proc/stat counts in 10 ms ticks). It stops by
        # itself after 60 s should the test die before killing it.
        burner = await asyncio.create_subprocess_exec(sys.executable, "-c", BURN_ONE_CORE_FOR_60_S)
        try:
            found = await asyncio.wait_for(run.run(), 30)
        finally:
            burner.kill()
            await burner.wait()
    assert found["sockets"] == 20 and found["processes_seen"] == processes
    steps = found["steps"]
    assert len(steps) == 2
    audience = 10 // processes  # the room's members in the sender's process
    for measured in steps:
        assert measured["messages"] > 0
        assert measured["expected"] == measured["messages"] * audience
        assert measured["deliveries"] == measured["expected"] and measured["missing"] == 0
        assert measured["errors"] == {} and measured["closes"] == {}
    assert run.sent == broadcaster.received  # every message sent reached the server once
    assert sum(s["messages"] for s in steps) <= run.sent
    assert found["machine_cores"] >= 1
    for measured in steps:  # the burner's core at least, the machine's cores at most; the generator's within
        assert 0.5 <= measured["machine_cores"] <= found["machine_cores"] + 0.05  # a tick either side
        assert 0 <= measured["generator_cores"] <= measured["machine_cores"] + 0.05


def test_cores_used_is_cpu_seconds_over_wall_seconds():
    before = cpu.CpuReading(at=10.0, busy=100.0, own=5.0)
    after = cpu.CpuReading(at=14.0, busy=106.0, own=6.0)
    assert cpu.cores_used(before, after) == (1.5, 0.25)
    assert cpu.cores_used(after, after) == (0.0, 0.0)  # no time between them: nothing to divide


def test_a_reading_counts_the_cpu_this_process_burns():
    before = cpu.read()
    started = time.process_time()
    while time.process_time() - started < 0.2:  # 0.2 s of this process's CPU, however busy the machine
        pass
    after = cpu.read()
    # Both readings are whole clock ticks (10 ms), so at least 0.19 s apart; their difference as a
    # float can fall a hair below it (2.25 - 2.06 = 0.18999999999999995).
    assert round(after.own - before.own, 2) >= 0.19
    assert after.busy - before.busy >= after.own - before.own - 0.05  # the machine's count includes it


async def test_generator_reports_a_closed_member():
    async def closer(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "chat.history", "messages": []}))
        async for _ in ws:
            await ws.send(json.dumps({"type": "error", "code": "too_slow", "detail": "behind"}))
            await ws.close(4000, "too_slow")

    async with serve(closer, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        plan = Plan(f"http://127.0.0.1:{port}", rooms=1, members=2, rates=(10.0, 20.0), settle=0.0,
                    seconds=0.5, threshold_ms=1000, grace=0.2)  # fmt: skip
        found = await asyncio.wait_for(FanoutRun(plan).run(), 30)
    first = found["steps"][0]
    assert len(found["steps"]) == 1 and not first["passed"]  # it stopped at the first failure
    assert first["errors"] == {"too_slow": 1} and first["closes"] == {"too_slow": 1}
    assert found["sustained"] is None


# --- the bench's stages ---------------------------------------------------------------------------


def stages(tmp_path, monkeypatch, scenarios):
    from loadtests.bench import machine, runner

    monkeypatch.setattr(machine, "machine", lambda: {})
    monkeypatch.setattr(machine, "host_versions", lambda: {})
    settings = config.load(["--servers", "uvicorn", "--scenarios", scenarios, "--repeats", "2"], environ={},
                           known_servers=["uvicorn"])  # fmt: skip
    return runner.Bench(settings, tmp_path, []).stages()


def test_fanout_runs_on_two_replicas_after_the_chat_and_against_the_ceiling(tmp_path, monkeypatch):
    ceiling, variant = stages(tmp_path, monkeypatch, "fanout")
    assert [s.label for s in ceiling.steps if "fan-out" in s.label] == [
        "asgi-hello fan-out throughput run 1/2", "asgi-hello fan-out throughput run 2/2",
    ]  # fmt: skip
    labels = [s.label for s in variant.steps]
    assert labels[-3:] == ["scale to 2 replicas", "fan-out throughput run 1/2", "fan-out throughput run 2/2"]
    _, with_chat = stages(tmp_path, monkeypatch, "chat fanout")
    labels = [s.label for s in with_chat.steps]
    assert labels.count("scale to 2 replicas") == 1  # the chat's replicas serve the fan-out too
    assert labels.index("scale to 2 replicas") < labels.index("fan-out throughput run 1/2")


def test_the_ceiling_steps_on_to_what_the_members_may_send():
    from loadtests.bench.scenarios import Fanout, Target

    settings = config.load([], environ={}, known_servers=["uvicorn"])
    scenario = Fanout(settings, 0)
    assert scenario.settings(Target("uvicorn")).max_rate == 400
    assert scenario.settings(Target("asgi-hello", "ceiling")).max_rate == 4 * 50 * 10
    # the same case, so that the ceiling is found for the variants' figures
    [variant_job] = scenario.jobs(Target("uvicorn"), 1)
    [ceiling_job] = scenario.jobs(Target("asgi-hello", "ceiling"), 1)
    assert variant_job.case == ceiling_job.case == "4 rooms x 50 members"


def test_the_chart_axes_are_labelled_in_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([2_000, 25_000], [8, 300])
    plain_log_axes(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in (*ax.get_xticklabels(minor=True), *ax.get_xticklabels()) if t.get_text()]
    plt.close(fig)
    assert {"2,000", "5,000", "10,000", "20,000"} <= set(labels)
    assert all(label.replace(",", "").isdigit() and label[0] in "125" for label in labels), labels
