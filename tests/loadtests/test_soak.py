"""The soak's mechanics without a stack: probe parsing, sampling, verdicts, phases, settings, Ctrl-C."""

import json
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from loadtests.bench import procs
from loadtests.lib import settings
from loadtests.soak import probes, run, verdict
from loadtests.soak.sampler import Sampler, Targets, read_samples

METRICS = """# HELP realtime_django_asyncio_tasks tasks
# TYPE realtime_django_asyncio_tasks gauge
realtime_django_asyncio_tasks 3.0
realtime_django_db_pool_connections 4.0
realtime_django_db_pool_available_connections 3.0
realtime_django_websocket_connections{route="chat"} 5.0
realtime_django_websocket_connections{route="echo"} 2.0
"""


def app_output(metrics=METRICS, error=None, rss_kib=(1000, 2000)):
    processes = [
        {"pid": 7 + i, "ppid": 1, "name": "python", "command": "python run.py", "rss_kib": rss,
         "threads": 2, "fds": 10, "backend_connections": 3}
        for i, rss in enumerate(rss_kib)
    ]  # fmt: skip
    return "some warning on stderr would not be here\n" + json.dumps(
        {"processes": processes, "close_wait": 2, "metrics": metrics, "error": error}
    )


# --- Probes ------------------------------------------------------------------------------------------


def test_app_probe_sums_the_processes_and_reads_the_gauges():
    found = probes.parse_app(app_output())
    assert found["rss_bytes"] == 3000 * 1024
    assert (found["threads"], found["fds"], found["backend_connections"]) == (4, 20, 6)
    assert found["close_wait"] == 2  # the container's, not per process
    assert found["asyncio_tasks"] == 3
    assert (found["db_pool_connections"], found["db_pool_in_use"]) == (4, 1)
    assert found["websocket_connections"] == 7  # summed over its routes
    assert [p["pid"] for p in found["processes"]] == [7, 8]


def test_a_websocket_gauge_without_any_socket_yet_reads_zero():
    metrics = "\n".join(line for line in METRICS.splitlines() if "websocket" not in line)
    assert probes.parse_app(app_output(metrics))["websocket_connections"] == 0


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("not json", "app probe answered"),
        (app_output(error="http://x:9100/metrics: refused"), "no /metrics"),
        (app_output(metrics="realtime_django_asyncio_tasks 1\n"), "lacks realtime_django_db_pool"),
    ],
)
def test_a_bad_app_answer_is_a_probe_error(output, message):
    with pytest.raises(probes.ProbeError, match=message):
        probes.parse_app(output)


def test_the_app_probe_runs_as_a_script():
    """The script itself, on this machine's /proc (the exporter is absent: its error is reported)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-"], input=probes.APP_PROBE, capture_output=True, text=True, timeout=60,
        env={**os.environ, "METRICS_PORT": "1"}, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["processes"] and all(p["pid"] != 0 for p in report["processes"])
    assert isinstance(report["close_wait"], int)
    assert report["error"]
    with pytest.raises(probes.ProbeError, match="no /metrics"):
        probes.parse_app(done.stdout)


REDIS = "# Memory\r\nused_memory:1354264\r\nused_memory_human:1.29M\r\n@@soak@@\n12\n9\n3\n17\n"


def test_redis_answer():
    assert probes.parse_redis(REDIS) == {
        "redis_used_memory_bytes": 1354264, "redis_keys": 12, "layer_keys": 9, "layer_groups": 3,
        "group_memberships": 17,
    }  # fmt: skip


@pytest.mark.parametrize(
    "output", ["", "used_memory:1\n", REDIS.replace("17\n", ""), REDIS.replace("12", "x")]
)
def test_a_bad_redis_answer_is_a_probe_error(output):
    with pytest.raises(probes.ProbeError):
        probes.parse_redis(output)


NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 1 1
   1: 0B00007F:8DD9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0200120A:1F90 0100120A:D2F0 01 00000000:00000000 00:00000000 00000000   101        0 3 1
   3: 0200120A:1F90 0100120A:D2F2 01 00000000:00000000 00:00000000 00000000   101        0 4 1
   4: 0200130A:A1B2 0300130A:1F40 01 00000000:00000000 00:00000000 00000000   101        0 5 1
   5: 0200120A:1F90 0100120A:D2F4 06 00000000:00000000 00:00000000 00000000   101        0 6 1
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_nginx_connections_split_into_clients_and_upstreams():
    # Two established on the listening port 8080 (0x1F90), one to an app (port 8000), one TIME_WAIT.
    assert probes.parse_nginx(NET_TCP) == {"nginx_connections": 2, "nginx_upstream_connections": 1}


def test_no_socket_table_is_a_probe_error():
    with pytest.raises(probes.ProbeError):
        probes.parse_nginx("cat: /proc/net/tcp: No such file or directory\n")


# --- The sampler ------------------------------------------------------------------------------------


class FakeStack:
    """Answers the sampler's commands like the containers would; ``fail`` names one that errs."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[str] = []

    def __call__(self, container, argv, stdin):
        self.calls.append(container)
        if container == self.fail:
            return 1, "", "Error: No such container"
        if container.startswith("app"):
            assert stdin == probes.APP_PROBE
            return 0, app_output(), ""
        if container == "redis":
            assert argv == probes.REDIS_COMMAND
            return 0, REDIS, ""
        return 0, NET_TCP, ""


