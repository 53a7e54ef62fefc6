"""One PNG chart per resource over the soak's time (matplotlib, Agg backend: no display needed).

The x axis is minutes since the first sample; the phases are shaded (baseline, warm-up, judged
churn, settle, after) so a reader sees which samples each rule compares; the dashed line is what
the verdict allows. Resident memory gets a second panel with each server process on its own line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: renders to files, never to a screen

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from loadtests.soak import verdict
from loadtests.soak.verdict import Resource, Timeline

CHART_DIR = "charts"
DPI = 110
MIB = 2**20
SHADES = {  # phase → (colour, legend label)
    "prime": ("#f2f2f2", "prime and quiet (not judged)"),
    "baseline": ("#dddddd", "baseline (before the churn)"),
    "warmup": ("#fff2cc", "churn, warm-up (not judged)"),
    "churn": ("#e8f0fb", "churn, judged"),
    "settle": ("#f4e1f7", "settle (not judged)"),
    "after": ("#dff3e0", "after (judged)"),
}


def _scale(resource: Resource) -> float:
    return MIB if resource.unit == "MiB" else 1.0


def _phase_spans(samples: Sequence[dict[str, Any]], timeline: Timeline) -> list[tuple[str, float, float]]:
    """(shade, start, end) in seconds on the samples' clock."""
    if not samples:
        return []
    first, last = samples[0]["t"], samples[-1]["t"]
    primed = [s["t"] for s in samples if s["phase"] == "baseline"]
    baseline_start = primed[0] if primed else first
    warm_end = min(timeline.churn_started + timeline.warmup, timeline.churn_ended)
    settled = [s["t"] for s in samples if s["phase"] == "after"]
    after_start = settled[0] if settled else last
    spans = [
        ("prime", first, baseline_start),
        ("baseline", baseline_start, timeline.churn_started),
        ("warmup", timeline.churn_started, warm_end),
        ("churn", warm_end, timeline.churn_ended),
        ("settle", timeline.churn_ended, after_start),
        ("after", after_start, last),
    ]
    return [(shade, start, end) for shade, start, end in spans if end > start]


def _shade(ax: Axes, spans: Sequence[tuple[str, float, float]]) -> None:
    for shade, start, end in spans:
        colour, label = SHADES[shade]
        ax.axvspan(start / 60, end / 60, color=colour, label=label, zorder=0)


def _allowed_line(ax: Axes, found: verdict.Verdict | None, resource: Resource, timeline: Timeline) -> None:
    if found is None or found.allowed is None:
        return
    scale = _scale(resource)
    if resource.rule == "growth":
        start = (timeline.churn_ended - timeline.window) / 60
        ax.hlines(found.allowed / scale, start, timeline.churn_ended / 60, colors="#c0392b",
                  linestyles="dashed", label="allowed (+5 % on the first judged window)")  # fmt: skip
    elif resource.rule == "bounded":
        start = (timeline.churn_started + timeline.warmup) / 60
        label = "allowed in the judged churn (peak before its warm-up's end + tolerance)"
        ax.hlines(found.allowed / scale, start, timeline.churn_ended / 60, colors="#c0392b",
                  linestyles="dashed", label=label)  # fmt: skip
    else:
        label = "allowed after the churn: " + ("none" if resource.rule == "none" else "baseline + tolerance")
        ax.axhline(found.allowed / scale, color="#c0392b", linestyle="dashed", label=label)


def _series(samples: Sequence[dict[str, Any]], key: str, scale: float) -> tuple[list[float], list[float]]:
    # A resource the samples lack (taken before it was probed) has no chart.
    points = [(s["t"] / 60, s["totals"][key] / scale) for s in samples if key in (s.get("totals") or {})]
    return [x for x, _ in points], [y for _, y in points]


def _headroom(ax: Axes, line: float) -> None:
    """Keep the allowed line inside the axes, clear of the edges."""
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, line * 0.95), max(high, line * 1.05))


