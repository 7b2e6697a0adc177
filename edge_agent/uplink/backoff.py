"""The agent's one back-off: exponential, capped, with optional jitter.

tenacity wraps a call in retries; the agent's loops are not calls to retry but waits
between rounds of their own (the outbox publisher waits on an event *or* the back-off;
the MCU loader re-scans which MCUs are online each round), so a ten-line delay sequence
is the shared piece, not a decorator.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first_s: float, max_s: float, factor: float = 2.0, jitter: float = 0.0):
        self.first_s = first_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._next = first_s

    def next(self) -> float:
        """The delay to wait now; the following one grows by ``factor`` up to ``max_s``."""
        delay = self._next
        self._next = min(self._next * self.factor, self.max_s)
        if self.jitter:
            delay *= 1.0 + random.uniform(-self.jitter, self.jitter)
        return delay

    def reset(self) -> None:
        self._next = self.first_s
