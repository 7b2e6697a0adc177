"""Build and start the C reference firmware: on the host (a process on a pty) or on an
emulated Cortex-M3 (QEMU mps2-an385, UART on a pty). Imported by the firmware tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "firmware_bridge" / "mcu_reference"
QEMU_TOOLS = ("qemu-system-arm", "arm-none-eabi-gcc")


def missing_qemu_tools() -> str | None:
    """Why the QEMU build cannot run here, or None."""
    missing = [t for t in (*QEMU_TOOLS, "make") if shutil.which(t) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (apt-get install qemu-system-arm "
            "gcc-arm-none-eabi libnewlib-arm-none-eabi; scripts/test.sh does)"
        )
    return None


def build(out: Path, target: str) -> Path:
    """``make -C mcu_reference <target>`` into ``out``; returns the build directory."""
    r = subprocess.run(
        ["make", "-s", "-C", str(SRC), f"B={out}", target], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@contextmanager
def host_mcu(binary: Path, device_id: str, interval_ms: int = 50) -> Iterator[str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([str(binary), device_id, str(interval_ms)], stdin=master, stdout=master)
    os.close(master)
    try:
        yield os.ttyname(slave)
    finally:
        proc.terminate()
        proc.wait(5)
        os.close(slave)


def qemu_command(elf: Path, *extra: str) -> list[str]:
    return ["qemu-system-arm", "-M", "mps2-an385", "-nographic", "-monitor", "none",
            "-serial", "pty", *extra, "-kernel", str(elf)]  # fmt: skip


@contextmanager
def qemu_mcu(elf: Path, *extra: str) -> Iterator[str]:
    """Boot the firmware in QEMU; yields the pty path of its UART."""
    proc = subprocess.Popen(
        qemu_command(elf, *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        path = None
        while path is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"qemu exited: {proc.wait(5)}")
            m = re.search(r"(/dev/pts/\d+)", line)
            if m:
                path = m.group(1)
        assert path, "qemu did not print its pty"
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
