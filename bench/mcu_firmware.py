"""The reference firmware on an emulated Cortex-M3: inference cycles and wire time.

    .venv/bin/python bench/mcu_firmware.py [--rows 280]

Builds firmware_bridge/mcu_reference for mps2-an385 (make qemu), boots it in QEMU with
``-icount shift=0`` (virtual time advances 1 ns per guest instruction, so the MCU's own
clock counts instructions: cycles on a Cortex-M3 at about one instruction per cycle), loads
the fixture model through the gateway's bridge and runs ``--rows`` inferences.

Reported, each against its baseline in the same run:
  1. MCU compute per row (instructions ~ cycles, and microseconds at the board's 25 MHz)
     against the same model on the gateway's host runtime (LiteRT, one row per call).
  2. Wire time at 115200 baud (10 bits per byte) of one single-row INFER exchange
     (request + response + both ACKs, COBS-framed) against the MCU compute time: which one
     bounds an MCU inference.
  3. Wire time of the model load (BEGIN, chunks, COMMIT, statuses, ACKs) at 115200 baud.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_bridge.framing import encode_frame  # noqa: E402
from firmware_bridge.manager import MCUManager  # noqa: E402
from firmware_bridge.messages import (  # noqa: E402
    InferReq,
    InferResp,
    ModelLoadBegin,
    ModelLoadChunk,
    ModelLoadCommit,
    ModelLoadStatusMsg,
    MsgType,
)

MODEL = ROOT / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"
BAUD = 115200
BOARD_HZ = 25_000_000
ICOUNT_SHIFT = 0  # 2**0 ns of virtual time per instruction


def wire_s(n_bytes: int) -> float:
    return n_bytes * 10 / BAUD  # 8N1: start + 8 data + stop bits


def frame_len(msg: object) -> int:
    return len(encode_frame(msg.TYPE, 0, msg.pack()))  # type: ignore[attr-defined]


ACK = len(encode_frame(MsgType.ACK, 0))


def rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.column_stack(
        [rng.normal(22, 5, n), rng.uniform(40, 90, n), rng.gamma(2, 6, n), rng.uniform(0.5, 4, n)]
    ).astype(np.float32)


def host_runtime_us(model: bytes, x: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model, num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    s, z = i["quantization"]
    q = np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)
    for row in q[:20]:  # warm up
        it.set_tensor(i["index"], row.reshape(1, -1))
        it.invoke()
    t0 = time.perf_counter()
    for row in q:
        it.set_tensor(i["index"], row.reshape(1, -1))
        it.invoke()
        it.get_tensor(o["index"])
    return (time.perf_counter() - t0) / len(q) * 1e6


async def on_mcu(elf: Path, model: bytes, x: np.ndarray) -> tuple[int, float, float]:
    proc = subprocess.Popen(
        ["qemu-system-arm", "-M", "mps2-an385", "-nographic", "-monitor", "none",
         "-icount", f"shift={ICOUNT_SHIFT},sleep=on", "-serial", "pty", "-kernel", str(elf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = None
        while port is None:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("qemu exited before it opened its pty")
            m = re.search(r"(/dev/pts/\d+)", line)
            port = m.group(1) if m else None
        mgr = MCUManager([port], ack_timeout=0.2)
        await mgr.start()
        try:
            await mgr.wait_for_device("qemu-m3-0001", 20)
            t0 = time.monotonic()
            await mgr.load_model("qemu-m3-0001", "vent", model, timeout=60)
            load_wall = time.monotonic() - t0
            await mgr.infer_timed("qemu-m3-0001", "vent", x[:14])  # warm: plan prepared
            t0 = time.monotonic()
            _, mcu_us = await mgr.infer_timed("qemu-m3-0001", "vent", x, timeout=60)
            infer_wall = time.monotonic() - t0
        finally:
            await mgr.stop()
        return mcu_us, load_wall, infer_wall
    finally:
        proc.terminate()
        proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=280)
    args = ap.parse_args()
    missing = [t for t in ("qemu-system-arm", "arm-none-eabi-gcc", "make") if not shutil.which(t)]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (see scripts/test.sh)")
        return 0
    model = MODEL.read_bytes()
    x = rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["make", "-s", "-C", str(ROOT / "firmware_bridge" / "mcu_reference"), f"B={tmp}", "qemu"],
            check=True, capture_output=True,
        )  # fmt: skip
        mcu_us, load_wall, infer_wall = asyncio.run(on_mcu(Path(tmp) / "arm" / "mcu.elf", model, x))
    host_us = host_runtime_us(model, x)
    # MCU clock under -icount shift=0: 1 us of MCU time = 1000 instructions
    instr = mcu_us * 1000 / (2**ICOUNT_SHIFT) / args.rows
    at_board_us = instr / (BOARD_HZ / 1e6)
    print(
        f"model: {MODEL.name} ({len(model)} bytes, sha256 {hashlib.sha256(model).hexdigest()[:12]})"
    )
    print(f"1. compute per row, {args.rows} rows")
    print(f"   MCU (QEMU -icount): {instr:,.0f} instructions (~cycles on a Cortex-M3 at ~1 IPC)")
    print(f"   = {at_board_us:,.1f} us at the board's 25 MHz")
    print(
        f"   baseline host LiteRT: {host_us:.2f} us per row;  ratio MCU/host {at_board_us / host_us:,.0f}x"
    )
    one = InferReq(1, 1, "vent", tuple(x[0].tolist()))
    resp = InferResp(1, 0, 1, 0, (0.5, 0.5))
    exchange = frame_len(one) + frame_len(resp) + 2 * ACK
    print("2. one single-row INFER exchange on the wire at 115200 baud")
    print(
        f"   {exchange} bytes = {wire_s(exchange) * 1e3:.2f} ms;  MCU compute {at_board_us / 1e3:.3f} ms;"
        f"  ratio wire/compute {wire_s(exchange) * 1e6 / at_board_us:,.1f}x"
    )
    chunk = 256 - 6 - ModelLoadChunk.OVERHEAD
    n_chunks = -(-len(model) // chunk)
    st = ModelLoadStatusMsg(1, 0, 0, "vent")
    load_bytes = (
        frame_len(ModelLoadBegin(1, len(model), bytes(32), "vent")) + 2 * frame_len(st)
        + sum(frame_len(ModelLoadChunk(1, o, model[o : o + chunk])) for o in range(0, len(model), chunk))
        + frame_len(ModelLoadCommit(1)) + (n_chunks + 4) * ACK
    )  # fmt: skip
    print(
        f"3. model load: {n_chunks} chunks, {load_bytes} bytes on the wire = "
        f"{wire_s(load_bytes):.2f} s at 115200 baud (payload {len(model)} B, "
        f"x{load_bytes / len(model):.3f})"
    )
    print(
        f"   (QEMU's UART does not model the baud rate: load took {load_wall:.2f} s and "
        f"{args.rows} rows {infer_wall:.2f} s of wall time here)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
