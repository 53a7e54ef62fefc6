"""PNG charts of the figures (matplotlib, Agg backend: no display needed).

Bars are medians, whiskers the lowest and highest run. Where a ceiling of the load generator is of
the bars' order (WebSocket echo) it is a horizontal line, so a bar near it is visibly the
generator's limit rather than the server's; far above them (HTTP) it is stated in figures instead.
"""

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: renders to files, never to a screen

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from loadtests.bench import sockets
from loadtests.bench.analysis import ASGI_HELLO, NGINX_FIXED, Figures, median_run
from loadtests.bench.results import Results
from loadtests.bench.stats import Spread
from loadtests.soak import charts as soak_charts
from loadtests.soak.sampler import read_samples
from loadtests.soak.verdict import Timeline

CHART_DIR = "charts"
DPI = 110


def _series(figures: Sequence[Figures], results: Results) -> list[tuple[str, str, str]]:
    """(target, profile, label) of every variant in the order run."""
    profiles = [p["name"] for p in results.settings.get("profiles", [])] or ["default"]
    measured = {(f.target, f.profile) for f in figures if f.kind == "variant"}
    return [
        (s, p, s if len(profiles) == 1 else f"{s} · {p}")
        for s in results.settings.get("servers", [])
        for p in profiles
        if (s, p) in measured
    ]


def _bars(
    ax: Axes,
    groups: Sequence[str],
    series: Sequence[tuple[str, str, str]],
    lookup: Callable[[str, str, str], Spread | None],
) -> bool:
    """Grouped bars: one group per entry of ``groups``, one bar per series; False when empty."""
    width = 0.8 / max(1, len(series))
    drawn = False
    for i, (target, profile, label) in enumerate(series):
        xs, heights, low, high = [], [], [], []
        for g, group in enumerate(groups):
            value = lookup(target, profile, group)
            if value is None:
                continue
            xs.append(g + (i - (len(series) - 1) / 2) * width)
            heights.append(value.median)
            low.append(value.median - value.low)
            high.append(value.high - value.median)
        if xs:
            ax.bar(xs, heights, width, yerr=[low, high], capsize=2, label=label)
            drawn = True
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)
    return drawn


def _find(figures: Sequence[Figures], **wanted: str) -> Figures | None:
    for f in figures:
        if all(getattr(f, key) == value for key, value in wanted.items()):
            return f
    return None


def _headroom(ax: Axes, line: float) -> None:
    """Keep a reference line clear of the top edge."""
    ax.set_ylim(top=max(ax.get_ylim()[1], line * 1.1))


def _save(
    fig: plt.Figure, out_dir: Path, name: str, rect: tuple[float, float, float, float] = (0, 0, 1, 1)
) -> str:
    path = out_dir / CHART_DIR / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return f"{CHART_DIR}/{path.name}"


