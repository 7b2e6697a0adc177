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


# Commands that one module owns alone: ``farmiq agent run`` (what systemd starts on a
# gateway) imports only the agent's CLI, not every package's (the control plane's pull
# sqlalchemy and fastapi: ~50 MB of RSS and a second of start-up on a Pi).
SOLE_OWNER = {"agent": "edge_agent.cli"}


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option)."""
    it = iter(argv)
    for tok in it:
        if tok == "--log-level":
            next(it, None)
        elif not tok.startswith("-"):
            return tok
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmiq",
        description="FarmIQ Edge: ML on farm gateways, run as a fleet from the cloud.",
    )
    parser.add_argument("--version", action="version", version=f"farmiq {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owner = SOLE_OWNER.get(_command(argv) or "") if argv is not None else None
    for name in (owner,) if owner else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only skip when the module itself (or an optional dependency) is missing.
            logging.getLogger("farmiq.cli").debug("subcommands from %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
