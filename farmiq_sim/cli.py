"""``farmiq demo``: the whole system on this machine (see farmiq_sim.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from control_plane.cli import control_plane_installed


def register(sub: argparse._SubParsersAction) -> None:
    if not control_plane_installed():  # the demo and the stack run a control plane
        return
    d = sub.add_parser(
        "demo",
        help="run the whole system on this machine: train, register, promote, sign, roll out, infer",
        description="Run a broker, the control plane and a gateway agent on this machine and "
        "play the operator. Each run has its own folder (under .farmiq/demo/ unless --workdir "
        "is given), its own broker on a free port and a uniquely named gateway.",
    )
    d.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="the run's folder (wiped first; refused while another demo uses it). "
        "Default: a new folder under .farmiq/demo/",
    )
    d.add_argument(
        "--keep-running", action="store_true", help="keep the services up and print their URLs"
    )
    d.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker (anonymous, no TLS) even when Mosquitto is available",
    )
    d.add_argument(
        "--insecure",
        action="store_true",
        help="turn operator API authentication off (warned; never for a real deployment)",
    )
    d.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from farmiq_sim.demo import run_demo

    return run_demo(
        args.workdir,
        keep_running=args.keep_running,
        embedded_broker=args.embedded_broker,
        insecure=args.insecure,
    )
