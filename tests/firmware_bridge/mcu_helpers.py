"""Helpers shared by the firmware bridge tests (imported by name: the test dir is on sys.path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from firmware_bridge.messages import Reading
from firmware_bridge.simulator import MCUSimulator


class Collector:
    """on_readings callback that keeps everything it was given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, device_id: str, batch: list[Reading]) -> None:
        self.readings.extend(batch)

    def keys(self) -> list[tuple[str, int, int]]:
        return [(r.device_id, r.boot_id, r.mcu_seq) for r in self.readings]


SimFactory = Callable[..., Awaitable[MCUSimulator]]
