"""``farmiq stack up [--workdir DIR] [--gateways N] | status | down [--purge]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from control_plane.cli import control_plane_installed

DEFAULT_WORKDIR = Path(".farmiq/stack")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if not control_plane_installed():  # the demo and the stack run a control plane
        return
    p = sub.add_parser(
        "stack",
        help="the production topology as local processes (PostgreSQL, MLflow, OpenBao, "
        "Mosquitto mTLS, 2 control planes, Triton, RabbitMQ, gateways)",
    )
    ssub = p.add_subparsers(dest="stack_cmd", metavar="ACTION")
    u = ssub.add_parser("up", help="start every part, enroll the gateways, print URLs and key")
    u.add_argument("--gateways", type=int, default=2, help="gateway agents to enroll (default 2)")
    u.add_argument(
        "--drift-window-s",
        type=float,
        default=3600.0,
        help="the agents' drift statistics window (default 3600 s, as in production)",
    )
    s = ssub.add_parser("status", help="each part's health")
    d = ssub.add_parser("down", help="stop exactly what `up` started")
    d.add_argument("--purge", action="store_true", help="also drop its databases and workdir")
    for sp in (u, s, d):
        sp.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="(.farmiq/stack)")
    u.set_defaults(func=_up)
    s.set_defaults(func=_status)
    d.set_defaults(func=_down)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _up(args: argparse.Namespace) -> int:
    from farmiq_sim.stack.stack import StackError, up

    try:
        up(args.workdir, args.gateways, drift_window_s=args.drift_window_s)
    except (StackError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"farmiq stack up: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from farmiq_sim.stack.stack import StackError, status

    try:
        rows = status(args.workdir)
    except StackError as exc:
        print(f"farmiq stack status: {exc}", file=sys.stderr)
        return 1
    width = max(len(r[0]) for r in rows)
    uwidth = max(len(r[1]) for r in rows)
    for part, where, health in rows:
        print(f"{part:<{width}}  {where:<{uwidth}}  {health}")
    return 0 if all(r[2] == "ok" for r in rows) else 3


def _down(args: argparse.Namespace) -> int:
    from farmiq_sim.stack.stack import StackError, down

    try:
        down(args.workdir, purge=args.purge)
    except StackError as exc:
        print(f"farmiq stack down: {exc}", file=sys.stderr)
        return 1
    return 0
