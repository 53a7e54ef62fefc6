"""The bench end to end on the real stack: quick mode, two variants, one run per measurement.

Asserts the pipeline's structure (report files, every figure measured, requests succeeded, no
container left, an interrupted run cleaned up), never a speed.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from loadtests.bench import config, runner
from loadtests.bench.analysis import analyse, route_of
from loadtests.bench.results import Results
from loadtests.lib import names
from stackctl import Stack, inherited_environment
from stackctl.testing import require_docker
from tests.bench.checks import assert_report_shows

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "rtd-bench-ci"  # never the bench's own default (rtd-bench) nor a user's stack
SERVERS = ("uvicorn", "gunicorn")  # an ASGI server, and WSGI with its ASGI sidecar for /ws/
STATIC = names.HTTP_ENDPOINTS["static"]  # served by Nginx alone: measured once, in the ceiling stage
PROFILE = "ci:BENCH_PIPELINE_PROFILE=1"  # a variable the app ignores: proves profiles reach it
BENCH_TIMEOUT = 1200  # generous: about 5 minutes on an idle 2-core machine
STOP_TIMEOUT = 300  # for the bench to take its stack down once told to stop
ARTIFACTS = ROOT / "artifacts" / "bench-pipeline"  # a failed run's results, for a look afterwards
# Name the projects, to find and clean them: the variants' own stages, and the comparison's stacks.
BENCH_STACKS = [
    Stack(SERVERS[0], PROJECT, http_port=0),
    *(Stack(server, runner.stack_project(PROJECT, server), http_port=0) for server in SERVERS),
]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BENCH_TIMEOUT + STOP_TIMEOUT + 120)]


@pytest.fixture(scope="module", autouse=True)
def _require_docker() -> None:
    require_docker("bench pipeline tests")


def bench_env(out: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in inherited_environment().items() if not k.startswith("BENCH_")}
    env.update({"BENCH_QUICK": "1", "BENCH_PROJECT": PROJECT, "BENCH_OUTPUT": str(out), **settings})
    return env


def project_resources() -> list[str]:
    """The containers, networks and volumes of the bench's compose projects."""
    return [item for stack in BENCH_STACKS for items in stack.resources().values() for item in items]


def clean() -> None:
    for stack in BENCH_STACKS:
        stack.make("clean", timeout=300)


