"""The reference firmware on an emulated ARM Cortex-M3 (QEMU mps2-an385), UART on a pty:
the gateway's bridge, unchanged, runs readings, an actuator, a model load and inferences
on it; the same C passes the protocol vectors on the emulated core."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from c_firmware import build, missing_qemu_tools, qemu_mcu
from c_mcu_journey import run_journey

_why = missing_qemu_tools()
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")


@pytest.fixture(scope="module")
def arm_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("mcu-arm"), "qemu")


def test_make_qemu_builds_within_the_declared_budget(arm_build: Path) -> None:
    elf = arm_build / "arm" / "mcu.elf"
    syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True).stdout
    values = {p[2]: int(p[0], 16) for p in (ln.split() for ln in syms.splitlines()) if len(p) == 3}
    assert values["_flash_used"] <= 256 * 1024  # code + constants + two 32 KB model slots
    assert values["_ram_used"] <= 64 * 1024  # data + 16 KB arena + stack
    header = subprocess.run(
        ["arm-none-eabi-readelf", "-h", str(elf)], capture_output=True, text=True
    )
    assert "ARM" in header.stdout


def test_protocol_vectors_pass_on_the_cortex_m3(arm_build: Path) -> None:
    r = subprocess.run(
        ["qemu-system-arm", "-M", "mps2-an385", "-nographic", "-monitor", "none", "-serial",
         "stdio", "-semihosting-config", "enable=on,target=native", "-kernel",
         str(arm_build / "arm" / "vectors_check.elf")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout


async def test_gateway_bridge_drives_the_firmware_in_qemu(
    arm_build: Path, tiny_model: bytes
) -> None:
    with qemu_mcu(arm_build / "arm" / "mcu.elf") as port:
        await run_journey(port, "qemu-m3-0001", tiny_model, min_readings=10)
