"""`make loadtest`'s arguments: what it would run, and every bad value refused by name."""

import pytest

from loadtests.bench import loadtest
from loadtests.bench.config import ConfigError


def build(tmp_path, *argv):
    args = loadtest.parser().parse_args(["--server", "uvicorn", "--processes", "0", *argv])
    return loadtest.build(args, tmp_path)


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("LOADTEST_ARGS", raising=False)
    stack, run = build(tmp_path)
    assert (stack.server, stack.project, stack.port, stack.replicas) == (
        "uvicorn",
        "realtime-django",
        8000,
        1,
    )
    assert stack.limits["WS_CONN_PER_IP"] == "65535"  # Nginx's per-address limits raised
    assert (run.scenario, run.users, run.seconds, run.host) == ("http", 50, 60, "http://127.0.0.1:8000")
    command = run.command("python")
    assert "--only-summary" not in command  # a person watches this one
    assert command[command.index("--csv") + 1] == str(tmp_path / "locust")


def test_capacity_measures_the_projects_app_containers(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADTEST_ARGS", "--capacity-settle 2")
    _, run = build(
        tmp_path, "--scenario", "capacity", "--project", "mine", "--users", "300", "--", "-L", "INFO"
    )
    command = run.command("python")
    assert command[command.index("--capacity-memory-containers") + 1] == r"^mine[-_](app|ws)[-_][0-9]+$"
    assert command[command.index("--capacity-report") + 1] == str(tmp_path / "capacity-memory.json")
    assert command[-4:] == ["--capacity-settle", "2", "-L", "INFO"]  # LOADTEST_ARGS, then what follows --
    assert run.users == 300


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--server", "tornado"], "unknown SERVER 'tornado'; valid: daphne"),
        (["--scenario", "ftp"], "unknown SCENARIO 'ftp'"),
        (["--users", "0"], "USERS must be >= 1"),
        (["--users", "many"], "USERS must be a whole number"),
        (["--duration", "forever"], "DURATION must be a duration"),
        (["--replicas", "0"], "REPLICAS must be >= 1"),
        (["--port", "http"], "HTTP_PORT must be a whole number"),
        (["--processes", "-3"], "LOADTEST_PROCESSES must be -1, 0 or a number"),
        (["--spawn-rate", "0"], "spawn rate must be > 0"),
    ],
)
def test_bad_arguments(tmp_path, argv, message):
    args = loadtest.parser().parse_args(["--server", "uvicorn", *argv])
    with pytest.raises(ConfigError, match=message):
        loadtest.build(args, tmp_path)


def test_bad_argument_exits_2_before_the_stack_is_touched(tmp_path, capsys):
    assert loadtest.main(["--server", "uvicorn", "--scenario", "ftp", "--output", str(tmp_path)]) == 2
    assert "unknown SCENARIO" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_soak_runs_on_two_replicas_for_soak_minutes(tmp_path, monkeypatch):
    from loadtests.soak import cli

    stack, run = build(tmp_path, "--scenario", "soak")
    assert stack.replicas == 2  # rooms span replicas even with the default REPLICAS=1
    assert run.users == 100
    assert cli.plan_for(run.users, {}).churn == 30 * 60
    assert cli.plan_for(40, {"SOAK_MINUTES": "1.5"}).churn == 90
    stack, _ = build(tmp_path, "--scenario", "soak", "--replicas", "3")
    assert stack.replicas == 3


@pytest.mark.parametrize("minutes", ["soon", "0", "-1"])
def test_a_bad_soak_minutes_exits_2_before_the_stack_is_touched(tmp_path, monkeypatch, capsys, minutes):
    monkeypatch.setenv("SOAK_MINUTES", minutes)
    assert loadtest.main(["--server", "uvicorn", "--scenario", "soak", "--output", str(tmp_path)]) == 2
    assert "SOAK_MINUTES must be" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_fanout_runs_the_lean_generator_with_the_given_options(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADTEST_ARGS", "--rooms 8")
    stack, run = build(tmp_path, "--scenario", "fanout", "--replicas", "2", "--", "--max-rate", "800")
    assert stack.replicas == 2
    assert (run.settings.rooms, run.settings.members, run.settings.max_rate) == (8, 50, 800)
    command = run.command("python")
    assert command[:3] == ["python", "-m", "loadtests.fanout"]
    assert command[command.index("--host") + 1] == "http://127.0.0.1:8000"
    assert command[command.index("--output") + 1] == str(tmp_path / "fanout.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--users", "10"), "takes no USERS or DURATION"),
        (("--duration", "2m"), "takes no USERS or DURATION"),
        (("--", "--factor", "1"), "rates need"),
        (("--", "--max-rate", "5000"), "needs more than the 200 members"),
        (("--", "--rooms", "many"), "bad generator options"),
    ],
)
def test_fanout_refuses_bad_options(tmp_path, monkeypatch, argv, message):
    monkeypatch.delenv("LOADTEST_ARGS", raising=False)
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, "--scenario", "fanout", *argv)


def test_sockets_runs_the_capacity_tool_with_the_stages_nginx(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADTEST_ARGS", "--rate 100")
    for name in ("NGINX_WORKER_PROCESSES", "NGINX_WORKER_CONNECTIONS", "NGINX_MEMORY_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NGINX_MEMORY_LIMIT", "2g")  # the caller's own setting wins
    stack, run = build(tmp_path, "--scenario", "sockets", "--", "--steps", "1000,3000")
    assert stack.replicas == 2  # every broadcast crosses the channel layer, as in the bench
    assert dict(stack.env) == {
        "NGINX_WORKER_PROCESSES": "4", "NGINX_WORKER_CONNECTIONS": "19000", "NGINX_MEMORY_LIMIT": "2g",
    }  # fmt: skip
    assert (run.settings.steps, run.settings.rate, run.project) == ((1000, 3000), 100, "realtime-django")
    command = run.command("python")
    assert command[:3] == ["python", "-m", "loadtests.sockets"]
    assert command[command.index("--host") + 1] == "http://127.0.0.1:8000"
    assert command[command.index("--project") + 1] == "realtime-django"
    assert command[command.index("--output") + 1] == str(tmp_path / "sockets.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--users", "10"), "takes no USERS or DURATION"),
        (("--", "--steps", "5000,2000"), "--steps must rise"),
        (("--", "--rate", "fast"), "bad options"),
    ],
)
def test_sockets_refuses_bad_options(tmp_path, monkeypatch, argv, message):
    monkeypatch.delenv("LOADTEST_ARGS", raising=False)
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, "--scenario", "sockets", *argv)
