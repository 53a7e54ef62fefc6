"""deploy/servers/gunicorn.sh: its variables reach Gunicorn's command line, keep-alive holds, SIGTERM ends it.

The start file runs as the container runs it (compose passes every variable, empty when unset),
with this repository's virtualenv and SQLite. What it resolved is read back from the server's own
process, as the bench's report does (loadtests/bench/server_process.py).
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtests.bench.server_process import process_settings
from stackctl import free_port
from tests.deploy.helpers import DEPLOY, REPO, VENV_BIN, log_tail, running, wait_for_http

START_FILE = DEPLOY / "servers" / "gunicorn.sh"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 25.0  # the stop grace period (30 s) less a margin
VARIABLES = ["GUNICORN_WORKER_CLASS", "GUNICORN_THREADS", "KEEPALIVE_TIMEOUT", "WORKER_TIMEOUT"]


@dataclass
class Case:
    name: str
    env: dict[str, str]
    arguments: list[list[str]]  # consecutive arguments on Gunicorn's command line
    absent: list[str] = field(default_factory=list)  # options that must not be there
    resolved: dict[str, str] = field(default_factory=dict)  # the start file's variables, as it ran
    keeps_alive: bool = True


CASES = [
    Case(
        "default",
        {},
        [["--worker-class", "gthread"], ["--threads", "8"], ["--keep-alive", "75"], ["--timeout", "30"]],
        resolved={
            "GUNICORN_WORKER_CLASS": "gthread",
            "GUNICORN_THREADS": "8",
            "KEEPALIVE_TIMEOUT": "75",
            "WORKER_TIMEOUT": "30",
        },
    ),
    Case(
        "gthread, 2 threads", {"GUNICORN_THREADS": "2"}, [["--worker-class", "gthread"], ["--threads", "2"]]
    ),
    # Gunicorn would turn sync into gthread if it got --threads above 1.
    Case(
        "sync",
        {"GUNICORN_WORKER_CLASS": "sync"},
        [["--worker-class", "sync"]],
        absent=["--threads"],
        keeps_alive=False,
    ),
    Case("keep-alive off", {"KEEPALIVE_TIMEOUT": "0"}, [["--keep-alive", "0"]], keeps_alive=False),
    Case("worker timeout", {"WORKER_TIMEOUT": "45"}, [["--timeout", "45"]]),
]


def contains(argv: list[str], arguments: list[str]) -> bool:
    return any(argv[i : i + len(arguments)] == arguments for i in range(len(argv)))


def start_environment(port: int, database: Path, overrides: dict[str, str]) -> dict[str, str]:
    # As compose passes them: every variable present, empty meaning "use the default".
    passed = {name: "" for name in (*VARIABLES, "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "SERVER_ACCESS_LOG")}
    return {
        **passed,
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "app"),
        "SERVER": "gunicorn",
        "DJANGO_SECRET_KEY": "test-only-secret-key-for-the-gunicorn-start-file-tests-0123456789",
        "DJANGO_HTTPS": "0",
        "SQLITE_PATH": str(database),
        "HOME": "/proc/no-home",  # as in the image: the app's user has no home it can write to
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        **overrides,
    }


def two_requests(port: int) -> tuple[list[int], list[str | None], bool]:
    """Two GETs on one HTTP/1.1 connection: statuses, Connection headers, and whether the second
    one went down the same socket (the server kept the connection open)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        statuses, connection = [], []
        sockets = []
        for _ in range(2):
            conn.request("GET", "/api/ping-sync", headers={"Host": "localhost"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            connection.append(response.getheader("Connection"))
            sockets.append(conn.sock)
        return statuses, connection, sockets[0] is not None and sockets[0] is sockets[1]
    finally:
        conn.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_start_file_settings_reach_gunicorn(case: Case, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = start_environment(port, tmp_path / "db.sqlite3", case.env)
    with running([str(START_FILE)], env, REPO / "app", log) as proc:
        status = wait_for_http(port, "/healthz", proc, time.monotonic() + START_TIMEOUT)
        assert status == 200, f"/healthz answered {status}\n{log_tail(log)}"

        ran = process_settings(Path("/proc"), proc.pid, VARIABLES)  # the start file exec'd Gunicorn
        assert Path(ran["argv"][1]).name == "gunicorn", ran["argv"]
        for arguments in case.arguments:
            assert contains(ran["argv"], arguments), (arguments, ran["argv"])
        for option in case.absent:
            assert option not in ran["argv"], ran["argv"]
        for name, value in case.resolved.items():
            assert ran["env"][name] == value, ran["env"]

        statuses, connection, same_socket = two_requests(port)
        assert statuses == [200, 200]
        if case.keeps_alive:
            assert "close" not in connection and same_socket, (connection, same_socket)
        else:
            assert connection[0] == "close", connection

        # An idle kept-alive connection must not hold the stop up for its keep-alive time (75 s).
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        idle.request("GET", "/healthz", headers={"Host": "localhost"})
        idle.getresponse().read()
        proc.send_signal(signal.SIGTERM)
        try:
            returncode = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = None
        idle.close()
        assert returncode == 0, f"exit status {returncode} after SIGTERM\n{log_tail(log)}"
    assert "ERROR" not in log.read_text(), log_tail(log)  # e.g. a control socket it cannot create
