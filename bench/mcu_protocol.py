"""MCU protocol benchmark: wire overhead and sustained frames/s through a pty.

    .venv/bin/python bench/mcu_protocol.py [--seconds 2]

1. Wire overhead: on-wire bytes per payload byte for 256-byte payloads (target <= 1.05).
2. Throughput through one pty (raw mode), 256-byte payloads, writer and reader threads:
   baseline = the same payload bytes written raw (no framing), counted in 256-byte units;
   framed   = COBS+CRC frames, decoded and CRC-checked by FrameDecoder on the other side.
3. Reliable frames/s: SerialLink (gateway) -> pty -> ReliableEndpoint (MCU side), every
   frame ACKed, window 8, compared with the framed one-way rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_bridge.framing import FrameDecoder, encode_frame
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import ModelLoadChunk, MsgType
from firmware_bridge.reliability import ReliableEndpoint

PAYLOAD = 256


def overhead() -> None:
    rnd = os.urandom(PAYLOAD)
    cases = {
        "random bytes": rnd,
        "all zero (COBS worst)": b"\x00" * PAYLOAD,
        "no zero bytes": bytes((i % 255) + 1 for i in range(PAYLOAD)),
    }
    print(f"== wire overhead, {PAYLOAD}-byte payloads (target <= 1.05)")
    for name, p in cases.items():
        wire = len(encode_frame(MsgType.MODEL_LOAD_CHUNK, 1, p))
        print(f"  {name:24s} {wire:4d} wire bytes  {wire / PAYLOAD:.4f} bytes/payload byte")


def pty_pair() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave


def pump(chunks: bytes, seconds: float, decode: bool) -> float:
    """Write ``chunks`` repeatedly into the master; return payloads/s seen on the slave."""
    master, slave = pty_pair()
    stop = threading.Event()
    count = [0]

    def reader() -> None:
        dec = FrameDecoder()
        got = 0
        while not stop.is_set():
            try:
                data = os.read(slave, 65536)
            except OSError:
                break
            if decode:
                count[0] += len(dec.feed(data))
            else:
                got += len(data)
                count[0] = got // PAYLOAD

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t0 = time.perf_counter()
    start_count = 0
    while time.perf_counter() - t0 < seconds:
        view = memoryview(chunks)
        while view:
            view = view[os.write(master, view) :]
    elapsed = time.perf_counter() - t0
    time.sleep(0.05)
    stop.set()
    os.write(master, b"\x00")
    t.join(1)
    os.close(master)
    os.close(slave)
    return (count[0] - start_count) / elapsed


async def reliable_rate(seconds: float) -> tuple[float, int]:
    master, slave = pty_pair()
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()

    def mcu_write(data: bytes) -> None:
        os.write(master, data)

    received = [0]
    mcu = ReliableEndpoint(mcu_write, lambda seq, msg: received.__setitem__(0, received[0] + 1))

    def readable() -> None:
        try:
            mcu.feed(os.read(master, 65536))
        except BlockingIOError:
            pass

    loop.add_reader(master, readable)
    link = SerialLink(os.ttyname(slave), lambda *a: None, window=8)
    await link.start()
    while not link.connected:
        await asyncio.sleep(0.01)
    chunk = ModelLoadChunk(1, 0, os.urandom(PAYLOAD - ModelLoadChunk.OVERHEAD))
    sent = 0
    t0 = time.perf_counter()

    async def sender() -> None:
        nonlocal sent
        while time.perf_counter() - t0 < seconds:
            await link.send(chunk)
            sent += 1

    await asyncio.gather(*(sender() for _ in range(8)))
    elapsed = time.perf_counter() - t0
    retrans = link.endpoint.stats.retransmits
    await link.stop()
    loop.remove_reader(master)
    os.close(master)
    os.close(slave)
    return sent / elapsed, retrans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    overhead()

    payload = os.urandom(PAYLOAD)
    batch = 64
    raw = payload * batch
    framed = encode_frame(MsgType.MODEL_LOAD_CHUNK, 1, payload) * batch
    print(f"\n== one-way throughput through a pty, {PAYLOAD}-byte payloads, {args.seconds}s each")
    base = pump(raw, args.seconds, decode=False)
    fr = pump(framed, args.seconds, decode=True)
    mb = base * PAYLOAD / 1e6
    print(f"  baseline raw bytes (no framing)   {base:10.0f} payloads/s  {mb:7.1f} MB/s")
    print(
        f"  COBS+CRC frames, decoded          {fr:10.0f} frames/s    {fr * PAYLOAD / 1e6:7.1f} MB/s"
    )
    print(f"  ratio framed/raw                  {fr / base:10.2f}")

    rel, retrans = asyncio.run(reliable_rate(args.seconds))
    print("\n== reliable (every frame ACKed, window 8), SerialLink -> pty -> MCU endpoint")
    print(f"  reliable frames/s                 {rel:10.0f}  ({retrans} retransmits)")
    print(f"  ratio reliable/one-way framed     {rel / fr:10.3f}")
    print(f"  at 115200 baud a UART carries     {115200 / 10 / 265:10.0f} frames/s of this size")


if __name__ == "__main__":
    main()