def _http_chart(
    figures: Sequence[Figures], series: Sequence[tuple[str, str, str]], tool: str, out_dir: Path
) -> str | None:
    """One panel per endpoint, each with its own scale: a static file runs at ten times an API view,
    and the generator's ceilings (a bare Nginx, a raw ASGI hello-world) far above both, so on one
    axis the views would be slivers. The ceilings are stated under the panels instead of drawn."""
    cases = list(
        dict.fromkeys(
            f.case for f in figures if f.scenario == "http" and f.tool == tool and f.kind == "variant"
        )
    )
    if not cases:
        return None
    fig, axes = plt.subplots(
        1, len(cases), figsize=(max(7, 0.55 * len(series) * len(cases) + 1.5), 4.8), squeeze=False
    )
    for ax, case in zip(axes[0], cases, strict=True):
        found = [
            (label, f)
            for target, profile, label in series
            if (f := _find(figures, target=target, profile=profile, scenario="http", case=case, tool=tool))
        ]
        spreads = [f.rps for _, f in found]
        bars = ax.bar(
            range(len(found)),
            [s.median for s in spreads],
            yerr=[[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]],
            capsize=2,
            color=[f"C{i}" for i in range(len(found))],
        )
        ax.bar_label(
            bars,
            labels=[f"{s.median:,.0f}" for s in spreads],
            label_type="center",
            rotation=90,
            color="white",
            fontsize="small",
        )
        ax.set_ylim(top=max((s.high for s in spreads), default=1) * 1.1)
        ax.set_xticks(
            range(len(found)), [label for label, _ in found], rotation=45, ha="right", fontsize="small"
        )
        ax.set_title(case, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("requests/s (median, min-max)")
    ceilings = [
        f"{name} {ceiling.rps.median:,.0f} req/s"
        for target, name in ((NGINX_FIXED, "Nginx alone"), (ASGI_HELLO, "raw ASGI hello-world"))
        if (ceiling := _find(figures, kind="ceiling", target=target, scenario="http", tool=tool))
    ]
    fig.suptitle(f"HTTP requests/s per endpoint ({tool}), each panel on its own scale")
    if not ceilings:
        return _save(fig, out_dir, f"http-{tool}")
    fig.text(0.5, 0.01, f"Generator ceilings ({tool}): " + "; ".join(ceilings), ha="center", fontsize="small")
    return _save(fig, out_dir, f"http-{tool}", rect=(0, 0.05, 1, 1))


def draw(figures: Sequence[Figures], results: Results, out_dir: Path) -> dict[str, str]:
    """Draw every chart there are figures for; returns {chart name: path relative to out_dir}."""
    series = _series(figures, results)
    files: dict[str, str] = {}
    soaks = _soak_overview(results, out_dir)
    if soaks:
        files["soak"] = soaks
    if not series:
        return files
    for tool in ("locust", "wrk"):
        chart = _http_chart(figures, series, tool, out_dir)
        if chart:
            files[f"http-{tool}"] = chart

    echo = [f for f in figures if f.scenario == "echo" and f.kind == "variant"]
    if echo:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        labels = [label for t, p, label in series if _find(echo, target=t, profile=p)]
        values = [_find(echo, target=t, profile=p) for t, p, _ in series if _find(echo, target=t, profile=p)]
        for ax, metric, title in ((left, "rps", "messages/s"), (right, "p99", "round trip p99 ms")):
            spreads = [getattr(f, metric) for f in values if f]
            ax.bar(
                labels,
                [s.median for s in spreads],
                yerr=[[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]],
                capsize=3,
            )
            ax.set_title(f"WebSocket echo: {title}")
            ax.tick_params(axis="x", rotation=30)
            ax.grid(axis="y", alpha=0.3)
        hello = _find(figures, kind="ceiling", target=ASGI_HELLO, scenario="echo")
        if hello:
            left.axhline(hello.rps.median, linestyle=":", color="grey", label="raw ASGI echo")
            _headroom(left, hello.rps.median)
            left.legend(fontsize="small")
        files["echo"] = _save(fig, out_dir, "echo")

    chat_cases = list(dict.fromkeys(f.case for f in figures if f.scenario == "chat"))
    if chat_cases:
        fig, ax = plt.subplots(figsize=(max(7, 2.5 * len(chat_cases)), 4.5))

        def p99(target: str, profile: str, case: str) -> Spread | None:
            f = _find(figures, target=target, profile=profile, scenario="chat", case=case)
            return f.p99 if f else None

        _bars(ax, chat_cases, series, p99)
        ax.set_ylabel("delivery p99 ms (median, min-max)")
        ax.set_title("Chat fan-out delivery latency, p99")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.25)  # room for the legend above the tallest bar
        ax.legend(fontsize="small", ncols=2)
        files["chat"] = _save(fig, out_dir, "chat")

    chart = _fanout_chart(figures, series, results, out_dir)
    if chart:
        files["fanout"] = chart

    chart = _sockets_chart(figures, series, results, out_dir)
    if chart:
        files["sockets"] = chart

    capacity = [f for f in figures if f.scenario == "capacity" and "bytes_per_socket" in f.extra]
    if capacity:
        fig, ax = plt.subplots(figsize=(8, 4))
        found = [(label, _find(capacity, target=t, profile=p)) for t, p, label in series]
        found = [(label, f) for label, f in found if f]
        spreads = [f.extra["bytes_per_socket"] for _, f in found]
        ax.bar(
            [label for label, _ in found],
            [s.median / 1024 for s in spreads],
            yerr=[
                [(s.median - s.low) / 1024 for s in spreads],
                [(s.high - s.median) / 1024 for s in spreads],
            ],
            capsize=3,
        )
        ax.set_ylabel("KiB per idle socket (median, min-max)")
        ax.set_title("Memory per idle WebSocket (app containers)")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
        files["capacity"] = _save(fig, out_dir, "capacity")
    return files


def _plain(value: float) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _leading_digit(value: float) -> int:
    """The first significant digit of a positive ``value`` (2 for 2,000 and for 0.2)."""
    return round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0


def plain_log_axes(ax: Axes) -> None:
    """Both axes logarithmic, labelled in plain numbers (2,000, not 2x10^3).

    Across little more than a decade matplotlib labels the minor ticks too, in its scientific
    notation: here they are plain as well, at 2 and 5 times a power of ten only, so they never crowd.
    """
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda value, _: _plain(value)))
        axis.set_minor_formatter(
            FuncFormatter(lambda value, _: _plain(value) if _leading_digit(value) in (2, 5) else "")
        )


