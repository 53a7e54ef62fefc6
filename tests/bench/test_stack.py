"""The pure parts of driving the stack: the profile's compose file, names, environment."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from loadtests.bench import stack
from loadtests.bench.config import ROOT


def test_profile_override_is_compose_yaml_for_both_app_services():
    env = {"ASGI_FAST_PATH": "0", "ODD": 'a "quoted": value # not a comment', "EMPTY": ""}
    parsed = yaml.safe_load(stack.app_environment_override(env))
    assert parsed == {"services": {"app": {"environment": env}, "ws": {"environment": env}}}


def test_memory_pattern_matches_app_containers_of_this_project_only():
    pattern = re.compile(stack.memory_pattern("rtd-bench"))
    for name in ("rtd-bench_app_1", "rtd-bench-app-2", "rtd-bench_ws_1", "rtd-bench-ws-12"):
        assert pattern.search(name), name
    for name in (
        "rtd-bench_nginx_1",
        "rtd-bench-ci_app_1",
        "other_app_1",
        "rtd-bench_app_1x",
        "xrtd-bench_app_1",
    ):
        assert not pattern.search(name), name


def test_make_variables_name_the_stack_and_extra_compose_files(tmp_path):
    plain = stack.Stack("granian", "rtd-bench", 18000, logs=tmp_path)
    assert plain.make_variables() == [
        "SERVER=granian",
        "PROJECT=rtd-bench",
        "HTTP_PORT=18000",
        "REPLICAS=1",
        "TLS=0",
    ]
    extra = stack.Stack("granian", "rtd-bench", 18000, logs=tmp_path, compose_files=[tmp_path / "x.yaml"])
    assert extra.make_variables()[-1] == f"COMPOSE_FILES=-f {stack.COMPOSE_FILE} -f {tmp_path / 'x.yaml'}"
    assert extra.environment()["API_RATE"] == stack.LOAD_TEST_LIMITS["API_RATE"]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs the host's nginx")
def test_raised_limits_render_to_a_config_nginx_accepts(tmp_path):
    """The limits go through nginx/entrypoint.sh's checks and `nginx -t` (limit_conn stops at 65535)."""
    run_dir = tmp_path / "run"
    env = {
        "PATH": os.environ["PATH"],
        "NGINX_TMP_DIR": str(run_dir),
        "NGINX_STATIC_ROOT": str(tmp_path),
        **stack.LOAD_TEST_LIMITS,
    }
    rendered = subprocess.run(
        ["sh", str(ROOT / "nginx" / "entrypoint.sh"), "render"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    conf = (run_dir / "conf" / "nginx.conf").read_text()
    assert f"rate={stack.LOAD_TEST_LIMITS['API_RATE']}" in conf
    checked = subprocess.run(
        ["nginx", "-t", "-e", "stderr", "-p", f"{run_dir}/", "-c", str(run_dir / "conf" / "nginx.conf")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
