"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog's "Full Jitter"). Pure."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """The n-th delay (n from 0) is drawn uniformly from ``[0, min(cap, initial * factor**n)]``.

    ``reset()`` after a connection succeeded starts over from ``initial``. ``uniform`` is
    injectable so tests can check the bounds without randomness.
    """

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 10.0,
        factor: float = 2.0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if initial <= 0 or cap < initial or factor < 1:
            raise ValueError("backoff needs 0 < initial <= cap and factor >= 1")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.attempt = 0
        self._uniform = uniform

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before reconnect attempt ``attempt`` (0-based)."""
        # Compare exponents rather than computing factor**attempt, which overflows for long outages.
        bound = self.initial
        for _ in range(attempt):
            bound *= self.factor
            if bound >= self.cap:
                return self.cap
        return min(bound, self.cap)

    def next_delay(self) -> float:
        delay = self._uniform(0.0, self.ceiling(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
