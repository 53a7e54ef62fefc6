"""Each scenario, headless for a few seconds against the real app (uvicorn, SQLite, in-memory layer).

Asserts from Locust's CSV that requests were made under the documented names and that none
failed. Never a speed: this machine's numbers mean nothing.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import AppServer

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (REPO_ROOT / "app" / "manage.py").exists(), reason="app/manage.py is absent: no app to load-test yet"
)

HTTP_ROWS = ["/api/ping", "/api/ping-sync", "/api/db", "/static/chat/chat.css"]
CHAT_ROWS = ["connect /ws/chat/[room]/", "chat join", "chat ack round trip", "chat fan-out delivery"]


@pytest.fixture(scope="module")
def app():
    # DEBUG serves /static/ from the app (Nginx does in the stack).
    with AppServer("uvicorn", env={"DJANGO_DEBUG": "1", "LOG_LEVEL": "WARNING"}) as server:
        yield server


def run_locust(tmp_path, app, locustfile, *args, users=3, run_time="4s", env=None):
    """Run Locust headless; return {name: (requests, failures)} from its CSV, and the output."""
    prefix = tmp_path / "run"
    command = [
        sys.executable, "-m", "locust", "-f", locustfile, "--headless",
        "-u", str(users), "-r", str(users), "-t", run_time, "--host", app.url,
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", *args,
    ]  # fmt: skip
    clean_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LT_", "LOCUST_")) and key != "SCENARIO"
    }
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,  # Locust puts the working directory on sys.path: how `loadtests` is found
        env={**clean_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = (
        f"$ {' '.join(command)}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-6000:]}"
    )
    stats_file = prefix.with_name("run_stats.csv")
    assert stats_file.exists(), f"Locust wrote no CSV (exit {result.returncode})\n{output}"
    with stats_file.open(newline="") as handle:
        rows = {
            row["Name"]: (int(row["Request Count"]), int(row["Failure Count"]))
            for row in csv.DictReader(handle)
        }
    return rows, output


def assert_ran_clean(rows, output, expected_names):
    for name in expected_names:
        assert rows.get(name, (0, 0))[0] > 0, f"no {name!r} requests\n{output}"
    failing = {name: counts for name, counts in rows.items() if counts[1]}
    assert not failing, f"failures: {failing}\n{output}"


def test_http_every_endpoint(tmp_path, app):
    rows, output = run_locust(tmp_path, app, "loadtests/locustfiles/http_endpoints.py", users=2)
    assert_ran_clean(rows, output, HTTP_ROWS)


def test_http_one_endpoint_alone(tmp_path, app):
    rows, output = run_locust(
        tmp_path, app, "loadtests/locustfiles/http_endpoints.py", users=2, env={"LT_HTTP_ENDPOINTS": "db"}
    )
    assert_ran_clean(rows, output, ["/api/db"])
    assert set(rows) == {"/api/db", "Aggregated"}


def test_echo(tmp_path, app):
    rows, output = run_locust(tmp_path, app, "loadtests/locustfiles/echo.py", users=2)
    assert_ran_clean(rows, output, ["connect /ws/echo/", "echo round trip"])


def test_echo_skips_the_app_heartbeats(tmp_path):
    """Granian and Gunicorn's ASGI worker get heartbeat frames from the app: none is a reply."""
    env = {"DJANGO_DEBUG": "1", "LOG_LEVEL": "WARNING", "WS_APP_HEARTBEAT": "0.05"}
    with AppServer("uvicorn", env=env) as beating:
        rows, output = run_locust(tmp_path, beating, "loadtests/locustfiles/echo.py", users=2)
    assert_ran_clean(rows, output, ["connect /ws/echo/", "echo round trip"])


def test_echo_handshake_refusal_is_a_failure(tmp_path, app):
    # A foreign Origin is refused (403): the run must count failed handshakes, not hang or pass.
    rows, output = run_locust(
        tmp_path,
        app,
        "loadtests/locustfiles/echo.py",
        "--ws-origin",
        "http://not-this-site.invalid",
        users=1,
        run_time="3s",
    )
    requests, failures = rows.get("connect /ws/echo/", (0, 0))
    assert failures > 0 and failures == requests, output
    assert "echo round trip" not in rows, output


def test_chat_several_rooms(tmp_path, app):
    rows, output = run_locust(
        tmp_path, app, "loadtests/locustfiles/chat.py", "--chat-rooms", "2", "--chat-interval", "0.5",
        "--chat-settle", "0.5", users=5,
    )  # fmt: skip
    assert_ran_clean(rows, output, CHAT_ROWS)


def test_chat_by_scenario_name_with_processes(tmp_path, app):
    # With workers, the senders wait for the master's word that every worker's users started.
    rows, output = run_locust(
        tmp_path, app, "loadtests/locustfile.py", "--processes", "2", "--chat-interval", "0.5",
        "--chat-settle", "0.5", users=4, run_time="5s", env={"SCENARIO": "chat"},
    )  # fmt: skip
    assert_ran_clean(rows, output, CHAT_ROWS)


def test_chat_senders_wait_for_the_settle_time(tmp_path, app):
    rows, output = run_locust(
        tmp_path, app, "loadtests/locustfiles/chat.py", "--chat-interval", "0.5", "--chat-settle", "60",
        users=3, run_time="3s",
    )  # fmt: skip
    assert_ran_clean(rows, output, ["chat join"])
    assert "chat ack round trip" not in rows, output
    assert "chat fan-out delivery" not in rows, output


def test_capacity_with_memory_report(tmp_path, app):
    report = tmp_path / "memory.json"
    rows, output = run_locust(
        tmp_path, app, "loadtests/locustfiles/capacity.py",
        "--capacity-memory-pids", str(app.process.pid), "--capacity-settle", "1",
        "--capacity-report", str(report),
        users=5, run_time="5s",
    )  # fmt: skip
    assert_ran_clean(rows, output, ["connect /ws/echo/"])
    assert rows["connect /ws/echo/"][0] == 5, output  # one socket per user, never more
    measured = json.loads(report.read_text())
    assert measured["connections"] == 5
    assert measured["users"] == 5
    assert f"pid:{app.process.pid}" in measured["targets"]
    assert "bytes_per_connection" in measured


def test_soak_sessions_leave_every_way(tmp_path, app):
    # Short sessions, so that a few seconds see many of them leave, each way.
    rows, output = run_locust(
        tmp_path, app, "loadtests/locustfiles/soak.py", "--soak-idle", "0.3", "--soak-messages", "1",
        "--soak-message-interval", "0.1", "--soak-rooms", "2", "--soak-room-lifetime", "2",
        users=6, run_time="8s",
    )  # fmt: skip
    leaves = [f"soak leave {how}" for how in ("clean", "reset", "mid-message")]
    assert_ran_clean(rows, output, ["connect /ws/chat/[room]/", "soak join", "soak ack round trip", *leaves])
    assert rows.get("/api/whoami", (0, 0))[0] > 0, output  # the HTTP users too
