"""``farmiq signing adopt | rotate``: the fleet's bundle keys in a Vault / OpenBao transit
engine, and their rotation through the KMS and the root (docs/security.md).

Both write root metadata N + 1 into the fleet directory (signed by its offline root keys,
so run them where those keys are); the control plane serves the new root at
``/api/v1/trust-root`` and signs with the new key versions after a restart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("signing", help="bundle-signing keys in a Vault/OpenBao transit engine")
    ssub = p.add_subparsers(dest="signing_cmd", metavar="ACTION")
    a = ssub.add_parser("adopt", help="create transit keys and make them the fleet's bundle keys")
    r = ssub.add_parser("rotate", help="rotate one transit key and publish root N + 1")
    r.add_argument("--rotate", required=True, help="the transit key to rotate")
    for sp in (a, r):
        sp.add_argument("--fleet-dir", type=Path, required=True, help="from init-fleet")
        sp.add_argument("--vault-url", default=os.environ.get("VAULT_ADDR"), help="($VAULT_ADDR)")
        sp.add_argument("--token-file", type=Path, help="token file (default $VAULT_TOKEN)")
        sp.add_argument("--mount", default="transit", help="transit engine mount (transit)")
        sp.add_argument(
            "--key", action="append", required=True, help="transit key name (repeatable)"
        )
        sp.add_argument("--threshold", type=int, default=1, help="signatures gateways require")
    a.set_defaults(func=_run)
    r.set_defaults(func=_run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    from control_plane.settings import CpSigning
    from control_plane.signing.factory import SigningSetupError, transit_keys
    from control_plane.signing.rotation import adopt_transit_keys, rotate_transit_key
    from control_plane.signing.transit import TransitError
    from provisioning.fleet import FleetPaths

    fleet = FleetPaths(args.fleet_dir)
    if not fleet.root_json.exists() or not fleet.root_keys():
        print(f"farmiq signing: {args.fleet_dir} holds no fleet root keys", file=sys.stderr)
        return 2
    cfg = CpSigning(
        backend="vault", vault_url=args.vault_url, vault_token_file=args.token_file,
        transit_mount=args.mount, keys=args.key, threshold=args.threshold,
    )  # fmt: skip
    try:
        kms = transit_keys(cfg)
        if args.signing_cmd == "rotate":
            signers = rotate_transit_key(fleet, kms, args.key, args.rotate, args.threshold)
        else:
            kms.enable_engine()
            signers = adopt_transit_keys(fleet, kms, args.key, args.threshold)
    except (SigningSetupError, TransitError, ValueError) as exc:
        print(f"farmiq signing {args.signing_cmd}: {exc}", file=sys.stderr)
        return 1
    for s in signers:
        print(f"{s.key_name} v{s.key_version}  keyid {s.keyid}")
    print(f"root: {fleet.root_json}")
    return 0
