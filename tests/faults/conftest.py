"""One compose stack per variant (REPLICAS=2), shared by every fault test of that variant.

Each test leaves the stack as it found it (every container running and healthy): the autouse
fixture checks that before each test, and restores it after a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from stackctl import free_port
from stackctl.testing import require_docker, running
from tests.faults.stack import ARTIFACTS, PROJECT, REPLICAS, STACK_ENV, Stack, fault_variants, spread_faults
from tests.harness.figures import report_figures

# Figures each test records (close codes, failed requests, message counts), printed after the run
# and written to artifacts/faults/report.json.
REPORT: list[dict[str, Any]] = []


@pytest.fixture(scope="session", autouse=True)
def _require_docker() -> None:
    require_docker("fault tests")


def stack_variant(item: pytest.Item) -> str | None:
    """The variant of the shared stack a test runs on; None for a test with a stack of its own."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("stack") if callspec else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With FAULT_SPREAD=1, the i-th test module runs on the i-th variant of FAULT_VARIANTS, round robin."""
    if not spread_faults():
        return
    variants = fault_variants()
    modules = sorted({item.module.__name__ for item in items if stack_variant(item)})  # type: ignore[attr-defined]
    keep, drop = [], []
    for item in items:
        variant = stack_variant(item)
        turn = variants[modules.index(item.module.__name__) % len(variants)] if variant else None  # type: ignore[attr-defined]
        (keep if variant == turn else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.fixture(scope="session", params=fault_variants())
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    stack = Stack(
        server=request.param, project=PROJECT, http_port=free_port(), replicas=REPLICAS, env=STACK_ENV
    )
    with running(stack):
        yield stack


@pytest.fixture(autouse=True)
def _healthy_before_and_after(request: pytest.FixtureRequest) -> Iterator[None]:
    if "stack" not in request.fixturenames:
        yield
        return
    stack: Stack = request.getfixturevalue("stack")
    stack.wait_serving()
    yield
    # A test that failed half-way may have left a service stopped: start everything again.
    if getattr(request.node, "rep_call_failed", False):
        stack.compose("up", "-d", *stack.scale_args())
        stack.wait_serving()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.rep_call_failed = True  # type: ignore[attr-defined]
        stack = getattr(item, "funcargs", {}).get("stack")
        if isinstance(stack, Stack):
            report.sections.append(("docker logs (last lines of each container)", stack.logs_report(tail=40)))
    return report


@pytest.fixture
def record(stack: Stack, request: pytest.FixtureRequest) -> Any:
    """``record(**figures)`` adds this test's figures to the run's report."""

    def add(**figures: Any) -> None:
        REPORT.append({"variant": stack.server, "test": request.node.originalname, **figures})

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    def line(entry: dict[str, Any]) -> str:
        figures = {key: value for key, value in entry.items() if key not in ("variant", "test")}
        return f"{entry['variant']:<14} {entry['test']:<44} {json.dumps(figures)}"

    report_figures(terminalreporter, REPORT, ARTIFACTS, f"fault figures ({PROJECT})", map(line, REPORT))
