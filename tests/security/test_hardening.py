"""Hardening of the running stack, per variant: what Docker and the containers' own processes report.

Also, once: no secret in any layer of the app image, and Django's deploy check clean inside it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.security.hardening import (
    Container,
    containers,
    memory_and_pids_limits,
    no_capabilities,
    no_docker_socket,
    no_new_privileges,
    non_root,
    private_network,
    problems_of,
    published_ports,
    read_only_root,
    secret_assignments,
    secret_values,
    secrets_in_archive,
)
from tests.security.stack import SECRETS_DIR, Stack, docker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

Check = Callable[[Container], list[str]]
CHECKS: dict[str, Callable[[Stack], Check]] = {
    "non-root": lambda stack: non_root,
    "read-only root filesystem": lambda stack: read_only_root,
    "no capabilities": lambda stack: no_capabilities,
    "no new privileges": lambda stack: no_new_privileges,
    "memory and pids limits": lambda stack: memory_and_pids_limits,
    "no Docker socket": lambda stack: no_docker_socket,
    "only Nginx publishes, on the bind address": published_ports,
    "private back-end network": private_network,
}


@pytest.fixture(scope="session")
def stack_containers(stack: Stack) -> list[Container]:
    """What Docker and the processes report, read once per stack for all the rules."""
    return containers(stack)


@pytest.fixture(scope="session")
def tls_stack_containers(tls_stack: Stack) -> list[Container]:
    return containers(tls_stack)


@pytest.mark.parametrize("rule", CHECKS)
def test_containers_are_hardened(stack: Stack, stack_containers: list[Container], rule: str):
    assert {c.service for c in stack_containers} >= {"nginx", "app", "migrate", "redis", "postgres"}
    assert problems_of(CHECKS[rule](stack), stack_containers) == {}


@pytest.mark.parametrize("rule", CHECKS)
def test_tls_containers_are_hardened(tls_stack: Stack, tls_stack_containers: list[Container], rule: str):
    assert problems_of(CHECKS[rule](tls_stack), tls_stack_containers) == {}


def test_allowed_hosts_has_no_wildcard(stack: Stack):
    settings = stack.app_settings()
    assert settings["DEBUG"] is False
    assert settings["ALLOWED_HOSTS"] and "*" not in settings["ALLOWED_HOSTS"]


# --- The image ----------------------------------------------------------------------------------------


def test_no_secret_in_the_image_history_or_config(app_image: str):
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", app_image).stdout
    config = docker("image", "inspect", "--format", "{{json .Config}}", app_image).stdout
    for value in secret_values().values():
        assert value.decode() not in history + config
    assert secret_assignments(history) == []
    assert secret_assignments(config) == []


def test_no_secret_in_any_image_layer(app_image: str):
    secrets = secret_values()
    assert {"django_secret_key", "postgres_password"} <= set(secrets)
    assert secrets_in_archive(["docker", "save", app_image], secrets) == []


def test_secret_scan_finds_a_planted_secret(app_image: str, tmp_path: Path):
    """The scan itself works: an image with a secret in a layer is caught, by value and by name."""
    secrets = secret_values()
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY .env /srv/.env\n")
    (tmp_path / ".env").write_bytes(b"DJANGO_SECRET_KEY=" + secrets["django_secret_key"] + b"\n")
    planted = f"{app_image.split(':')[0]}:secret-scan-probe"
    docker("build", "-q", "-t", planted, str(tmp_path), timeout=300)
    try:
        found = secrets_in_archive(["docker", "save", planted], secrets)
    finally:
        docker("image", "rm", planted, check=False)
    assert any(f.endswith(".env: a secret file") for f in found), found
    assert any(f.endswith(": django_secret_key") for f in found), found


# The deploy check in the built image, run like the app containers run (read-only, no capabilities,
# no network): production settings pass; each unsafe one is named.
DEPLOY_CHECKS = [
    ({}, 0, "System check identified no issues"),
    ({"DJANGO_HTTPS": "0"}, 1, "SECURE_SSL_REDIRECT"),
    ({"DJANGO_ALLOWED_HOSTS": "*"}, 1, "'*' is refused"),
    ({"DJANGO_DEBUG": "1"}, 1, "DEBUG"),
]


@pytest.mark.parametrize(
    ("overrides", "exit_code", "output"),
    DEPLOY_CHECKS,
    ids=["production", "no-https", "wildcard-host", "debug"],
)
def test_deploy_check_in_the_image(app_image: str, overrides: dict[str, str], exit_code: int, output: str):
    environment = {
        "DJANGO_SECRET_KEY_FILE": "/run/secrets/django_secret_key",
        "DJANGO_ALLOWED_HOSTS": "chat.example.com",
        **overrides,
    }
    result = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges:true", "--network", "none",
         "-v", f"{SECRETS_DIR / 'django_secret_key'}:/run/secrets/django_secret_key:ro",
         *(arg for name, value in environment.items() for arg in ("-e", f"{name}={value}")),
         app_image, "python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (result.returncode != 0) == bool(exit_code), result.stdout + result.stderr
    assert output in result.stdout + result.stderr
