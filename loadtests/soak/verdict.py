"""The soak's verdict per resource, from the samples alone (pure functions).

Four rules:

- **growth** (resident memory of the app containers): after the warm-up, memory may grow by at most
  ``MAX_RSS_GROWTH`` (5 %) while the churn goes on. Measured as the median of the samples in the
  first ``window`` seconds after the warm-up against the median of the samples in the last
  ``window`` seconds of the churn, so that one sample taken during a garbage collection or a burst of
  handshakes moves neither end.
- **baseline** (everything a connection holds: file descriptors, asyncio tasks, database
  connections in use, the channel layer's keys and group memberships, Nginx's connections): once
  the churn has stopped and the stack has had ``settle`` seconds, the median of the samples taken
  after that is at most the baseline (the median before the churn) plus a tolerance: the larger of
  an absolute allowance and a share of the baseline, stated per resource below with the reason.
- **none** (sockets left in CLOSE_WAIT): once the churn has settled, none is left, whatever the
  baseline held. The baseline is taken seconds after the priming clients left, and a server that
  holds closed connections for a while still holds some of them then: against that baseline, the
  same fault would pass.
- **bounded** (threads, the pools' connections to Redis and PostgreSQL): a pool that opens threads
  or connections on demand up to a bound and keeps them may grow past the baseline, but while the
  churn goes on it may not pass its peak before the end of the warm-up plus a tolerance (the median
  of the last ``window`` seconds of the churn is judged): once the pools are full, a count that
  still climbs under a steady load is a leak. Not after the churn: the churn ends with every
  client leaving at once, and the pools keep what that burst opened (shown in the verdict's
  detail).

Resources marked **shown** are charted and tabled but not judged, with the reason.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MAX_RSS_GROWTH = 0.05

# Sample phases, in order (loadtests/soak/run.py). ``prime`` and ``quiet``: before the baseline, not
# judged; ``settle``: churn over, not judged yet; ``after``: judged against the baseline.
PHASES = ("prime", "quiet", "baseline", "churn", "settle", "after")


@dataclass(frozen=True)
class Resource:
    key: str  # in a sample's totals
    label: str
    unit: str  # "MiB" (shown from bytes) or "" (a count)
    rule: str  # "growth", "baseline", "none", "bounded" or "shown"
    absolute: float = 0.0  # baseline rule: allowance above the baseline, in the resource's own count
    relative: float = 0.0  # baseline rule: allowance as a share of the baseline
    why: str = ""  # what the tolerance allows for, or why the resource is only shown


RESOURCES: tuple[Resource, ...] = (
    Resource("rss_bytes", "Resident memory, app containers", "MiB", "growth"),
    Resource(
        "fds_without_pools", "Open file descriptors but the pools' connections, app containers", "",
        "baseline", absolute=4, relative=0.02,
        why="a file or socket opened for a moment at the sampling instant",
    ),
    Resource(
        "close_wait", "Connections the peer closed and the server has not (CLOSE_WAIT), app containers",
        "", "none",
        why="a server closes its side as soon as it reads the peer's end",
    ),
    Resource(
        "backend_connections", "Connections to Redis and PostgreSQL (pools), app containers", "", "bounded",
        absolute=4, relative=0.25,
        why="connection pools open connections on demand up to their bound and keep them, so the peak "
        "before the end of the warm-up is the reference; a quarter more for a pool still filling (Redis' "
        "grows with the most layer calls at once, up to REDIS_MAX_CONNECTIONS per process)",
    ),
    Resource(
        "fds", "Open file descriptors, app containers", "", "shown",
        why="the sum of the two rows above: judged by their rules",
    ),
    Resource(
        "asyncio_tasks", "asyncio tasks, app processes", "", "baseline", absolute=2,
        why="a background task of the app (a membership renewal) running at the sampling instant",
    ),
    Resource(
        "threads", "Threads, app containers", "", "bounded", absolute=2,
        why="executors start threads on demand up to their bound and keep them, so the peak before the "
        "end of the warm-up is the reference; 2 more for a short-lived one at the sampling instant "
        "(a pool opening a connection)",
    ),
    Resource(
        "db_pool_in_use", "Database connections in use (pools)", "", "baseline", absolute=0,
        why="none: a request that ended has returned its connection",
    ),
    Resource(
        "db_pool_connections", "Database connections held by the pools", "", "shown",
        why="the pools keep idle connections up to their size for max_idle (10 min) by design",
    ),
    Resource(
        "websocket_connections", "Open WebSockets (app gauge)", "", "baseline", absolute=0,
        why="none: every session has ended",
    ),
    Resource(
        "layer_keys", "Channel-layer keys in Redis", "", "baseline", absolute=2,
        why="a process's own inbox key, which exists while a message waits in it",
    ),
    Resource(
        "group_memberships", "Group memberships in Redis", "", "baseline", absolute=0,
        why="none: a socket that left has left its room",
    ),
    Resource(
        "redis_used_memory_bytes", "Redis used memory", "MiB", "shown",
        why="the allocator keeps what it grew; the keys and memberships above are what must go",
    ),
    Resource(
        "nginx_connections", "Nginx client connections", "", "baseline", absolute=0,
        why="none: every client has gone",
    ),
    Resource(
        "nginx_upstream_connections", "Nginx upstream connections", "", "baseline", absolute=0,
        why="none: an idle upstream connection closes after 1 s (nginx/upstreams.conf.template)",
    ),
)  # fmt: skip
BY_KEY = {resource.key: resource for resource in RESOURCES}


@dataclass(frozen=True)
class Timeline:
    """When the churn ran, on the samples' clock, and the windows the verdict uses."""

    churn_started: float
    churn_ended: float
    warmup: float  # seconds after churn_started that are not judged
    window: float  # seconds of each median of the growth rule

    def problems(self) -> list[str]:
        judged = self.churn_ended - self.churn_started - self.warmup
        if judged < 2 * self.window:
            return [
                f"the churn after its warm-up ({judged:.0f} s) is shorter than two windows of "
                f"{self.window:.0f} s: the growth of memory cannot be judged"
            ]
        return []


