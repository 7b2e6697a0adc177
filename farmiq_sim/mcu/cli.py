"""``farmiq mcu simulate``: an MCU simulator on a pty until Ctrl-C (registered by
firmware_bridge/cli.py when this package is installed)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def register_simulate(sub: argparse._SubParsersAction) -> None:
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


def _simulate(args: argparse.Namespace) -> int:
    from farmiq_sim.mcu.simulator import FaultConfig, MCUSimulator

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
