"""Progress lines for a long run: which step, how far, and about how long is left.

The estimate starts from each step's planned time (run time plus start-up allowances) and is
corrected by how long the finished steps really took, so a slow machine soon gets honest figures.
"""

import sys
import time
from collections.abc import Callable
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``3725`` → ``"1h02m"``, ``250`` → ``"4m10s"``, ``35`` → ``"35s"``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    def __init__(
        self,
        steps: int,
        estimate: float,
        clock: Callable[[], float] = time.monotonic,
        out: TextIO = sys.stdout,
    ) -> None:
        self.steps = steps
        self.estimate = estimate
        self.clock = clock
        self.out = out
        self.started = clock()
        self.position = 0
        self.done_estimate = 0.0  # planned seconds of the finished (or skipped) steps
        self.done_actual = 0.0  # and how long the finished ones took
        self.timed_estimate = 0.0  # planned seconds of the finished ones only (skips took no time)
        self._current: tuple[float, float] | None = None  # (planned, started at)

    def seconds_left(self) -> float:
        remaining = max(0.0, self.estimate - self.done_estimate)
        speed = self.done_actual / self.timed_estimate if self.timed_estimate > 0 else 1.0
        return remaining * speed

    def begin(self, label: str, planned: float) -> None:
        self.position += 1
        elapsed = self.clock() - self.started
        self.out.write(
            f"[{self.position}/{self.steps}] {label} · {format_duration(elapsed)} elapsed, "
            f"about {format_duration(self.seconds_left())} left\n"
        )
        self.out.flush()
        self._current = (planned, self.clock())

    def end(self) -> None:
        if self._current is None:
            return
        planned, began = self._current
        self.done_estimate += planned
        self.timed_estimate += planned
        self.done_actual += self.clock() - began
        self._current = None

    def skip(self, planned: float) -> None:
        """A planned step that will not run (its stage failed)."""
        self.position += 1
        self.done_estimate += planned

    def extend(self, steps: int, planned: float) -> None:
        """More steps than planned (a stage run again)."""
        self.steps += steps
        self.estimate += planned

    def note(self, text: str) -> None:
        self.out.write(f"    {text}\n")
        self.out.flush()
