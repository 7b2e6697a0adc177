"""``farmiq mcu ...``: probe a serial port (and ``simulate``, from farmiq_sim.mcu.cli)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    mcu = subparsers.add_parser(
        "mcu",
        help="microcontroller bridge: simulate an MCU, probe a serial port",
        description="Tools for the gateway <-> MCU serial protocol (docs/mcu-protocol.md).",
    )
    sub = mcu.add_subparsers(dest="mcu_command", metavar="SUBCOMMAND", required=True)

    # The simulator lives outside the gateway's packages (farmiq_sim); present in a dev or
    # demo install, absent from a bare gateway one.
    try:
        from farmiq_sim.mcu.cli import register_simulate
    except ModuleNotFoundError:
        pass
    else:
        register_simulate(sub)

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
