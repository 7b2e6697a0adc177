"""The protocol against a peer that is not our Python: the C reference firmware, host build."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from c_firmware import build, host_mcu
from c_mcu_journey import run_journey
from mcu_helpers import Collector

from firmware_bridge.manager import MCUManager

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None or shutil.which("make") is None, reason="no C compiler or make"
)


@pytest.fixture(scope="module")
def host_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("mcu-host"), "all")


@pytest.fixture
def c_mcu(host_build: Path) -> Iterator[str]:
    with host_mcu(host_build / "host" / "mcu", "c-ref-7", 50) as path:
        yield path


def test_c_protocol_code_passes_the_protocol_vectors(host_build: Path) -> None:
    r = subprocess.run([str(host_build / "host" / "vectors_check")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert " 0 failed" in r.stdout and "FAIL" not in r.stdout


async def test_c_mcu_whole_protocol(c_mcu: str, tiny_model: bytes) -> None:
    await run_journey(c_mcu, "c-ref-7", tiny_model, min_readings=40)


async def test_c_mcu_reintroduces_itself_to_a_new_gateway(c_mcu: str) -> None:
    for _ in range(2):  # two gateway sessions in a row on the same running MCU
        col = Collector()
        mgr = MCUManager([c_mcu], on_readings=col, ack_timeout=0.05)
        await mgr.start()
        try:
            await mgr.wait_for_device("c-ref-7", 5)
            deadline = time.monotonic() + 5
            while len(col.readings) < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(col.readings) >= 6
            await asyncio.sleep(1.2)  # HEARTBEATs keep it online
            assert mgr.devices()[0].online
        finally:
            await mgr.stop()
