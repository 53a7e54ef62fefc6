"""The stack driver's pure parts: the registry, the variant selection, a stack's settings and URLs."""

import os
import socket
import subprocess
from pathlib import Path

import pytest

from stackctl import (
    ROOT,
    SERVERS_FILE,
    Stack,
    StackError,
    free_port,
    inherited_environment,
    registry,
    selected_variants,
    variants,
)


def test_registry_is_read_from_deploy_servers_in_its_order():
    listed = [line.split()[0] for line in SERVERS_FILE.read_text().splitlines() if line.split()]
    assert variants() == [name for name in listed if not name.startswith("#")]
    assert {"daphne", "uvicorn", "hypercorn", "granian", "gunicorn", "gunicorn-asgi"} <= set(variants())
    # Every variant's WebSockets are served by a variant of the registry (itself, or a sidecar).
    assert set(registry().values()) <= set(variants())
    assert registry()["uvicorn"] == "uvicorn" and registry()["gunicorn"] != "gunicorn"


def test_selected_variants_by_name_or_all(monkeypatch):
    monkeypatch.delenv("SOME_VARIANTS", raising=False)
    assert selected_variants("SOME_VARIANTS", "daphne gunicorn") == ["daphne", "gunicorn"]
    monkeypatch.setenv("SOME_VARIANTS", "uvicorn,granian")
    assert selected_variants("SOME_VARIANTS", "daphne") == ["uvicorn", "granian"]
    monkeypatch.setenv("SOME_VARIANTS", "all")
    assert selected_variants("SOME_VARIANTS", "daphne") == variants()


def test_an_unknown_variant_is_refused_with_the_valid_ones(monkeypatch):
    monkeypatch.setenv("SOME_VARIANTS", "uvicorn nginx-unit")
    refused = r"SOME_VARIANTS: unknown variant\(s\) \['nginx-unit'\]; valid: daphne"
    with pytest.raises(ValueError, match=refused):
        selected_variants("SOME_VARIANTS", "all")


def test_inherited_environment_drops_what_would_leak_into_a_stack():
    env = inherited_environment(
        {"PATH": "/bin", "SERVER": "daphne", "MAKEFLAGS": "SERVER=daphne", "LT_CHAT_ROOMS": "9",
         "LOCUST_HOST": "http://elsewhere", "SCENARIO": "chat", "NGINX_IMAGE": "mirror/nginx",
         "LOG_LEVEL": "WARNING", "DJANGO_SECRET_KEY": "test-only", "HTTP_PORT": "8000"}
    )  # fmt: skip
    assert env == {"PATH": "/bin", "NGINX_IMAGE": "mirror/nginx"}


def test_a_stack_is_selected_by_make_variables():
    plain = Stack("uvicorn", "rtd-x", 18000, replicas=2)
    assert plain.make_variables() == [
        *("SERVER=uvicorn", "PROJECT=rtd-x", "HTTP_PORT=18000", "REPLICAS=2", "TLS=0")
    ]
    assert (plain.base_url, plain.ws_url) == ("http://127.0.0.1:18000", "ws://127.0.0.1:18000")
    tls = Stack("uvicorn", "rtd-x", 18000, https_port=18443)
    assert tls.make_variables()[-2:] == ["TLS=1", "HTTPS_PORT=18443"]
    assert (tls.port, tls.base_url, tls.ws_url) == (18443, "https://127.0.0.1:18443", "wss://127.0.0.1:18443")


def test_monitoring_is_selected_by_the_prometheus_port():
    plain = Stack("uvicorn", "rtd-x", 18000)
    assert not plain.monitoring
    assert not any(variable.startswith(("MONITORING", "PROMETHEUS")) for variable in plain.make_variables())
    with pytest.raises(StackError, match="rtd-x runs without monitoring"):
        _ = plain.prometheus_url
    watched = Stack("gunicorn", "rtd-x", 18000, prometheus_port=19090, compose_files=[Path("extra.yaml")])
    assert watched.monitoring
    assert watched.make_variables()[-3:-1] == ["MONITORING=1", "PROMETHEUS_PORT=19090"]
    assert watched.prometheus_url == "http://127.0.0.1:19090"


def test_the_callers_monitoring_settings_do_not_leak_into_a_stack():
    leaked = {"MONITORING": "1", "PROMETHEUS_PORT": "9090", "PATH": "/bin"}
    assert inherited_environment(leaked) == {"PATH": "/bin"}


def test_extra_compose_files_go_over_the_makefiles_own(tmp_path):
    """Make and the compose commands the Makefile runs without -f (make clean) see the same files."""
    extra = tmp_path / "extra.yaml"
    tls = Stack("uvicorn", "rtd-x", 18000, https_port=18443, compose_files=[extra])
    files = [ROOT / "compose.yaml", ROOT / "compose.tls.yaml", extra]
    assert tls.make_variables()[-1] == "COMPOSE_FILES=" + " ".join(f"-f {path}" for path in files)
    assert tls.environment()["COMPOSE_FILE"] == os.pathsep.join(map(str, files))
    assert "COMPOSE_FILE" not in Stack("uvicorn", "rtd-x", 18000).environment()


