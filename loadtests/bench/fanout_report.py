"""The report's fan-out throughput section: each variant's sustained deliveries/s, and the steps of
its median run (``loadtests/bench/fanout.py``)."""

from typing import Any

from loadtests.bench.analysis import ASGI_HELLO, median_run
from loadtests.bench.report import (
    LIMITED_MARK,
    Index,
    Section,
    Table,
    fmt_count,
    fmt_ms,
    fmt_rate,
    fmt_rps,
    fmt_spread,
)
from loadtests.bench.results import Results

STEP_COLUMNS = [
    "messages/s",
    "offered deliveries/s",
    "deliveries/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "failures",
    "machine CPU, cores busy",
    "generator CPU, cores",
    "held",
]


def fmt_cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def step_rows(steps: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            fmt_rate(step["offered_mps"]),
            fmt_rate(step["offered_dps"]),
            fmt_rate(step["deliveries_per_s"]),
            fmt_ms(step["p50_ms"]),
            fmt_ms(step["p99_ms"]),
            fmt_ms(step["max_ms"]),
            fmt_count(step["failures"]),
            fmt_cores(step.get("machine_cores")),
            fmt_cores(step.get("generator_cores")),
            "yes" if step["passed"] else f"no: {step['why']}",
        ]
        for step in steps
    ]


def fanout_section(index: Index, results: Results, chart_files: dict[str, str]) -> Section | None:
    figures = [f for f in index.figures if f.scenario == "fanout"]
    if not figures:
        return None
    settings = results.settings.get("fanout", {})
    threshold = settings.get("p99_ms", 100.0)
    ceiling = next((f for f in figures if f.kind == "ceiling" and f.target == ASGI_HELLO), None)
    rows = []
    steps: list[Table] = []
    ordered = [f for t, p in index.variants if (f := index.get(t, p, "fanout", figures[0].case, "fanout"))]
    ordered += [ceiling] if ceiling else []
    for f in ordered:
        label = "raw ASGI broadcaster (ceiling)" if f.kind == "ceiling" else index.label(f.target, f.profile)
        rows.append(
            [
                label,
                fmt_rps(f),
                fmt_spread(f.extra["offered_mps"], fmt_rate) if "offered_mps" in f.extra else "",
                fmt_spread(f.p50, fmt_ms),
                fmt_spread(f.p99, fmt_ms),
                str(f.runs),
            ]
        )
        measurement = next(
            m
            for m in results.measurements
            if (m.kind, m.target, m.profile, m.scenario) == (f.kind, f.target, f.profile, "fanout")
        )
        run = median_run(measurement)
        if run is not None and run.steps:
            stopped = (run.rows or {})[measurement.row].get("stopped", "")
            steps.append(
                Table(
                    STEP_COLUMNS,
                    step_rows(run.steps),
                    title=f"{label}: steps of run {run.index}",
                    note=f"Stopped: {stopped}.",
                )
            )
    paragraphs = [
        f"{figures[0].case}, {settings.get('replicas', 2)} app replicas (every room spans them); the message "
        f"rate rises by x{settings.get('factor')} from {settings.get('start')}/s, each step "
        f"{settings.get('settle')} s unmeasured then {settings.get('duration')} s measured. A step holds "
        f"while its delivery p99 stays within {threshold:g} ms with no error frame, no closed socket and "
        "every copy delivered; the figure is the most deliveries/s of a step that held before the first "
        f"that did not (median of the runs, min to max). {LIMITED_MARK}: within "
        f"{float(results.settings.get('generator_threshold', 0.8)) * 100:.0f} % of the generator's own "
        "fan-out ceiling (the raw ASGI broadcaster, which fans out within each server process only). "
        "Generator: loadtests/fanout (asyncio, websockets, uvloop), not Locust. Each step's CPU is read "
        "over its measured window: the machine's busy cores (of all it has: the generator, Nginx, the app, "
        "Redis and PostgreSQL share them) and the generator's own share of them; a step that failed with "
        "the machine's cores all busy met the CPU limit, one that failed with cores to spare met another.",
    ]
    return Section(
        "Chat fan-out throughput",
        paragraphs=paragraphs,
        tables=[
            Table(
                [
                    "variant",
                    f"deliveries/s at p99 <= {threshold:g} ms",
                    "messages/s",
                    "p50 ms",
                    "p99 ms",
                    "runs",
                ],
                rows,
            ),
            *steps,
        ],
        charts=[(chart_files["fanout"], "fan-out: offered deliveries/s against delivery p99")]
        if "fanout" in chart_files
        else [],
    )
