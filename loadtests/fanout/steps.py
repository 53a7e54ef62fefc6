"""The step logic of a fan-out throughput run, free of any I/O: the rates to step through, what a
step measured, whether it held, and the sustained figure of a run."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Below this many deliveries a step's p99 is one or two samples: not a percentile.
MIN_DELIVERIES = 100


def geometric_rates(start: float, factor: float, stop: float) -> list[float]:
    """``start``, ``start * factor``, ... up to ``stop`` (included): messages/s of each step."""
    if not (start > 0 and factor > 1 and stop >= start) or not all(map(math.isfinite, (start, factor, stop))):
        raise ValueError(f"rates need 0 < start <= stop and factor > 1, got {start}, {factor}, {stop}")
    rates = []
    rate = start
    while rate <= stop * (1 + 1e-9):
        rates.append(round(rate, 3))
        rate *= factor
    return rates


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (``share`` in 0..1); 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(share * len(ordered)))
    return float(ordered[rank - 1])


@dataclass
class StepResult:
    """What one step measured, over its measurement window (the settle before it is not counted)."""

    rate: float  # messages/s asked of the senders
    senders: int
    seconds: float  # the measurement window
    messages: int  # sent within the window
    expected: int  # deliveries those messages owe (members of the sender's room)
    deliveries: int  # received, of those messages
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # error frames and send failures, by code
    closes: dict[str, int] = field(default_factory=dict)  # sockets the server closed, by reason
    passed: bool = False
    why: str = ""  # why the step did not hold
    # CPU cores busy over the measurement window (loadtests/fanout/cpu.py): the whole machine's, and
    # the generator's own share of them; None when not read.
    machine_cores: float | None = None
    generator_cores: float | None = None

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.deliveries)

    @property
    def failures(self) -> int:
        return self.missing + sum(self.errors.values()) + sum(self.closes.values())

    @property
    def offered_mps(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def offered_dps(self) -> float:
        return self.expected / self.seconds if self.seconds > 0 else 0.0

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "missing": self.missing,
            "failures": self.failures,
            "offered_mps": round(self.offered_mps, 2),
            "offered_dps": round(self.offered_dps, 1),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StepResult":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in names})


def summarize_latencies(step: StepResult, latencies_ms: Iterable[float]) -> StepResult:
    ordered = sorted(latencies_ms)
    step.p50_ms = round(percentile(ordered, 0.50), 2)
    step.p95_ms = round(percentile(ordered, 0.95), 2)
    step.p99_ms = round(percentile(ordered, 0.99), 2)
    step.max_ms = round(ordered[-1], 2) if ordered else 0.0
    return step


def judge(step: StepResult, threshold_ms: float) -> StepResult:
    """A step holds when nothing failed (no error frame, no close, every delivery arrived) and its
    p99 is within ``threshold_ms``."""
    reasons = []
    if step.errors:
        reasons.append("errors " + ", ".join(f"{k} x{v}" for k, v in sorted(step.errors.items())))
    if step.closes:
        reasons.append("closed " + ", ".join(f"{k} x{v}" for k, v in sorted(step.closes.items())))
    if step.missing:
        reasons.append(f"{step.missing} deliveries missing")
    if step.deliveries < MIN_DELIVERIES:
        reasons.append(f"only {step.deliveries} deliveries (< {MIN_DELIVERIES})")
    if step.p99_ms > threshold_ms:
        reasons.append(f"p99 {step.p99_ms:g} ms > {threshold_ms:g} ms")
    step.passed = not reasons
    step.why = "; ".join(reasons)
    return step


def sustained(steps: Sequence[StepResult]) -> StepResult | None:
    """The step with the most deliveries/s among those before the first that did not hold."""
    held: list[StepResult] = []
    for step in steps:
        if not step.passed:
            break
        held.append(step)
    return max(held, key=lambda s: s.deliveries_per_s, default=None)
