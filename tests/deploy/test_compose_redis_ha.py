"""compose.redis-ha.yaml as `make up REDIS_HA=1` lays it over compose.yaml (`docker compose config`)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml

from stackctl import Stack

SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]
MEMBERS = ["redis", "redis-replica", *SENTINELS]


def config(redis_ha: bool) -> dict[str, Any]:
    if shutil.which("docker-compose") is None and shutil.which("docker") is None:
        pytest.skip("no compose CLI")
    stack = Stack("uvicorn", "rtd-config-check", 18000, redis_ha=redis_ha)
    return yaml.safe_load(stack.compose_config())["services"]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return config(redis_ha=True)


def test_a_replica_and_three_sentinels_beside_the_primary(services: dict[str, Any]) -> None:
    assert set(MEMBERS) <= set(services)
    assert [services[name]["environment"]["REDIS_HA_SELF"] for name in MEMBERS] == MEMBERS
    assert {services[name]["environment"]["REDIS_HA_PRIMARY"] for name in MEMBERS} == {"redis"}
    assert [services[name]["command"] for name in SENTINELS] == [["sentinel"]] * 3
    for name in ("redis", "redis-replica"):
        assert services[name]["entrypoint"] == ["bash", "/etc/redis-ha/start.sh", "redis"]
        assert services[name]["command"][0] == "redis-server"
    # Two of three sentinels must agree: one sentinel alone never fails over.
    assert {services[name]["environment"]["SENTINEL_QUORUM"] for name in SENTINELS} == {"2"}


@pytest.mark.parametrize("name", MEMBERS)
def test_every_member_is_hardened_like_redis(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["user"] == "999:999" and service["read_only"] is True
    assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"]
    assert service["mem_limit"] and service["pids_limit"]
    assert set(service["networks"]) == {"backend"} and "ports" not in service
    assert service["tmpfs"] == ["/data:uid=999,gid=999,mode=0700"]  # writable by Redis' user only
    assert any(volume.endswith(":/etc/redis-ha:ro") for volume in service["volumes"])
    assert service["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", ["app", "ws", "migrate"])
def test_the_app_asks_the_sentinels_instead_of_redis_url(services: dict[str, Any], name: str) -> None:
    environment = services[name]["environment"]
    assert environment["REDIS_URL"] == ""
    assert environment["REDIS_SENTINELS"] == ",".join(f"{sentinel}:26379" for sentinel in SENTINELS)
    if name != "migrate":
        assert set(SENTINELS) <= set(services[name]["depends_on"])


def test_without_it_the_app_uses_the_one_redis() -> None:
    services = config(redis_ha=False)
    assert not {"redis-replica", *SENTINELS} & set(services)
    assert services["app"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert "REDIS_SENTINELS" not in services["app"]["environment"]
