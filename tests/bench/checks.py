"""What every report must show, shared by the report's unit tests and the pipeline test."""

import re
from pathlib import Path

from loadtests.bench import report
from loadtests.bench.analysis import Figures

# Words a report must never show when everything was measured: placeholders, missing values, and
# template syntax left unrendered.
PLACEHOLDERS = re.compile(
    r"\b(nan|NaN|inf|None|null|undefined|TODO|TBD|not measured|not run|no ceiling|not saved)\b|\{\{|\{%"
)


def expected_cells(f: Figures) -> list[str]:
    """The figures a measurement must show, formatted as the report formats them."""
    if f.scenario == "capacity":  # handshakes: their p95 and rate while ramping; memory per socket
        return [
            report.fmt_spread(f.p95, report.fmt_ms),
            report.fmt_spread(f.extra["bytes_per_socket"], report.fmt_kib),
            report.fmt_spread(f.extra["handshake_rate"], report.fmt_rate),
        ]
    cells = [report.fmt_spread(f.p99, report.fmt_ms)]
    if f.scenario == "chat":
        cells.append(report.fmt_spread(f.rps, report.fmt_rate))
        cells.append(report.fmt_spread(f.extra["ack_p99"], report.fmt_ms))
    elif f.kind == "ceiling":
        cells.append(report.fmt_spread(f.rps, report.fmt_rate))
    else:
        cells.append(report.fmt_rps(f))
    if "cpu_ms_per_request" in f.extra:  # the server's side (the app's /metrics over the runs)
        cells.append(report.fmt_spread(f.extra["cpu_ms_per_request"], report.fmt_cpu_ms))
    return cells


def assert_report_shows(out_dir: Path, figures: list[Figures]) -> None:
    """Both reports hold every measurement's figures and nothing that was not measured."""
    for name in ("report.md", "report.html"):
        text = (out_dir / name).read_text()
        for f in figures:
            for cell in expected_cells(f):
                assert cell in text, (name, f.target, f.profile, f.scenario, f.case, f.tool, cell)
        found = PLACEHOLDERS.search(text)
        assert found is None, (name, found)
