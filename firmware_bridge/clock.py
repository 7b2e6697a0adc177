"""Maps an MCU's millisecond clock (u32, since boot) onto gateway epoch time.

Each HELLO/HEARTBEAT gives a sample ``offset = gateway_time - mcu_ms/1000``. Transmit and
scheduling delays only ever make the offset larger, so the smallest offset of the recent
samples is the best estimate (the NTP "minimum delay" filter). A window of recent samples,
rather than all of them, lets the estimate follow slow crystal drift.
"""

from __future__ import annotations

from collections import deque

_WRAP = 1 << 32
_HALF = 1 << 31


class ClockMap:
    def __init__(self, window: int = 16) -> None:
        self._offsets: deque[float] = deque(maxlen=window)
        self._last_raw: int | None = None
        self._last_unwrapped = 0

    def reset(self) -> None:
        self._offsets.clear()
        self._last_raw = None
        self._last_unwrapped = 0

    def _unwrap(self, mcu_ms: int) -> int:
        if self._last_raw is None:
            return mcu_ms
        diff = (mcu_ms - self._last_raw) % _WRAP
        if diff >= _HALF:
            diff -= _WRAP
        return self._last_unwrapped + diff

    def observe(self, mcu_ms: int, gateway_time: float) -> None:
        unwrapped = self._unwrap(mcu_ms)
        self._last_raw = mcu_ms
        self._last_unwrapped = unwrapped
        self._offsets.append(gateway_time - unwrapped / 1000.0)

    @property
    def synced(self) -> bool:
        return bool(self._offsets)

    def to_gateway(self, mcu_ms: int, fallback: float) -> float:
        """Gateway epoch seconds for an MCU timestamp (``fallback`` before any sample)."""
        if not self._offsets:
            return fallback
        return self._unwrap(mcu_ms) / 1000.0 + min(self._offsets)