def start_bench(env: dict[str, str], *, merged: bool = False) -> subprocess.Popen[str]:
    """``python -m loadtests.bench`` in a process group of its own, as in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadtests.bench"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = bench_env(out, BENCH_SERVERS=" ".join(SERVERS), BENCH_REPEATS="1", BENCH_PROFILES=PROFILE)
    process = start_bench(env)
    try:
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the bench stops its run and takes its stack down
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT)
        pytest.fail(f"the bench took over {BENCH_TIMEOUT} s:\n{stdout[-4000:]}\n{stderr[-4000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        clean()  # the bench cleans up itself; this is for a bench that could not
    runs = list(out.iterdir())
    output = f"--- stdout ---\n{stdout[-6000:]}\n--- stderr ---\n{stderr[-6000:]}"
    assert len(runs) == 1, (runs, output)
    if process.returncode != 0:  # keep the evidence where CI keeps its artifacts
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        shutil.copytree(runs[0], ARTIFACTS, ignore=shutil.ignore_patterns("locust.html"))
        output += f"\n(results copied to {ARTIFACTS})"
    return process.returncode, stdout, runs[0], output


def test_completes_with_every_file(bench):
    returncode, stdout, out, output = bench
    assert returncode == 0, output
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["errors"] == [], results["errors"]
    for name in ("report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    assert {p.stem for p in (out / "charts").glob("*.png")} == {
        "http-locust",
        "http-wrk",
        "echo",
        "chat",
        "capacity",
    }
    for stack in results["stacks"]:
        assert (out / stack["compose_config"]).is_file()
    assert "about" in stdout and "left" in stdout  # progress with the time left


def test_every_measurement_was_made_and_succeeded(bench):
    _, _, out, output = bench
    results = json.loads((out / "results.json").read_text())
    settings = config.QUICK
    expected = {
        ("nginx-fixed", "http", "/api/ping", "locust"), ("nginx-fixed", "http", "/api/ping", "wrk"),
        ("asgi-hello", "http", "/api/ping", "locust"), ("asgi-hello", "http", "/api/ping", "wrk"),
        ("asgi-hello", "echo", names.ECHO_PATH, "locust"),
        ("nginx-static", "http", STATIC, "locust"), ("nginx-static", "http", STATIC, "wrk"),
    }  # fmt: skip
    for server in SERVERS:
        expected |= {
            (server, "http", names.HTTP_ENDPOINTS[endpoint], tool)
            for endpoint in names.APP_ENDPOINTS
            for tool in ("locust", "wrk")
        }
        expected |= {(server, "echo", names.ECHO_PATH, "locust")}
        expected |= {(server, "capacity", f"{settings.capacity.sockets} sockets", "locust")}
        expected |= {
            (
                server,
                "chat",
                f"{settings.chat.users} users, {rooms} room" + ("s" if rooms > 1 else ""),
                "locust",
            )
            for rooms in settings.chat.rooms
        }
    figures = analyse(Results.from_json(results))
    assert {(f.target, f.scenario, f.case, f.tool) for f in figures} == expected
    for f in figures:
        where = (f.target, f.scenario, f.case, f.tool)
        assert f.runs == 1 and f.failed_runs == 0, where
        assert f.requests > 0 and f.rps.median > 0, where
        assert f.failures == 0 and f.other_failures == 0, (where, f.failure_samples, output)
        if f.scenario == "capacity":
            assert f.extra["sockets"].median == settings.capacity.sockets, where
            assert "bytes_per_socket" in f.extra and f.extra["handshake_rate"].median > 0, where
        if f.scenario == "chat":
            assert "ack_p99" in f.extra, where
            assert "server_fanout_p99" in f.extra, where  # the app's own fan-out time
        # The app's /metrics over every run through it: its CPU, and Django's time per endpoint.
        if (f.kind == "variant" or f.target == "asgi-hello") and f.scenario != "capacity":
            assert f.extra["cpu_ms_per_request"].median > 0, where
            # The containers' own account holds the server's processes and more (the exporter).
            assert f.extra["container_cpu_ms_per_request"].median >= f.extra["cpu_ms_per_request"].low, where
        if f.kind == "variant" and f.scenario == "http":
            assert "server_p99" in f.extra, where
    for m in Results.from_json(results).measurements:
        for run in m.runs:
            counted = {
                r: c["requests"] for r, c in (run.server or {}).get("routes", {}).items() if r != "healthz"
            }
            if m.scenario == "http" and m.kind == "variant":
                # Django answered every request the client completed, on that route alone; with wrk,
                # no more than those and the ones in flight when it stopped (Locust's figures leave
                # out its ramp-up: --reset-stats).
                completed = run.rows[m.row]["requests"]
                assert list(counted) == [route_of(m.case)], (m.key, counted)
                assert completed <= counted[route_of(m.case)], m.key
                if m.tool == "wrk":
                    assert counted[route_of(m.case)] <= completed + settings.wrk.connections, m.key
    assert_report_shows(out, figures)


def test_stacks_ran_as_configured(bench):
    _, _, out, _ = bench
    results = json.loads((out / "results.json").read_text())
    variants = [s for s in results["stacks"] if s["kind"] == "variant"]
    # HTTP: every variant's stack up at once, each its own project; then each variant's own stage.
    comparison = [s for s in variants if s["stage"] == runner.COMPARISON]
    own = [s for s in variants if s["stage"] != runner.COMPARISON]
    assert [s["target"] for s in comparison] == [s["target"] for s in own] == list(SERVERS)
    assert len({s["project"] for s in comparison} | {PROJECT}) == len(SERVERS) + 1
    for stack in variants:
        assert stack["profile"] == "ci" and stack["profile_env"] == {"BENCH_PIPELINE_PROFILE": "1"}
    for stack in own:
        assert len(stack["chat_replicas"]["containers"]) == config.QUICK.chat.replicas  # rooms span replicas
    gunicorn = next(s for s in own if s["target"] == "gunicorn")
    assert gunicorn["chat_replicas"]["service"] == "ws"  # WebSockets went to the ASGI sidecar
    versions = results["stack_versions"]
    for name in (
        "python",
        "django",
        "uvicorn",
        "gunicorn",
        "daphne",
        "hypercorn",
        "granian",
        "nginx",
        "redis",
    ):
        assert versions.get(name), name
    assert versions.get("postgresql")
    assert results["settings"]["nginx_limits"]["WS_CONN_PER_IP"] == "65535"


def test_no_container_left(bench):
    assert project_resources() == []


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def test_interrupt_takes_the_stack_down(tmp_path):
    """Ctrl-C in the middle of a measurement: the bench stops, removes its stack, keeps what it measured."""
    env = bench_env(
        tmp_path, BENCH_SERVERS="uvicorn", BENCH_CEILING="0", BENCH_SCENARIOS="http", BENCH_DURATION="30"
    )
    process = start_bench(env, merged=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 600
        while not any("(locust) run 1/" in line for line in seen):
            assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=5))
            except queue.Empty:
                continue
        time.sleep(5)  # well inside the 30 s run
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        assert process.wait(timeout=300) == 128 + signal.SIGINT
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        leftovers = project_resources()
        clean()
    assert leftovers == [], leftovers
    out = next(tmp_path.iterdir())
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert (out / "report.md").exists() or not any(m["runs"] for m in results["measurements"])
