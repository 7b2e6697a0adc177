"""The ``farmiq`` command. Each package owns its subcommands in its own ``cli.py``.

A package's ``register(subparsers)`` adds its subcommand(s) and sets ``func`` (taking the
parsed args, returning an exit code). Their modules import nothing heavy at import time,
so ``farmiq --help`` stays fast on a gateway.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from farmiq import __version__

# Registered in this order; a missing module (a gateway installed with only the `edge` extra
# has no control plane, an install without the `sim` extra no simulators) is skipped. The
# control plane's modules come after `bundle` and `provision`: they add their cloud actions
# (`bundle export-triton`, `provision init-fleet|token|...`) to those commands. This package
# itself imports none of them.
COMMAND_MODULES = (
    "edge_agent.cli",
    "farmiq.bundle.cli",
    "provisioning.cli",
    "firmware_bridge.cli",
    "control_plane.cli",
    "control_plane.provision_cli",
    "control_plane.rollout_cli",
    "farmiq_sim.fleet.cli",
    "farmiq_sim.stack.cli",
    "control_plane.signing.cli",
    "farmiq_sim.cli",
    "control_plane.security.audit_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmiq",
        description="FarmIQ Edge: ML on farm gateways, run as a fleet from the cloud.",
    )
    parser.add_argument("--version", action="version", version=f"farmiq {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only skip when the module itself (or an optional dependency) is missing.
            logging.getLogger("farmiq.cli").debug("subcommands from %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from farmiq.logging_setup import configure_logging

    configure_logging(args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
