"""A circuit breaker for one remote target (the cloud Triton, a serverless endpoint).

Closed: requests flow; ``failure_threshold`` consecutive failures or timeouts open it.
Open: requests are refused at once (the router falls back without waiting on a dead
link) until ``reset_timeout_s`` has passed. Half-open: one probe request at a time is let
through; its success closes the breaker, its failure opens it again for another period.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.opened_count = 0
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            return HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a request go to the target now? In half-open state only one probe may."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probe_in_flight:
            self._state = HALF_OPEN
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        self._state = CLOSED
        self.last_error = None

    def record_failure(self, error: str = "") -> None:
        self._probe_in_flight = False
        self.last_error = error or self.last_error
        if self._state == HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold and self._state == CLOSED:
            self._open()

    def release(self) -> None:
        """A let-through request ended without saying anything about the link (e.g. a
        model error answered by a healthy server): free the probe slot."""
        self._probe_in_flight = False
        if self._state == HALF_OPEN:
            self._state = CLOSED
            self._failures = 0

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self.opened_count += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state,
            "consecutive_failures": self._failures,
            "opened_count": self.opened_count,
            "last_error": self.last_error,
        }