@dataclass(frozen=True)
class Verdict:
    resource: str
    rule: str
    passed: bool | None  # None: not judged (shown only, or too few samples)
    baseline: float | None  # growth rule: the median after the warm-up
    end: float | None  # growth rule: the median at the end of the churn; baseline rule: after settle
    allowed: float | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def values(samples: Sequence[dict[str, Any]], key: str, *, phase: str | None = None,
           start: float = float("-inf"), end: float = float("inf")) -> list[float]:  # fmt: skip
    """``key``'s totals of the complete samples in ``phase`` taken between ``start`` and ``end``."""
    return [
        float(s["totals"][key])
        for s in samples
        if s.get("totals") and key in s["totals"]
        and (phase is None or s["phase"] == phase) and start <= s["t"] <= end
    ]  # fmt: skip


def median(found: Sequence[float]) -> float | None:
    return statistics.median(found) if found else None


def judge_growth(samples: Sequence[dict[str, Any]], resource: Resource, timeline: Timeline) -> Verdict:
    first = timeline.churn_started + timeline.warmup
    early = median(values(samples, resource.key, phase="churn", start=first, end=first + timeline.window))
    late = median(values(samples, resource.key, phase="churn", start=timeline.churn_ended - timeline.window))
    problems = timeline.problems()
    if early is None or late is None or problems:
        reason = "; ".join(problems) or "no complete sample in one of the two windows"
        return Verdict(resource.key, resource.rule, None, early, late, None, f"not judged: {reason}")
    allowed = early * (1 + MAX_RSS_GROWTH)
    growth = (late - early) / early if early else 0.0
    return Verdict(
        resource.key, resource.rule, late <= allowed, early, late, allowed,
        f"{growth:+.1%} from the first {timeline.window:.0f} s after the warm-up to the last "
        f"{timeline.window:.0f} s of the churn (at most {MAX_RSS_GROWTH:+.0%})",
    )  # fmt: skip


def judge_baseline(samples: Sequence[dict[str, Any]], resource: Resource) -> Verdict:
    """The baseline rule, and the none rule (the same comparison, against no baseline)."""
    before = median(values(samples, resource.key, phase="baseline"))
    after = median(values(samples, resource.key, phase="after"))
    if before is None or after is None:
        missing = "before the churn" if before is None else "after it settled"
        return Verdict(
            resource.key, resource.rule, None, before, after, None, f"not judged: no sample {missing}"
        )
    if resource.rule == "none":
        allowed = 0.0
        detail = f"{after:g} after the churn (none may be left; {before:g} before it)"
    else:
        allowed = before + max(resource.absolute, resource.relative * before)
        detail = f"{after:g} after the churn against {before:g} before it (at most {allowed:g})"
    return Verdict(resource.key, resource.rule, after <= allowed, before, after, allowed, detail)


def judge_bounded(samples: Sequence[dict[str, Any]], resource: Resource, timeline: Timeline) -> Verdict:
    early = values(samples, resource.key, end=timeline.churn_started + timeline.warmup)
    peak = max(early) if early else None
    late = median(values(samples, resource.key, phase="churn", start=timeline.churn_ended - timeline.window))
    if peak is None or late is None:
        missing = "before the end of the warm-up" if peak is None else "at the end of the churn"
        return Verdict(
            resource.key, resource.rule, None, peak, late, None, f"not judged: no sample {missing}"
        )
    allowed = peak + max(resource.absolute, resource.relative * peak)
    detail = (
        f"{late:g} in the last {timeline.window:.0f} s of the churn against a peak of {peak:g} "
        "before the end of its warm-up"
    )
    after = median(values(samples, resource.key, phase="after"))
    if after is not None and after != late:
        detail += f"; {after:g} after it (the pools keep what the clients' leaving at once opened)"
    return Verdict(resource.key, resource.rule, late <= allowed, peak, late, allowed, detail)


def judge(samples: Sequence[dict[str, Any]], timeline: Timeline) -> list[Verdict]:
    verdicts = []
    for resource in RESOURCES:
        if resource.rule == "growth":
            verdicts.append(judge_growth(samples, resource, timeline))
        elif resource.rule == "bounded":
            verdicts.append(judge_bounded(samples, resource, timeline))
        elif resource.rule in ("baseline", "none"):
            verdicts.append(judge_baseline(samples, resource))
        else:
            before = median(values(samples, resource.key, phase="baseline"))
            after = median(values(samples, resource.key, phase="after"))
            verdicts.append(
                Verdict(resource.key, resource.rule, None, before, after, None, f"shown only: {resource.why}")
            )
    return verdicts


def overall(verdicts: Sequence[Verdict]) -> bool | None:
    """True when every judged resource passed; False if one failed; None if nothing was judged."""
    judged = [v.passed for v in verdicts if v.passed is not None]
    if not judged:
        return None
    return all(judged)


def returned_to_baseline(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The baseline and bounded verdicts that failed (what the short soak in CI asserts is empty)."""
    return [v for v in verdicts if v.rule in ("baseline", "none", "bounded") and v.passed is False]
