"""The server's side of a measured run, from the app's own ``/metrics``.

Before and after each run the bench reads ``/metrics`` of every app container (core/metrics_exporter.py:
one exporter per container, summed over its processes) and keeps the difference:

- per route, the requests Django answered and their time as Django's first middleware measured it
  (core/middleware.py): from the request reaching Django to its response, without Nginx, the
  server's own parsing, or the time a request waited for a worker;
- the CPU seconds of the server's processes (workers and supervisors, exited ones included), so a
  request's cost in CPU can be set beside its rate; and the app containers' own CPU account (their
  cgroups), which needs no exporter: with it, runs with ``METRICS=0`` have a CPU cost too, and the
  cost of the metrics themselves shows as a difference of CPU per request, which a busy machine
  blurs far less than a difference of requests per second;
- WebSocket frames in and out, and the chat's fan-out time from a room broadcast to each socket's
  send (the client's figure adds the layer's hand-off to the socket and the way back to Locust).

Beside Locust's or wrk's figures, the report then says how much of a latency is Django's, and what
a request costs in CPU per variant. Quantiles come from the histogram's buckets, interpolated within
a bucket the way Prometheus' ``histogram_quantile`` does: as coarse as the buckets
(core.metrics.LATENCY_BUCKETS).
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "realtime_django_"
REQUESTS = PREFIX + "http_requests_total"
DURATION = PREFIX + "http_request_duration_seconds"
FRAMES_RECEIVED = PREFIX + "websocket_frames_received_total"
FRAMES_SENT = PREFIX + "websocket_frames_sent_total"
FANOUT = PREFIX + "chat_fanout_delivery_seconds"
CPU = "process_cpu_seconds_total"


class CounterResetError(ValueError):
    """A counter went down between two scrapes: a container restarted during the run."""


Histogram = dict[float, float]  # upper bound (le) -> cumulative count


@dataclass
class Snapshot:
    """The series the bench uses, summed over the containers scraped."""

    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # by route
    durations: dict[str, Histogram] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    duration_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # by route
    fanout: Histogram = field(default_factory=lambda: defaultdict(float))
    frames_received: float = 0.0
    frames_sent: float = 0.0
    cpu_seconds: float = 0.0  # the server's processes, as the exporter reports them
    container_cpu_seconds: float = 0.0  # the app containers' cgroups: with or without the exporter
    scraped: int = 0  # the /metrics added (none: the app ran without the exporter, METRICS=0)

    def add(self, text: str) -> "Snapshot":
        """Add one container's scrape (the Prometheus text format) to this snapshot."""
        self.scraped += 1
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self._add_sample(sample.name, sample.labels, sample.value)
        return self

    def _add_sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        route = labels.get("route", "")
        if name == REQUESTS:
            self.requests[route] += value
        elif name == DURATION + "_bucket":
            self.durations[route][float(labels["le"])] += value
        elif name == DURATION + "_sum":
            self.duration_sums[route] += value
        elif name == FANOUT + "_bucket":
            self.fanout[float(labels["le"])] += value
        elif name == FRAMES_RECEIVED:
            self.frames_received += value
        elif name == FRAMES_SENT:
            self.frames_sent += value
        elif name == CPU:
            self.cpu_seconds += value


def snapshot(texts: Iterable[str], container_cpu_seconds: Iterable[float] = ()) -> Snapshot:
    """The sum of several containers' scrapes, and of their cgroups' CPU seconds."""
    total = Snapshot(container_cpu_seconds=sum(container_cpu_seconds))
    for text in texts:
        total.add(text)
    return total


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as Prometheus' ``histogram_quantile`` computes
    it: linear within the bucket it falls in; the highest finite bound when it falls in ``+Inf``.
    None when the histogram is empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _increase(after: float, before: float, what: str) -> float:
    if after < before:
        raise CounterResetError(
            f"{what} went from {before:g} to {after:g}: a container restarted during the run"
        )
    return after - before


def _histogram_increase(after: Histogram, before: Histogram, what: str) -> Histogram:
    return {le: _increase(count, before.get(le, 0.0), what) for le, count in after.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def difference(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """What happened between two snapshots: per route (with any request), the requests and Django's
    time for them; the CPU seconds; frames; fan-out deliveries (only the containers' CPU when no
    /metrics were read). Raises ``CounterResetError``."""
    container_cpu = _increase(after.container_cpu_seconds, before.container_cpu_seconds, "containers' CPU")
    if not after.scraped:
        return {"container_cpu_seconds": round(container_cpu, 3)}
    routes: dict[str, dict[str, float | None]] = {}
    for route, count in after.requests.items():
        requests = _increase(count, before.requests.get(route, 0.0), f"requests of {route!r}")
        if requests <= 0:
            continue
        buckets = _histogram_increase(after.durations.get(route, {}), before.durations.get(route, {}), route)
        seconds = _increase(after.duration_sums.get(route, 0.0), before.duration_sums.get(route, 0.0), route)
        timed = max(buckets.values(), default=0.0)
        routes[route] = {
            "requests": requests,
            "mean_ms": _ms(seconds / timed) if timed else None,
            "p50_ms": _ms(histogram_quantile(0.50, buckets)),
            "p99_ms": _ms(histogram_quantile(0.99, buckets)),
        }
    fanout = _histogram_increase(after.fanout, before.fanout, "fan-out deliveries")
    figures: dict[str, Any] = {
        "routes": routes,
        "cpu_seconds": round(_increase(after.cpu_seconds, before.cpu_seconds, "CPU seconds"), 3),
        "container_cpu_seconds": round(container_cpu, 3),
        "frames_received": _increase(after.frames_received, before.frames_received, "frames received"),
        "frames_sent": _increase(after.frames_sent, before.frames_sent, "frames sent"),
    }
    deliveries = max(fanout.values(), default=0.0)
    if deliveries:
        figures["fanout"] = {
            "deliveries": deliveries,
            "p50_ms": _ms(histogram_quantile(0.50, fanout)),
            "p99_ms": _ms(histogram_quantile(0.99, fanout)),
        }
    return figures


def cpu_ms_per_request(server: Mapping[str, Any], requests: float, key: str = "cpu_seconds") -> float | None:
    """CPU milliseconds per request the client completed (None without either): the server's
    processes' (``cpu_seconds``), or the app containers' (``container_cpu_seconds``)."""
    cpu = server.get(key)
    if cpu is None or requests <= 0:
        return None
    return cpu * 1000 / requests
