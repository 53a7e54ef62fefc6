"""The report's soak section: a verdict per variant, its table of resources, and its charts."""

from __future__ import annotations

from typing import Any

from loadtests.bench.report import Section, Table
from loadtests.bench.results import Results
from loadtests.soak import summary, verdict

RULES = (
    "Per variant, two app replicas: chat sessions churn (connect, join one of many rooms that come and "
    "go, chat, idle, leave cleanly, by a TCP reset or in the middle of a frame) with HTTP requests on "
    "every endpoint, while the containers are sampled every few seconds (RSS, threads and file "
    "descriptors from /proc; asyncio tasks, database pool and WebSocket gauges from each container's "
    "/metrics; connections in CLOSE_WAIT; Redis' memory, keys and group memberships; Nginx's established "
    "connections). A prime "
    "run of the same churn comes first, so the pools that grow on demand and keep what they grew are "
    "at their working size when the baseline is taken."
)
GROWTH = (
    f"Memory passes when the median of the last {{window}} of the churn is at most "
    f"{verdict.MAX_RSS_GROWTH * 100:g} % above the median of the first {{window}} after the warm-up "
    "({warmup}, not judged). Every other judged resource passes when, after the churn and a settle "
    "time, its median is back at the baseline (the median before the churn) within the tolerance of "
    "the table below; sockets in CLOSE_WAIT pass when none is left then, whatever the baseline held; "
    "threads and the pools' connections pass when, in the last {window} of the churn, "
    "they are at most at their peak before the end of the warm-up, within theirs (not after: the churn "
    "ends with every client leaving at once, and the pools keep what that burst opened)."
)


def _seconds(value: float) -> str:
    return f"{value / 60:g} min" if value >= 60 else f"{value:.0f} s"


def tolerance_table() -> Table:
    rows = []
    for r in verdict.RESOURCES:
        if r.rule == "growth":
            allowed = f"+{verdict.MAX_RSS_GROWTH * 100:g} % after the warm-up"
        elif r.rule == "baseline":
            parts = [f"{r.absolute:g}"] + ([f"{r.relative * 100:g} % of the baseline"] if r.relative else [])
            allowed = "baseline + " + (" or ".join(parts) + (", the larger" if r.relative else ""))
        elif r.rule == "bounded":
            parts = [f"{r.absolute:g}"] + ([f"{r.relative * 100:g} %"] if r.relative else [])
            allowed = "until the churn's end: its peak before the end of the warm-up + " + " or ".join(parts)
        elif r.rule == "none":
            allowed = "none, after the churn, whatever the baseline held"
        else:
            allowed = "not judged"
        rows.append([r.label, allowed, r.why or "-"])
    return Table(["resource", "allowed", "why"], rows, title="What each rule allows")


def soak_section(results: Results, chart_files: dict[str, str]) -> Section | None:
    if not results.soaks:
        return None
    overview, tables = [], []
    side_by_side = "every variant's soak: memory growth and what connections leave behind"
    charts = [(chart_files["soak"], side_by_side)] if "soak" in chart_files else []
    for soak in results.soaks:
        label = (
            soak["target"]
            if not soak.get("profile") or soak["profile"] == "default"
            else (f"{soak['target']} · {soak['profile']}")
        )
        plan: dict[str, Any] = soak.get("plan", {})
        overview.append(
            [
                label,
                summary.headline(soak),
                _seconds(plan.get("churn", 0)),
                str(plan.get("users", "")),
                str(soak.get("samples", 0)),
                str(soak.get("sample_errors", 0)),
            ]
        )
        if soak.get("verdicts"):
            lines = summary.table(soak).splitlines()
            rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
            tables.append(Table(["resource", "rule", "compared", "allowed", "verdict"], rows, title=label))
        for chart in soak.get("charts", []):
            charts.append((f"{soak['dir']}/{chart}", f"{label}: {chart.rsplit('/', 1)[-1][5:-4]}"))
    plan = results.soaks[0].get("plan", {})
    growth = GROWTH.format(window=_seconds(plan.get("window", 60)), warmup=_seconds(plan.get("warmup", 300)))
    return Section(
        "Soak: memory and resources under churn",
        paragraphs=[RULES, growth],
        tables=[
            Table(["variant", "verdict", "churn", "users", "samples", "failed samples"], overview),
            tolerance_table(),
            *tables,
        ],
        charts=charts,
    )