TARGETS = Targets(apps=("app-1", "app-2"), redis="redis", nginx="nginx")


def test_a_sample_reads_every_container_and_sums_the_apps(tmp_path):
    sampler = Sampler(TARGETS, tmp_path / "samples.jsonl", execute=FakeStack())
    sampler.phase = "churn"
    sample = sampler.sample_once()
    assert sample["phase"] == "churn" and sample["errors"] == []
    assert set(sample["containers"]) == {"app-1", "app-2"}
    assert sample["totals"]["rss_bytes"] == 2 * 3000 * 1024
    assert sample["totals"]["websocket_connections"] == 14
    assert sample["totals"]["group_memberships"] == 17
    assert sample["totals"]["nginx_connections"] == 2
    assert sample["totals"]["fds_without_pools"] == 2 * (20 - 6)


def test_a_failed_probe_is_noted_and_the_sample_has_no_totals(tmp_path):
    sample = Sampler(TARGETS, tmp_path / "s.jsonl", execute=FakeStack(fail="app-2")).sample_once()
    assert sample["totals"] is None  # a sum over one app of two would read as a drop
    assert sample["errors"] == ["app app-2: exit 1: Error: No such container"]
    assert set(sample["containers"]) == {"app-1"}


def test_the_sampler_writes_each_sample_as_it_goes_and_stops_promptly(tmp_path):
    path = tmp_path / "samples.jsonl"
    sampler = Sampler(TARGETS, path, interval=0.05, execute=FakeStack())
    sampler.start()
    deadline = time.monotonic() + 10
    while len(read_samples(path)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sampler.phase = "after"
    sampler.stop()
    samples = read_samples(path)
    assert len(samples) == len(sampler.samples) >= 3
    assert samples[0]["phase"] == "baseline"
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    assert not any(t.name == "soak-sampler" for t in threading.enumerate())


def test_a_line_cut_short_is_skipped(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"t": 0}\n{"t": 5, "pha')
    assert read_samples(path) == [{"t": 0}]


# --- Verdicts ---------------------------------------------------------------------------------------


def sample(t: float, phase: str, **totals: float) -> dict:
    return {"t": t, "phase": phase, "totals": totals, "errors": []}


TIMELINE = verdict.Timeline(churn_started=20, churn_ended=200, warmup=60, window=30)


def memory_samples(early: float, late: float, spike_at: float | None = None) -> list[dict]:
    """Baseline 0-15 s; churn 20-200 s (warm-up to 80 s); memory ``early`` then ``late`` from 170 s."""
    found = [sample(t, "baseline", rss_bytes=50) for t in (0, 5, 10, 15)]
    for t in range(20, 201, 5):
        value = 10.0 if t < 80 else early if t < 170 else late  # the warm-up's figures do not count
        found.append(sample(t, "churn", rss_bytes=value * (3 if t == spike_at else 1)))
    return found


def rss(samples, timeline=TIMELINE):
    return verdict.judge_growth(samples, verdict.BY_KEY["rss_bytes"], timeline)


def test_memory_may_grow_five_percent_after_the_warm_up():
    assert rss(memory_samples(100, 105)).passed is True
    failed = rss(memory_samples(100, 106))
    assert failed.passed is False
    assert (failed.baseline, failed.end, failed.allowed) == (100, 106, pytest.approx(105))
    assert "+6.0%" in failed.detail


def test_the_warm_up_is_not_judged_and_one_outlier_moves_no_median():
    # 10 during the warm-up, 100 after it: a tenfold "growth" that the verdict must not see.
    assert rss(memory_samples(100, 100)).passed is True
    assert rss(memory_samples(100, 100, spike_at=185)).passed is True


def test_a_churn_too_short_for_two_windows_is_not_judged():
    short = verdict.Timeline(churn_started=20, churn_ended=120, warmup=60, window=30)
    found = rss(memory_samples(100, 200), short)
    assert found.passed is None and "shorter than two windows" in found.detail


def baseline_samples(before: list[float], after: list[float], key: str = "fds") -> list[dict]:
    found = [sample(i, "baseline", **{key: v}) for i, v in enumerate(before)]
    found += [sample(50 + i, "churn", **{key: 1000}) for i in range(3)]  # the churn's level: not judged
    found += [sample(90, "settle", **{key: 900})]  # settling: not judged
    found += [sample(100 + i, "after", **{key: v}) for i, v in enumerate(after)]
    return found


def test_a_resource_must_return_to_its_baseline_within_its_tolerance():
    fds = verdict.BY_KEY["fds_without_pools"]  # the larger of 4 and 2 % of the baseline
    before = [300, 300, 301]
    assert verdict.judge_baseline(baseline_samples(before, [305, 306, 305], fds.key), fds).passed is True
    failed = verdict.judge_baseline(baseline_samples(before, [307, 307, 308], fds.key), fds)
    assert (failed.passed, failed.baseline, failed.end, failed.allowed) == (False, 300, 307, 306)


def test_no_tolerance_means_back_exactly_and_a_drop_is_fine():
    memberships = verdict.BY_KEY["group_memberships"]
    assert (
        verdict.judge_baseline(baseline_samples([0, 0], [1, 1], "group_memberships"), memberships).passed
        is False
    )
    assert (
        verdict.judge_baseline(baseline_samples([3, 3], [0, 0], "group_memberships"), memberships).passed
        is True
    )


def test_without_samples_after_the_churn_nothing_is_judged():
    samples = [s for s in baseline_samples([1], [1], "fds_without_pools") if s["phase"] != "after"]
    found = verdict.judge_baseline(samples, verdict.BY_KEY["fds_without_pools"])
    assert found.passed is None and "after it settled" in found.detail


def test_incomplete_samples_are_left_out():
    samples = [*baseline_samples([5], [5]), {"t": 101, "phase": "after", "totals": None, "errors": ["x"]}]
    assert verdict.values(samples, "fds", phase="after") == [5.0]


def test_judge_covers_every_resource_and_shown_ones_are_not_judged():
    samples = memory_samples(100, 100)
    for s in samples:
        s["totals"].update(dict.fromkeys((r.key for r in verdict.RESOURCES if r.key != "rss_bytes"), 0))
    samples.append(sample(300, "after", **dict.fromkeys((r.key for r in verdict.RESOURCES), 0)))
    found = verdict.judge(samples, TIMELINE)
    assert [v.resource for v in found] == [r.key for r in verdict.RESOURCES]
    assert {v.resource for v in found if v.passed is None} == {
        r.key for r in verdict.RESOURCES if r.rule == "shown"
    }
    assert verdict.overall(found) is True
    assert verdict.returned_to_baseline(found) == []


def test_overall():
    def v(passed):
        return verdict.Verdict("x", "baseline", passed, 0, 0, 0, "")

    assert verdict.overall([v(True), v(None)]) is True
    assert verdict.overall([v(True), v(False)]) is False
    assert verdict.overall([v(None)]) is None


# --- The plan ---------------------------------------------------------------------------------------


def test_a_long_soak_skips_five_minutes_and_compares_minutes():
    plan = run.plan_from_minutes(30)
    assert (plan.churn, plan.warmup, plan.window) == (1800, 300, 60)


def test_a_short_soak_scales_its_warm_up_and_windows():
    plan = run.plan_from_minutes(1)
    assert (plan.warmup, plan.window) == (20, pytest.approx(40 / 3))
    assert plan.problems() == []
    assert verdict.Timeline(0, 60, plan.warmup, plan.window).problems() == []


def test_bad_plans_are_named():
    problems = run.SoakPlan(churn=0, users=0, baseline=2, interval=5).problems()
    assert any("the churn must be > 0" in p for p in problems)
    assert any("churning users" in p for p in problems)
    assert any("baseline (2 s) must last at least one sampling interval" in p for p in problems)


# --- Settings of the locustfile ---------------------------------------------------------------------


def test_soak_settings_defaults_and_leave_weights():
    found = settings.soak_settings(SimpleNamespace())
    assert found.leaves == {"clean": 1, "reset": 1, "mid-message": 1}
    assert settings.parse_leave_weights("reset:3,clean") == {"reset": 3, "clean": 1}


@pytest.mark.parametrize(
    "options",
    [
        {"soak_leave": "slam"},
        {"soak_leave": "clean:x"},
        {"soak_leave": "clean:0,reset:0"},
        {"soak_leave": "clean,clean"},
        {"soak_rooms": 0},
        {"soak_http_users": 0},
        {"soak_room_lifetime": 0},
        {"soak_message_interval": 0.01},
    ],
)
def test_bad_soak_settings_are_refused(options):
    with pytest.raises(ValueError, match="--soak-"):
        settings.soak_settings(SimpleNamespace(**options))


def test_rooms_come_and_go():
    lifetime = 60.0
    now = 1_000_020.0  # 20 s into a lifetime of 60 s
    assert (
        settings.soak_room(now, lifetime, 3)
        == settings.soak_room(now + 30, lifetime, 3)
        != (settings.soak_room(now, lifetime, 4))
    )
    names_now = {settings.soak_room(now, lifetime, i) for i in range(5)}
    names_later = {settings.soak_room(now + lifetime, lifetime, i) for i in range(5)}
    assert len(names_now) == 5 and names_now.isdisjoint(names_later)
    assert all(settings.ROOM_NAME.match(name) for name in names_now)


# --- A clean stop on Ctrl-C -------------------------------------------------------------------------


class FakeLocust:
    """A Locust run that is a long sleep: the soak must stop it when interrupted."""

    def __init__(self, pid_file):
        self.pid_file = pid_file

    def __call__(self, plan, seconds, prefix):
        note_pid = f"open({str(self.pid_file)!r}, 'a').write(f'{{os.getpid()}}\\n')"
        script = f"import os, time; {note_pid}; time.sleep(600)"
        return SimpleNamespace(command=lambda python: [python, "-c", script], timeout=900)


def test_ctrl_c_stops_locust_and_the_sampler_and_keeps_the_samples(tmp_path):
    pid_file = tmp_path / "locust.pid"
    plan = run.SoakPlan(churn=600, prime=1, quiet=0.1, baseline=0.5, settle=1, after=1, interval=0.1)
    fired = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    fired.start()
    try:
        with pytest.raises(procs.Interrupted), procs.interruptible():
            run.run_soak(
                plan, TARGETS, FakeLocust(pid_file), tmp_path, sys.executable,
                sampler_factory=lambda **kw: Sampler(**kw, execute=FakeStack()),
            )  # fmt: skip
    finally:
        fired.cancel()
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["status"] == "interrupted" and "verdicts" not in result
    assert result["samples"] == len(read_samples(tmp_path / "samples.jsonl")) > 0
    assert not any(t.name == "soak-sampler" for t in threading.enumerate())
    for pid in map(int, pid_file.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every Locust the soak started is gone


def test_a_complete_soak_writes_verdicts_and_charts(tmp_path):
    plan = run.SoakPlan(churn=0.6, prime=0.2, quiet=0.1, baseline=0.3, settle=0.2, after=0.3, interval=0.1)
    instant = SimpleNamespace(
        command=lambda python: [python, "-c", "import time; time.sleep(0.6)"], timeout=60
    )
    result = run.run_soak(
        plan, TARGETS, lambda plan, seconds, prefix: instant, tmp_path, sys.executable,
        sampler_factory=lambda **kw: Sampler(**kw, execute=FakeStack()),
    )  # fmt: skip
    assert result["status"] == "complete"
    phases = [s["phase"] for s in read_samples(tmp_path / "samples.jsonl")]
    assert phases == sorted(phases, key=verdict.PHASES.index)  # in the order of the plan
    assert {"baseline", "churn", "after"} <= set(phases)
    judged = {v["resource"]: v["passed"] for v in result["verdicts"]}
    assert (
        judged["fds_without_pools"] is True and judged["group_memberships"] is True
    )  # the fake never changes
    assert (tmp_path / "charts" / "soak-rss_bytes.png").stat().st_size > 0
    assert len(result["charts"]) == len(verdict.RESOURCES)


def test_samples_without_a_resource_chart_the_others(tmp_path):
    from loadtests.soak import charts

    # Samples of an older probe: no CLOSE_WAIT count. That resource gets no chart, and no verdict.
    found = [sample(t, phase, threads=5) for t, phase in ((0, "baseline"), (50, "churn"), (210, "after"))]
    written = charts.draw(found, TIMELINE, tmp_path)
    assert [path.name for path in written] == ["soak-threads.png"]
    [close_wait] = [v for v in verdict.judge(found, TIMELINE) if v.resource == "close_wait"]
    assert close_wait.passed is None


def test_sockets_in_close_wait_are_judged_against_none_not_against_the_baseline():
    def after_churn(before: float, after: float) -> verdict.Verdict:
        found = [sample(10, "baseline", close_wait=before), sample(50, "churn", close_wait=40)]
        found += [sample(210, "after", close_wait=after)]
        [close_wait] = [v for v in verdict.judge(found, TIMELINE) if v.resource == "close_wait"]
        return close_wait

    # A server that holds closed connections for a while held some at the baseline too.
    assert after_churn(before=20, after=20).passed is False
    assert after_churn(before=20, after=0).passed is True
    assert after_churn(before=0, after=1).passed is False
    assert verdict.returned_to_baseline([after_churn(before=20, after=20)])


def test_threads_may_stay_at_the_peak_the_pools_reached_early_but_not_climb_after():
    threads = verdict.BY_KEY["threads"]

    def run_with(late: float, after: float | None = None) -> verdict.Verdict:
        found = [sample(0, "prime", threads=60), sample(10, "baseline", threads=50)]
        found += [sample(t, "churn", threads=64 if t <= 80 else late) for t in range(20, 201, 20)]
        found += [sample(220, "after", threads=late if after is None else after)]
        return verdict.judge_bounded(found, threads, TIMELINE)

    kept = run_with(66)  # above the baseline (50), at the warm-up's peak (64) + 2: pools full
    assert (kept.passed, kept.baseline, kept.end, kept.allowed) == (True, 64, 66, 66)
    assert run_with(67).passed is False  # still climbing under the steady churn once the pools were full
    # Every client leaving at once at the churn's end opens more, and the pools keep them: not a leak.
    burst = run_with(64, after=80)
    assert burst.passed is True and "80 after it" in burst.detail


# Run in a process of its own: importing the locustfile imports Locust, which monkey-patches gevent.
STOPPED_INSIDE_A_CLEAN_LEAVE = """
import socket, gevent, websocket
from loadtests.locustfiles.soak import LEAVES
ours, servers = socket.socketpair()
ws = websocket.WebSocket()
ws.sock, ws.connected = ours, True
went_on = []

def session():
    LEAVES["clean"](ws)  # waits for the server's close frame, which never comes
    went_on.append(True)

greenlet = gevent.spawn(session)
gevent.sleep(0.2)
greenlet.kill(block=True, timeout=5)  # how Locust stops a user at the end of a run
print("went on" if went_on else "stopped")
"""


def test_a_user_stopped_inside_a_clean_leave_stops():
    import subprocess
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", STOPPED_INSIDE_A_CLEAN_LEAVE], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2], check=False,
    )  # fmt: skip
    assert done.stdout.strip() == "stopped", done.stdout + done.stderr[-2000:]
