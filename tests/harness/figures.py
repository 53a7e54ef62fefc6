"""The figures a Docker suite records (times, requests, messages): written to
artifacts/<suite>/report.json and printed in pytest's terminal summary."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def report_figures(reporter: Any, report: Any, folder: Path, title: str, lines: Iterable[str]) -> None:
    """``report`` (JSON-able) into ``folder``/report.json, and ``lines`` under a section ``title``."""
    if not report:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    reporter.section(f"{title} (also in {folder / 'report.json'})")
    for line in lines:
        reporter.write_line(line)
