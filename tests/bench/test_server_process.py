"""The server settings the report prints are read from the server's own process (a fake /proc here)."""

import json
from pathlib import Path

import pytest

from loadtests.bench import machine, procs, server_process
from loadtests.bench.config import ROOT


def add_process(
    proc: Path, pid: int, parent: int, argv: list[str], env: dict[str, str], comm: str = "x"
) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")
    (folder / "stat").write_text(f"{pid} ({comm}) S {parent} {pid} {pid} 0 -1 4194560 0\n")
    (folder / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))


GUNICORN = ["/opt/venv/bin/python", "/opt/venv/bin/gunicorn", "config.wsgi:application", "--threads", "8"]
SERVER_ENV = {
    "GUNICORN_WORKER_CLASS": "gthread",
    "GUNICORN_THREADS": "8",
    "UVICORN_LOOP": "",  # compose's "unset": another variant's variable
    "DATABASE_URL": "postgres://app@postgres:5432/app",  # not a start-file variable
    "KEEPALIVE_TIMEOUT": "75",
}
NAMES = ["GUNICORN_THREADS", "GUNICORN_WORKER_CLASS", "KEEPALIVE_TIMEOUT", "UVICORN_LOOP"]


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A container under `init: true`: docker-init, the server and its workers, a `docker exec`."""
    root = tmp_path / "proc"
    add_process(root, 1, 0, ["/sbin/docker-init", "--", "/opt/stack/deploy/entrypoint.sh"], {})
    add_process(root, 7, 1, GUNICORN, SERVER_ENV, comm="gunicorn: (master) x")
    add_process(root, 9, 7, ["gunicorn: worker"], SERVER_ENV)
    add_process(root, 40, 0, ["python", "-c", "..."], {})  # docker exec: no parent in the container
    (root / "self").mkdir()  # not a process folder
    return root


def test_the_server_is_the_init_process_child_with_its_resolved_settings(proc: Path) -> None:
    found = server_process.read_server_process(proc, NAMES, own_pid=40)
    assert found == {
        "argv": GUNICORN,
        "env": {"GUNICORN_THREADS": "8", "GUNICORN_WORKER_CLASS": "gthread", "KEEPALIVE_TIMEOUT": "75"},
    }


def test_the_reader_never_takes_itself_for_the_server(proc: Path) -> None:
    add_process(proc, 3, 1, ["python", "-c", "..."], {})  # as if the reader hung off PID 1
    assert server_process.server_pid(proc, own_pid=3) == 7


def test_without_an_init_process_the_server_is_pid_1(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    add_process(root, 1, 0, GUNICORN, SERVER_ENV)
    assert server_process.read_server_process(root, NAMES, own_pid=40)["argv"] == GUNICORN


def test_an_init_process_without_a_child_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    add_process(root, 1, 0, ["/sbin/docker-init", "--", "true"], {})
    with pytest.raises(LookupError):
        server_process.server_pid(root, own_pid=40)


def test_start_file_variables_are_every_upper_case_one_the_start_files_read() -> None:
    names = server_process.start_file_variables(ROOT / "deploy" / "servers")
    for name in (
        "GUNICORN_WORKER_CLASS",
        "GUNICORN_THREADS",
        "KEEPALIVE_TIMEOUT",
        "UVICORN_WS",
        "WEB_CONCURRENCY",
    ):
        assert name in names
    assert names == sorted(names) and all(name.isupper() for name in names)


def test_the_module_runs_alone() -> None:
    """It is sent to the container as `python -c <source>`: nothing but the standard library."""
    source = Path(server_process.__file__).read_text()
    imported = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported <= {"json", "os", "re", "sys", "pathlib", "typing"}


class FakeStack:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode, self.output = returncode, output
        self.commands: list[tuple[str, ...]] = []

    def run_in(self, container: str, *command: str, timeout: float = 60) -> procs.Completed:
        self.commands.append((container, *command))
        return procs.Completed(list(command), self.returncode, self.output)


def test_the_bench_asks_the_container_with_this_module_and_every_start_file_variable() -> None:
    stack = FakeStack(0, 'a warning\n{"argv": ["gunicorn"], "env": {"GUNICORN_THREADS": "8"}}\n')
    found = machine.server_settings(stack, "rtd-bench-app-1", ["ASGI_FAST_PATH"])  # type: ignore[arg-type]
    assert found == {"container": "rtd-bench-app-1", "argv": ["gunicorn"], "env": {"GUNICORN_THREADS": "8"}}
    ((container, python, flag, source, names),) = stack.commands
    assert (container, python, flag) == ("rtd-bench-app-1", "python", "-c")
    assert source == Path(server_process.__file__).read_text()
    assert {"ASGI_FAST_PATH", "GUNICORN_WORKER_CLASS", "UVICORN_LOOP"} <= set(json.loads(names))


@pytest.mark.parametrize(("returncode", "output"), [(1, "Traceback ...\nLookupError: no child"), (0, "")])
def test_a_failed_reading_is_an_error_record(returncode: int, output: str) -> None:
    found = machine.server_settings(FakeStack(returncode, output), "c")  # type: ignore[arg-type]
    assert set(found) == {"error"}


def test_an_empty_argument_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    argv = ["gunicorn", "--forwarded-allow-ips", "", "--threads", "8"]
    add_process(root, 1, 0, argv, {})
    assert server_process.read_server_process(root, [], own_pid=40)["argv"] == argv


def test_one_servers_variables_are_its_start_files_and_common_shs() -> None:
    servers = ROOT / "deploy" / "servers"
    gunicorn = server_process.start_file_variables(servers, "gunicorn")
    assert {"GUNICORN_THREADS", "KEEPALIVE_TIMEOUT", "WEB_CONCURRENCY"} <= set(gunicorn)
    assert "UVICORN_WS" not in gunicorn


def test_only_the_running_servers_variables_are_kept() -> None:
    """Compose passes every variant's variables to every container: the sidecar (uvicorn) of a
    gunicorn profile has GUNICORN_THREADS in its environment, which means nothing to it."""
    env = {"SERVER": "uvicorn", "GUNICORN_THREADS": "8", "UVICORN_WS": "wsproto", "ASGI_FAST_PATH": "1"}
    stack = FakeStack(0, json.dumps({"argv": ["uvicorn"], "env": env}))
    found = machine.server_settings(stack, "rtd-bench-ws-1", ["ASGI_FAST_PATH"])  # type: ignore[arg-type]
    assert found["env"] == {"SERVER": "uvicorn", "UVICORN_WS": "wsproto", "ASGI_FAST_PATH": "1"}
