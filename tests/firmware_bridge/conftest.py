"""Fixtures for the firmware bridge: the int8 model fixture, simulators, a manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcu_helpers import Collector, SimFactory

from farmiq_sim.mcu.simulator import FaultConfig, MCUSimulator
from firmware_bridge.manager import MCUManager

FIXTURE = Path(__file__).resolve().parents[2] / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"


@pytest.fixture(scope="session")
def tiny_model() -> bytes:
    return FIXTURE.read_bytes()


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
async def make_sim(tmp_path: Path) -> AsyncIterator[SimFactory]:
    sims: list[MCUSimulator] = []

    async def make(
        device_id: str = "barn-1", faults: FaultConfig | None = None, **kw: object
    ) -> MCUSimulator:
        kw.setdefault("reading_interval", 0.05)
        kw.setdefault("link_path", tmp_path / f"by-id-{device_id}")
        sim = MCUSimulator(device_id, faults=faults, seed=len(sims) + 1, **kw)  # type: ignore[arg-type]
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def manager(collector: Collector) -> AsyncIterator[MCUManager]:
    mgr = MCUManager(on_readings=collector, ack_timeout=0.05, offline_after=3.0)
    await mgr.start()
    yield mgr
    await mgr.stop()
