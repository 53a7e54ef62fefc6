"""The figures of the cluster scenario (times, requests, messages), printed after the run and
written to artifacts/cluster/report.json."""

from __future__ import annotations

import json
from typing import Any

from stackctl import ROOT

ARTIFACTS = ROOT / "artifacts" / "cluster"
REPORT: dict[str, dict[str, Any]] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.json").write_text(json.dumps(REPORT, indent=2) + "\n")
    terminalreporter.section(f"cluster figures (also in {ARTIFACTS / 'report.json'})")
    for step, figures in REPORT.items():
        terminalreporter.write_line(f"{step:<34} {json.dumps(figures)}")