def test_redis_ha_lays_its_compose_file_over_the_others(tmp_path):
    """REDIS_HA=1 for make, and its file among the ones the compose commands run without -f see."""
    ha = Stack("uvicorn", "rtd-x", 18000, redis_ha=True)
    assert ha.make_variables()[-1] == "REDIS_HA=1"
    assert "REDIS_HA=1" not in Stack("uvicorn", "rtd-x", 18000).make_variables()
    extra = tmp_path / "extra.yaml"
    both = Stack("uvicorn", "rtd-x", 18000, https_port=18443, redis_ha=True, compose_files=[extra])
    files = [ROOT / "compose.yaml", ROOT / "compose.tls.yaml", ROOT / "compose.redis-ha.yaml", extra]
    assert both.all_compose_files() == files
    assert all(path.exists() for path in files[:-1])
    assert both.make_variables()[-2:] == ["REDIS_HA=1", "COMPOSE_FILES=" + " ".join(f"-f {p}" for p in files)]


def test_the_makefile_lays_the_redis_ha_file_as_the_driver_does():
    """`make up REDIS_HA=1` and Stack(redis_ha=True) start the same files, in the same order."""
    args = ["make", "-n", "--no-print-directory", "stack-up", "SERVER=uvicorn", "PROJECT=rtd-x", "OFFLINE=0"]
    with_ha = subprocess.run([*args, "REDIS_HA=1", "TLS=1"], cwd=ROOT, capture_output=True, text=True)
    without = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert "-f compose.yaml -f compose.tls.yaml -f compose.redis-ha.yaml" in " ".join(with_ha.stdout.split())
    assert "compose.redis-ha.yaml" not in without.stdout


def test_redis_ha_is_not_inherited_from_the_callers_environment():
    assert inherited_environment({"PATH": "/bin", "REDIS_HA": "1"}) == {"PATH": "/bin"}


class LeftoverStack(Stack):
    """``make clean`` succeeds but leaves a container and a network; Docker removes them by force."""

    def __init__(self) -> None:
        super().__init__("uvicorn", "rtd-x", 18000)
        self.left = {"container": ["c1"], "network": ["n1"], "volume": []}

    def make(self, *args, timeout=0):
        return subprocess.CompletedProcess(["make", *args], 0, "", "")

    def resources(self):
        return {kind: list(ids) for kind, ids in self.left.items()}


def test_what_make_clean_leaves_behind_is_removed_by_force_and_said(monkeypatch):
    calls = []

    def docker(args, timeout=0):
        calls.append(args)
        kind = {"rm": "container", "network": "network"}[args[1]]
        stack.left[kind] = []
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr("stackctl.stack.run", docker)
    stack = LeftoverStack()
    assert stack.clean() == ["container c1", "network n1"]
    assert calls == [["docker", "rm", "-f", "c1"], ["docker", "network", "rm", "n1"]]


def test_what_cannot_be_removed_is_an_error(monkeypatch):
    monkeypatch.setattr(
        "stackctl.stack.run", lambda args, timeout=0: subprocess.CompletedProcess(args, 1, "", "")
    )
    with pytest.raises(StackError, match=r"make clean left \{'container': \['c1'\], 'network': \['n1'\]\}"):
        LeftoverStack().clean()


def test_the_websocket_service_follows_the_registry():
    asgi, wsgi = Stack("uvicorn", "p", 1), Stack("gunicorn", "p", 1)
    assert (asgi.ws_service, asgi.app_services) == ("app", ["app"])
    assert (wsgi.ws_service, wsgi.app_services) == ("ws", ["app", "ws"])


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def shell_registry(*args: str, file=None) -> list[str]:
    command = ["sh", str(SERVERS_FILE.parent / "registry.sh"), *args, *([str(file)] if file else [])]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def test_the_shell_reader_of_the_registry_agrees_with_the_python_one(tmp_path):
    """Make, the image's entry point, the Swarm script and Nginx read servers.txt through registry.sh."""
    assert shell_registry("names") == variants()
    for name, websockets in registry().items():
        assert shell_registry("websockets", name) == [websockets]
    assert shell_registry("websockets", "no-such-variant") == []
    other = tmp_path / "servers.txt"
    other.write_text("# comment\n\nalpha   beta\nbeta beta\n")
    assert shell_registry("names", file=other) == ["alpha", "beta"]
    assert shell_registry("websockets", "alpha", file=other) == ["beta"]
    usage = subprocess.run(["sh", str(SERVERS_FILE.parent / "registry.sh")], capture_output=True, text=True)
    assert usage.returncode == 64 and "usage" in usage.stderr
