"""The compose stack, brought up with the Makefile exactly as a user would, once per variant."""

from collections.abc import Iterator

import pytest

from stackctl import ROOT, Stack, free_port, variants
from stackctl.testing import require_docker, running
from tests.harness.browser import browser_available, headless_chromium

PROJECT = "rtd-e2e"  # never the user's own stack (realtime-django)
REPLICAS = 2


@pytest.fixture(scope="session", autouse=True)
def _require_docker() -> None:
    require_docker("end-to-end tests")


@pytest.fixture(scope="module", params=variants())
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running(Stack(request.param, PROJECT, http_port=free_port(), replicas=REPLICAS)) as stack:
        yield stack


ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def browser():
    if not browser_available():
        pytest.skip("needs Debian's chromium and chromium-driver packages")
    driver = headless_chromium()
    yield driver
    driver.quit()