def _fanout_chart(
    figures: Sequence[Figures], series: Sequence[tuple[str, str, str]], results: Results, out_dir: Path
) -> str | None:
    """Each variant's median run, step by step: offered deliveries/s against the delivery p99, with
    the threshold as a line; the raw ASGI broadcaster (the generator's ceiling) dashed."""
    lines = [(label, "variant", target, profile) for target, profile, label in series]
    lines.append(("raw ASGI broadcaster (ceiling)", "ceiling", ASGI_HELLO, ""))
    fig, ax = plt.subplots(figsize=(9, 5))
    drawn = False
    for i, (label, kind, target, profile) in enumerate(lines):
        measurement = next(
            (
                m
                for m in results.measurements
                if (m.kind, m.target, m.scenario) == (kind, target, "fanout")
                and (kind == "ceiling" or m.profile == profile)
            ),
            None,
        )
        run = median_run(measurement) if measurement else None
        if run is None or not run.steps:
            continue
        xs = [step["offered_dps"] for step in run.steps]
        ys = [max(step["p99_ms"], 0.1) for step in run.steps]
        style = {"linestyle": "--", "color": "grey"} if kind == "ceiling" else {"color": f"C{i}"}
        ax.plot(xs, ys, marker="o", label=label, **style)
        failed = [(x, y) for x, y, step in zip(xs, ys, run.steps, strict=True) if not step["passed"]]
        if failed:
            ax.plot(*zip(*failed, strict=True), marker="x", linestyle="none", color="black", markersize=9)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    threshold = float(results.settings.get("fanout", {}).get("p99_ms", 100.0))
    ax.axhline(threshold, color="red", linestyle=":", label=f"p99 threshold {threshold:g} ms")
    plain_log_axes(ax)
    ax.set_xlabel("offered deliveries/s (each message's copies owed), the median run's steps")
    ax.set_ylabel("delivery p99 ms")
    case = next((f.case for f in figures if f.scenario == "fanout"), "")  # e.g. "4 rooms x 50 members"
    ax.set_title(f"Chat fan-out, {case}: p99 as the message rate rises (x: the step that failed)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_dir, "fanout")


def _sockets_chart(
    figures: Sequence[Figures], series: Sequence[tuple[str, str, str]], results: Results, out_dir: Path
) -> str | None:
    """Left, the sockets each variant held; right, memory per socket of the app, Nginx and Redis at
    each run's largest step that held (a stack per run), a group per component."""
    found = [
        (target, profile, label, f)
        for target, profile, label in series
        if (f := _find(figures, target=target, profile=profile, scenario="sockets", kind="variant"))
    ]
    if not found:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    spreads = [f.rps for *_, f in found]
    left.bar(
        [label for _, _, label, _ in found],
        [s.median for s in spreads],
        yerr=[[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]],
        capsize=3,
        color=[f"C{i}" for i in range(len(found))],
    )
    left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    left.set_ylabel("sockets held (median, min-max)")
    left.set_title("Idle WebSockets held before a step failed")
    left.tick_params(axis="x", rotation=30)
    left.grid(axis="y", alpha=0.3)

    def kib_per_socket(target: str, profile: str, component: str) -> Spread | None:
        measurement = sockets.measurement(results, target, profile)
        memory = sockets.memory_over_runs(measurement) if measurement else None
        if memory is None or component not in memory[1]:
            return None
        in_bytes = memory[1][component]
        return Spread(in_bytes.median / 1024, in_bytes.low / 1024, in_bytes.high / 1024, in_bytes.count)

    components = list(sockets.COMPONENTS)
    drawn = _bars(right, components, [(t, p, label) for t, p, label, _ in found], kib_per_socket)
    right.set_xticks(range(len(components)), list(sockets.COMPONENTS.values()))
    right.set_ylabel("KiB per socket (median, min-max)")
    right.set_title("Memory per socket at the largest step held")
    if drawn:
        right.legend(fontsize="small")
    else:  # no step held, or the tool read no memory
        right.text(0.5, 0.5, "not measured", ha="center", va="center", transform=right.transAxes)
    return _save(fig, out_dir, "sockets")


def _soak_overview(results: Results, out_dir: Path) -> str | None:
    """Every complete soak of the run on one chart (loadtests/soak/charts.py's overview)."""
    runs = []
    for soak in results.soaks:
        samples = read_samples(out_dir / soak["dir"] / "samples.jsonl")
        if soak.get("status") != "complete" or not samples:
            continue
        plan = soak["plan"]
        timeline = Timeline(soak["churn_started"], soak["churn_ended"], plan["warmup"], plan["window"])
        label = (
            soak["target"]
            if soak.get("profile", "default") == "default"
            else f"{soak['target']} · {soak['profile']}"
        )
        runs.append((label, samples, timeline))
    if not runs:
        return None
    path = soak_charts.draw_overview(runs, out_dir / CHART_DIR / "soak.png")
    return f"{CHART_DIR}/{path.name}"
