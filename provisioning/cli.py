"""``farmiq provision ...``: the gateway side (``enroll``) and the command the cloud side extends.

This module is what a gateway runs: ``farmiq provision enroll`` needs only ``cryptography``
and the standard library, and nothing here imports ``control_plane``. The cloud actions
(``init-fleet``, ``token``, ``revoke``, ``devices``, ``mosquitto-config``, ``api-key``) are
added to the same command by ``control_plane/provision_cli.py`` when the control plane is
installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = (
    "Fleet PKI, gateway enrollment, broker ACLs. On a gateway: `enroll`. The cloud actions "
    "(init-fleet, token, revoke, devices, mosquitto-config, api-key) come with the control "
    "plane (the `control` extra)."
)


def _enroll(args: argparse.Namespace) -> int:
    from provisioning.enroll_client import EnrollFailed, enroll

    try:
        files = enroll(
            args.url,
            args.token,
            args.device_id,
            Path(args.out),
            cafile=args.cafile,
            state_dir=args.state_dir,
        )
    except EnrollFailed as exc:
        print(f"enrollment failed: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled {args.device_id}; agent config: {files.config}")
    return 0


class _TokenValueParser(argparse.ArgumentParser):
    """Reads the word after ``--token`` as its value even when it starts with '-' (argparse
    alone would take ``--token -x`` for a missing value and an unknown option)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        words = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        i = 0
        while i < len(words):
            if words[i] == "--token" and i + 1 < len(words):
                joined.append(f"--token={words[i + 1]}")
                i += 2
                continue
            joined.append(words[i])
            i += 1
        return super().parse_known_args(joined, namespace)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "provision", help="fleet PKI, gateway enrollment, broker ACLs", description=DESCRIPTION
    )
    sub = p.add_subparsers(dest="provision_command", metavar="ACTION", required=True)

    sp = sub.add_parser("enroll", help="(on the gateway) make a key + CSR and enroll")
    sp.add_argument("--url", required=True, help="control plane base URL")
    sp.add_argument("--token", required=True, help="one-time enrollment token")
    sp.__class__ = _TokenValueParser  # a token may start with '-'
    sp.add_argument("--device-id", required=True)
    sp.add_argument("--out", default="/etc/farmiq", help="where to write key, certs, agent.toml")
    sp.add_argument("--state-dir", default="/var/lib/farmiq")
    sp.add_argument("--cafile", help="CA bundle to verify an https control plane")
    sp.set_defaults(func=_enroll)
