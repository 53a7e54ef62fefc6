"""What the report concludes from the figures, beyond the figures themselves.

- ``baseline_tables``: every ASGI variant as a multiple of the WSGI variant (Gunicorn), the terms in
  which the comparison's targets are stated, for each tool.
- ``warmup_table``: the first run of each figure against the runs after it. The warm-up before the
  first run is long enough when the first runs are not systematically slower than the later ones.
- ``agreement``: the medians of two bench runs side by side, figure by figure
  (``python -m loadtests.bench compare A B``), to show how far a published figure can be trusted.

Everything is computed from ``results.json`` alone, like the rest of the report.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.bench.analysis import Figures, analyse
from loadtests.bench.results import Results
from loadtests.lib import names

PING, PING_SYNC, DB = (names.HTTP_ENDPOINTS[e] for e in ("ping", "ping-sync", "db"))
# Two runs whose medians differ by more than this are said not to agree.
AGREEMENT = 0.10
TOOLS = ("locust", "wrk")


def wsgi_targets(results: Results) -> set[str]:
    """The variants whose app container serves WSGI: their WebSockets go to a sidecar (``ws``)."""
    return {stack["target"] for stack in results.stacks if "ws" in stack.get("containers", {})}


@dataclass(frozen=True)
class Ratio:
    """``numerator`` of an ASGI variant over ``denominator`` of the baseline, both medians."""

    title: str
    numerator: str  # endpoint path of the ASGI variant
    denominator: str  # endpoint path of the WSGI baseline, or "hello" for the raw ASGI hello-world


RATIOS = (
    Ratio(f"{PING} ÷ WSGI {PING_SYNC}", PING, PING_SYNC),
    Ratio(f"{PING_SYNC} ÷ WSGI {PING_SYNC}", PING_SYNC, PING_SYNC),
    Ratio(f"{DB} ÷ WSGI {DB}", DB, DB),
    Ratio(f"{PING} ÷ raw ASGI hello-world", PING, "hello"),
)


def fmt_times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _by_key(figures: Sequence[Figures]) -> dict[tuple[str, str, str, str, str], Figures]:
    return {(f.target, f.profile, f.scenario, f.case, f.tool): f for f in figures}


def baseline_tables(
    figures: Sequence[Figures], results: Results
) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per tool and WSGI variant: (title, columns, rows), one row per ASGI variant and profile."""
    wsgi = wsgi_targets(results)
    by_key = _by_key(figures)
    variants = [f for f in figures if f.kind == "variant" and f.scenario == "http"]
    pairs = list(dict.fromkeys((f.target, f.profile) for f in variants))
    tables = []
    for tool in TOOLS:
        for base in sorted(wsgi):
            rows = []
            for target, profile in pairs:
                if target in wsgi:
                    continue
                cells = []
                for r in RATIOS:
                    mine = by_key.get((target, profile, "http", r.numerator, tool))
                    if r.denominator == "hello":
                        cells.append(fmt_times(mine.hello_share if mine else None))
                        continue
                    theirs = by_key.get((base, profile, "http", r.denominator, tool))
                    value = (
                        mine.rps.median / theirs.rps.median if mine and theirs and theirs.rps.median else None
                    )
                    cells.append(fmt_times(value))
                if any(cell != "n/a" for cell in cells):
                    label = target if not profile or profile == "default" else f"{target} · {profile}"
                    rows.append([label, *cells])
            if rows:
                tables.append((f"{tool}, against {base}", ["ASGI variant", *(r.title for r in RATIOS)], rows))
    return tables


# --- the warm-up check ----------------------------------------------------------------------------


def first_run_deviations(results: Results) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """(scenario, tool) → [(figure, first run ÷ median of the later runs - 1)], throughput only.

    The runs of a stage are interleaved (every endpoint's run 1, then every run 2, ...), so the first
    run of each figure is the one nearest to the warm-up."""
    found: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for m in results.measurements:
        if m.scenario not in ("http", "echo"):
            continue
        values = [(run.rows or {})[m.row]["rps"] for run in m.measured()]
        later = statistics.median(values[1:]) if len(values) >= 3 else 0.0
        if later > 0:
            found.setdefault((m.scenario, m.tool), []).append((f"{m.target} {m.case}", values[0] / later - 1))
    return found


def fmt_deviation(value: float) -> str:
    return f"{value * 100:+.1f} %"


def warmup_table(results: Results) -> tuple[list[str], list[list[str]]] | None:
    """One row per scenario and tool: how the first runs compare with the later ones."""
    found = first_run_deviations(results)
    if not found:
        return None
    rows = []
    for (scenario, tool), deviations in found.items():
        values = [d for _, d in deviations]
        outside = [f"{label} ({fmt_deviation(d)})" for label, d in deviations if abs(d) > AGREEMENT]
        rows.append(
            [
                f"{scenario} ({tool})",
                str(len(values)),
                fmt_deviation(statistics.median(values)),
                f"{fmt_deviation(min(values))} to {fmt_deviation(max(values))}",
                "; ".join(outside) or "none",
            ]
        )
    columns = [
        "runs",
        "figures",
        "first run against the later runs, median",
        "lowest to highest",
        f"beyond ±{AGREEMENT * 100:.0f} %",
    ]
    return columns, rows


# --- two bench runs side by side ------------------------------------------------------------------


def headline_value(f: Figures) -> tuple[str, float] | None:
    """The figure a scenario is read by: throughput, fan-out p99, sockets held, or memory per socket."""
    if f.scenario in ("http", "echo"):
        return "per second", f.rps.median
    if f.scenario == "chat":
        return "p99 ms", f.p99.median
    if f.scenario == "sockets":
        return "sockets held", f.rps.median
    per_socket = f.extra.get("bytes_per_socket")
    return ("bytes per socket", per_socket.median) if per_socket else None


def agreement(first: Results, second: Results) -> tuple[list[list[str]], list[str]]:
    """Rows (figure, what, first, second, second ÷ first - 1) and the figures beyond ±AGREEMENT."""
    a, b = _by_key(analyse(first)), _by_key(analyse(second))
    rows, outside = [], []
    for key, fa in a.items():
        fb = b.get(key)
        va, vb = headline_value(fa), fb and headline_value(fb)
        if va is None or not vb or va[1] <= 0:
            continue
        change = vb[1] / va[1] - 1
        label = " ".join(part for part in (fa.label, fa.case, f"({fa.tool})") if part)
        rows.append([label, va[0], f"{va[1]:,.1f}", f"{vb[1]:,.1f}", fmt_deviation(change)])
        if abs(change) > AGREEMENT:
            outside.append(f"{label}: {fmt_deviation(change)}")
    return rows, outside


def agreement_markdown(first: Results, second: Results) -> str:
    rows, outside = agreement(first, second)
    lines = [
        "| figure | what | first run | second run | change |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        f"{len(rows) - len(outside)} of {len(rows)} medians agree within ±{AGREEMENT * 100:.0f} %.",
    ]
    lines += [f"- beyond it: {item}" for item in outside]
    return "\n".join(lines) + "\n"
