"""The protocol against a peer that is not our Python: the C reference MCU, built with cc."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import tty
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcu_helpers import Collector

from firmware_bridge.manager import MCUError, MCUManager

SRC = Path(__file__).resolve().parents[2] / "firmware_bridge" / "mcu_reference" / "mcu.c"

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no system C compiler")


@pytest.fixture(scope="module")
def mcu_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mcu") / "mcu"
    subprocess.run(
        ["cc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SRC)],
        check=True,
    )
    return out


@pytest.fixture
def c_mcu(mcu_binary: Path) -> Iterator[str]:
    """The C MCU on the master side of a pty; yields the slave path for the gateway."""
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([str(mcu_binary), "c-ref-7", "50"], stdin=master, stdout=master)
    os.close(master)
    try:
        yield os.ttyname(slave)
    finally:
        proc.terminate()
        proc.wait(5)
        os.close(slave)


async def test_c_mcu_hello_and_readings(c_mcu: str, collector: Collector) -> None:
    mgr = MCUManager([c_mcu], on_readings=collector, ack_timeout=0.05)
    await mgr.start()
    try:
        info = await mgr.wait_for_device("c-ref-7", 5)
        assert info.fw_version == "c-ref-1.0" and info.max_frame == 256
        deadline = time.monotonic() + 10
        while len(collector.readings) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        readings = collector.readings
        assert len(readings) >= 40
        assert {r.sensor for r in readings} == {"temperature_c", "humidity_pct"}
        assert not [k for k, n in Counter(collector.keys()).items() if n > 1]
        seqs = sorted(r.mcu_seq for r in readings)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost, nothing twice
        assert all(abs(r.timestamp - time.time()) < 3 for r in readings)
        # HEARTBEATs keep it online; the C firmware refuses what it does not implement
        await asyncio.sleep(1.2)
        assert mgr.devices()[0].online
        t0 = time.monotonic()
        with pytest.raises(MCUError, match="UNKNOWN_TYPE"):
            await mgr.send_actuator("c-ref-7", "fan", 1.0, "c-cmd", timeout=5)
        assert time.monotonic() - t0 < 2  # a NACK fails fast instead of timing out
    finally:
        await mgr.stop()


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
        finally:
            await mgr.stop()
