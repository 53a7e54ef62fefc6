"""For the pytest suites that drive the stack or a host tool: what to do when the machine lacks it."""

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

from stackctl.host import docker_available
from stackctl.stack import Stack, StackError


def require_docker(suite: str) -> None:
    """Skip ``suite`` on a machine without a Docker engine; fail it when ``E2E_REQUIRED=1`` (as
    ``make test`` sets it), so CI never passes by skipping."""
    if docker_available():
        return
    if os.environ.get("E2E_REQUIRED") == "1":
        pytest.fail("E2E_REQUIRED=1 but no Docker engine answers `docker info`")
    pytest.skip(f"no Docker engine: the {suite} need one (`docker info` failed)")


def require_tool(command: str, package: str) -> str:
    """The path of the host tool ``command``. Without it the test is skipped, or fails when
    ``E2E_REQUIRED=1``: ``make test`` installs ``package`` first (scripts/bootstrap.sh test)."""
    found = shutil.which(command)
    if found:
        return found
    missing = f"{command} is missing (Debian package {package}, which `scripts/bootstrap.sh test` installs)"
    if os.environ.get("E2E_REQUIRED") == "1":
        pytest.fail(f"E2E_REQUIRED=1 but {missing}")
    pytest.skip(missing)


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    """``stack`` up for a fixture's tests, and removed with its volumes after them, also when they or
    its start fail. What an interrupted run left of the project is removed first. A stack that does
    not come up fails the tests that need it, with what make and Docker said."""
    stack.clean()
    try:
        stack.up()
    except StackError as exc:
        stack.clean()
        pytest.fail(str(exc))
    try:
        yield stack
    finally:
        stack.clean()
