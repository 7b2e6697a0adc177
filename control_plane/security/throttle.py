"""Throttling of failed authentication, per source address.

After ``max_failures`` failures inside ``window_s`` seconds an address is locked out for
``lockout_s`` seconds: every request from it gets 429 without the key even being checked,
which turns online key guessing into a few attempts per minute. In-process state is enough
for a single control-plane replica; behind several replicas put the same limit in the proxy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class FailedAuthThrottle:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, source: str) -> float:
        """Seconds until ``source`` may try again (0 when it may try now)."""
        now = self._clock()
        with self._lock:
            until = self._locked_until.get(source)
            if until is None:
                return 0.0
            if until <= now:
                del self._locked_until[source]
                return 0.0
            return until - now

    def record_failure(self, source: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self._max_tracked:
                self._failures.clear()  # bounded memory under a spray of addresses
            q = self._failures.setdefault(source, deque())
            q.append(now)
            while q and q[0] < now - self.window_s:
                q.popleft()
            if len(q) >= self.max_failures:
                self._locked_until[source] = now + self.lockout_s
                q.clear()

    def record_success(self, source: str) -> None:
        with self._lock:
            self._failures.pop(source, None)
