"""``farmiq mcu ...``: run an MCU simulator on a pty, or probe a serial port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    mcu = subparsers.add_parser(
        "mcu",
        help="microcontroller bridge: simulate an MCU, probe a serial port",
        description="Tools for the gateway <-> MCU serial protocol (docs/mcu-protocol.md).",
    )
    sub = mcu.add_subparsers(dest="mcu_command", metavar="SUBCOMMAND", required=True)

    sim = sub.add_parser(
        "simulate",
        help="run a simulated barn MCU on a pseudo-terminal until Ctrl-C",
        description="Opens a pty, prints its path, and behaves like FarmIQ MCU firmware: "
        "barn readings, actuators, model load and inference, with optional faults.",
    )
    sim.add_argument("--device-id", default="sim-0001", help="device id sent in HELLO")
    sim.add_argument(
        "--faults",
        default="",
        metavar="SPEC",
        help="comma-separated faults, e.g. 'garbage=0.05,drop=0.02,corrupt=0.02,"
        "rx_drop=0.01,replay=0.05,slow_bps=9600,reset_after_chunks=3,corrupt_staging'",
    )
    sim.add_argument(
        "--link", default=None, metavar="PATH", help="also keep a stable symlink to the pty here"
    )
    sim.add_argument(
        "--interval", type=float, default=1.0, help="seconds between readings (default 1)"
    )
    sim.set_defaults(func=_simulate)

    probe = sub.add_parser(
        "probe",
        help="connect to a serial port, print the MCU's HELLO and a few readings",
        description="URL is a tty path or any pyserial URL (loop://, socket://host:port).",
    )
    probe.add_argument("url", help="e.g. /dev/serial/by-id/usb-..., /dev/pts/3, socket://h:p")
    probe.add_argument("--readings", type=int, default=6, help="readings to print (default 6)")
    probe.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    probe.add_argument("--baudrate", type=int, default=115200)
    probe.set_defaults(func=_probe)


def _simulate(args: argparse.Namespace) -> int:
    from firmware_bridge.simulator import FaultConfig, MCUSimulator

    try:
        faults = FaultConfig.parse(args.faults)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        sim = MCUSimulator(
            args.device_id, faults=faults, link_path=args.link, reading_interval=args.interval
        )
        path = await sim.start()
        print(path, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await sim.stop()

    asyncio.run(run())
    return 0


def _probe(args: argparse.Namespace) -> int:
    from firmware_bridge.manager import DeviceUnavailable, MCUManager
    from firmware_bridge.messages import Capability, Reading

    async def run() -> int:
        got: list[Reading] = []
        enough = asyncio.Event()

        async def on_readings(device_id: str, batch: list[Reading]) -> None:
            got.extend(batch)
            if len(got) >= args.readings:
                enough.set()

        mgr = MCUManager([args.url], on_readings=on_readings, baudrate=args.baudrate)
        await mgr.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + args.timeout
            try:
                while not mgr.devices():
                    if loop.time() > deadline:
                        raise DeviceUnavailable("no HELLO")
                    await asyncio.sleep(0.05)
            except DeviceUnavailable:
                print(f"no MCU answered on {args.url} within {args.timeout}s", file=sys.stderr)
                return 1
            for info in mgr.devices():
                caps = ",".join(c.name or "" for c in Capability if c in info.capabilities)
                print(
                    f"device {info.device_id}  firmware {info.fw_version}  boot {info.boot_id:08x}"
                    f"  max_frame {info.max_frame}  capabilities {caps or 'none'}"
                    f"  model capacity {info.model_capacity} B"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), max(0.1, deadline - loop.time()))
            for r in got[: args.readings]:
                print(f"  #{r.mcu_seq:<6} {r.sensor:<14} {r.value:10.3f}  at {r.timestamp:.3f}")
            return 0
        finally:
            await mgr.stop()

    return asyncio.run(run())
