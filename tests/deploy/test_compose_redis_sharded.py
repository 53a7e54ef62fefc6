"""compose.redis-sharded.yaml as `make up REDIS_SHARDED=1` lays it over compose.yaml
(`docker compose config`)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from stackctl import ROOT, Stack

SHARDS = "redis://redis:6379/0,redis://redis-2:6379/0"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    if shutil.which("docker-compose") is None and shutil.which("docker") is None:
        pytest.skip("no compose CLI")
    stack = Stack("uvicorn", "rtd-config-check", 18000, redis_sharded=True)
    return yaml.safe_load(stack.compose_config())["services"]


def test_the_second_redis_is_the_first_one_again(services: dict[str, Any]) -> None:
    first, second = dict(services["redis"]), dict(services["redis-2"])
    assert second == first  # image, command, limits, hardening, health check, network


@pytest.mark.parametrize("name", ["app", "ws", "migrate"])
def test_the_app_shards_over_both_in_one_order(services: dict[str, Any], name: str) -> None:
    assert services[name]["environment"]["REDIS_URL"] == SHARDS
    if name != "migrate":
        assert {"redis", "redis-2"} <= set(services[name]["depends_on"])


def test_the_makefile_lays_the_file_as_the_driver_does_and_refuses_it_with_redis_ha() -> None:
    args = ["make", "-n", "--no-print-directory", "stack-up", "SERVER=uvicorn", "PROJECT=rtd-x", "OFFLINE=0"]
    sharded = subprocess.run(
        [*args, "REDIS_SHARDED=1"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert "-f compose.yaml -f compose.redis-sharded.yaml" in " ".join(sharded.stdout.split())
    stack = Stack("uvicorn", "rtd-x", 18000, redis_sharded=True)
    assert stack.all_compose_files() == [ROOT / "compose.yaml", ROOT / "compose.redis-sharded.yaml"]
    assert stack.make_variables()[-1] == "REDIS_SHARDED=1"
    both = subprocess.run(
        ["make", "--no-print-directory", "check-server", "SERVER=uvicorn", "REDIS_HA=1", "REDIS_SHARDED=1"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert both.returncode == 2
    assert "REDIS_HA=1 and REDIS_SHARDED=1 do not combine" in both.stderr
