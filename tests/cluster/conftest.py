"""The figures of the cluster scenario (times, requests, messages), printed after the run and
written to artifacts/cluster/report.json."""

from __future__ import annotations

import json
from typing import Any

from stackctl import ROOT
from tests.harness.figures import report_figures

ARTIFACTS = ROOT / "artifacts" / "cluster"
REPORT: dict[str, dict[str, Any]] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = (f"{step:<34} {json.dumps(figures)}" for step, figures in REPORT.items())
    report_figures(terminalreporter, REPORT, ARTIFACTS, "cluster figures", lines)