def _per_process(samples: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """RSS of each process of each app container, labelled ``container pid command``."""
    lines: dict[str, tuple[list[float], list[float]]] = {}
    for sample in samples:
        for container, found in (sample.get("containers") or {}).items():
            for process in found["processes"]:
                label = f"{container} pid {process['pid']} ({_short(process['command'])})"
                xs, ys = lines.setdefault(label, ([], []))
                xs.append(sample["t"] / 60)
                ys.append(process["rss_bytes"] / MIB)
    return lines


def _short(command: str) -> str:
    if "metrics_exporter" in command:
        return "metrics exporter"
    if "resource_tracker" in command:
        return "resource tracker"
    if "spawn_main" in command or "fork" in command:
        return "worker"
    words = command.split()
    program = words[0].rsplit("/", 1)[-1] if words else "?"
    if program.startswith("python") and len(words) > 1:
        return words[1].rsplit("/", 1)[-1]
    return program


def draw(samples: Sequence[dict[str, Any]], timeline: Timeline, out: Path, title: str = "") -> list[Path]:
    """Every resource's chart under ``out/charts``; the paths written."""
    (out / CHART_DIR).mkdir(parents=True, exist_ok=True)
    verdicts = {v.resource: v for v in verdict.judge(samples, timeline)}
    spans = _phase_spans(samples, timeline)
    written = []
    for resource in verdict.RESOURCES:
        xs, ys = _series(samples, resource.key, _scale(resource))
        if not xs:
            continue
        rss = resource.key == "rss_bytes"
        fig, axes = plt.subplots(
            2 if rss else 1, 1, figsize=(9, 7.5 if rss else 4.2), sharex=True, squeeze=False
        )
        ax = axes[0][0]
        _shade(ax, spans)
        ax.plot(xs, ys, color="#1f4e79", marker=".", label="total" if rss else "sampled")
        _allowed_line(ax, verdicts.get(resource.key), resource, timeline)
        ax.set_ylabel(resource.unit or "count")  # the resource is named in the title
        found = verdicts.get(resource.key)
        if not rss:  # counts from 0; memory zoomed in, so that 5 % shows
            ax.set_ylim(bottom=0)
        if found is not None and found.allowed is not None:
            _headroom(ax, found.allowed / _scale(resource))
        ax.grid(alpha=0.3)
        outcome = {True: "pass", False: "FAIL", None: "not judged"}[found.passed if found else None]
        ax.set_title(f"{title + ': ' if title else ''}{resource.label} — {outcome}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if rss:
            low = axes[1][0]
            _shade(low, spans)
            colours = plt.get_cmap("tab20").colors
            for i, (label, (pxs, pys)) in enumerate(sorted(_per_process(samples).items())):
                low.plot(pxs, pys, linewidth=1, label=label, color=colours[i % len(colours)])
            low.set_ylabel("Resident memory per process (MiB)")
            low.set_ylim(bottom=0)
            low.grid(alpha=0.3)
            handles, labels = low.get_legend_handles_labels()
            keep = [(h, lab) for h, lab in zip(handles, labels, strict=True) if "pid" in lab]
            low.legend([h for h, _ in keep], [lab for _, lab in keep], fontsize=6, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0))  # fmt: skip
        axes[-1][0].set_xlabel("minutes since the first sample")
        fig.tight_layout()
        path = out / CHART_DIR / f"soak-{resource.key}.png"
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)
    return written


# The overview's panels: memory as the growth rule sees it, then what a connection leaves behind.
OVERVIEW = ("rss_bytes", "websocket_connections", "asyncio_tasks", "fds_without_pools")


def _growth_series(samples: Sequence[dict[str, Any]], timeline: Timeline) -> tuple[list[float], list[float]]:
    """Resident memory in the judged churn, in % over the median of its first window (what the growth
    rule compares)."""
    first = timeline.churn_started + timeline.warmup
    reference = verdict.median(
        verdict.values(samples, "rss_bytes", phase="churn", start=first, end=first + timeline.window)
    )
    if not reference:
        return [], []
    points = [
        ((s["t"] - timeline.churn_started) / 60, 100 * (s["totals"]["rss_bytes"] / reference - 1))
        for s in samples
        if "rss_bytes" in (s.get("totals") or {}) and first <= s["t"] <= timeline.churn_ended
    ]
    return [x for x, _ in points], [y for _, y in points]


def draw_overview(runs: Sequence[tuple[str, Sequence[dict[str, Any]], Timeline]], path: Path) -> Path:
    """Several soaks side by side: a panel per resource of ``OVERVIEW``, a line per run, on minutes
    since the run's churn started (the churn's end is the dotted line)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    colours = plt.get_cmap("tab10").colors
    for ax, key in zip(axes.flat, OVERVIEW, strict=True):
        resource = verdict.BY_KEY[key]
        for i, (label, samples, timeline) in enumerate(runs):
            if key == "rss_bytes":
                xs, ys = _growth_series(samples, timeline)
            else:
                xs, ys = _series(samples, key, _scale(resource))
                xs = [x - timeline.churn_started / 60 for x in xs]
            ax.plot(xs, ys, linewidth=1, color=colours[i % len(colours)], label=label)
            ax.axvline((timeline.churn_ended - timeline.churn_started) / 60, color="grey", linestyle=":")
        if key == "rss_bytes":
            ax.axhline(
                100 * verdict.MAX_RSS_GROWTH, color="#c0392b", linestyle="dashed", label="allowed growth"
            )
            ax.set_title(
                "Resident memory, app containers, in the judged churn:\n% over its first window", fontsize=10
            )
            ax.set_ylabel("%")
        else:
            ax.set_title(resource.label, fontsize=10)
            ax.set_ylabel("count")
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minutes since the churn started")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
