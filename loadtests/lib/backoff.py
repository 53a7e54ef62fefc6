"""Reconnect delays: exponential, capped, with jitter."""

import random
from collections.abc import Callable


class Backoff:
    """Delay before the next reconnect attempt: ``initial * factor**n`` capped at ``maximum``.

    Each delay is drawn between half and all of that value ("equal jitter"), because after a
    server restart thousands of sockets drop at the same moment; without jitter they would all
    come back in lock-step and the reconnect storm would look like a capacity problem.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 15.0,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempts)
        if ceiling < self.maximum:  # stop counting at the cap: factor**n would overflow in a long outage
            self.attempts += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
