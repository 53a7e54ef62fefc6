"""Repeated runs reduced to what the report shows: the median, with the lowest and highest run."""

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """Median of the runs, with min and max: a run-to-run range, not a confidence interval."""

    median: float
    low: float
    high: float
    count: int

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.count}


def spread(values: Iterable[float]) -> Spread:
    """The spread of measured values; refuses an empty list and NaN or infinite values."""
    numbers = [float(value) for value in values]
    if not numbers:
        raise ValueError("no measured values")
    bad = [value for value in numbers if not math.isfinite(value)]
    if bad:
        raise ValueError(f"not a measured value: {bad[0]!r}")
    return Spread(statistics.median(numbers), min(numbers), max(numbers), len(numbers))


def ratio(value: float, reference: float) -> float | None:
    """``value / reference``, or None when there is no usable reference."""
    if not math.isfinite(value) or not math.isfinite(reference) or reference <= 0:
        return None
    return value / reference


def at_ceiling(value: float, ceiling: float, threshold: float) -> bool:
    """True when ``value`` reaches ``threshold`` x ``ceiling``: the generator, not the server, set it."""
    share = ratio(value, ceiling)
    return share is not None and share >= threshold
