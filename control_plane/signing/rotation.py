"""The fleet trust root follows the KMS: adopt transit keys as the bundle (TUF ``targets``)
keys, and rotate one through the KMS.

Both write a new root metadata version (N + 1) listing the transit keys' current public
halves as the targets role, signed by the fleet's root keys, which is exactly what
gateways accept as a rotation (``TrustRoot.rotate``: a threshold of the old and of the new
root keys). Adopting also deletes the fleet's file targets keys: with the vault backend no
bundle-signing private key remains on the control plane's disk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from securesystemslib.signer import SSlibKey
from tuf.api.metadata import Metadata, Root

from control_plane.signing.transit import TransitKeys, TransitSigner
from provisioning.fleet import ROOT_EXPIRY_DAYS, FleetPaths, signer_from_file, write_root

TARGETS = "targets"


def write_targets_root(
    fleet: FleetPaths, signers: Sequence[TransitSigner], threshold: int
) -> Metadata[Root]:
    """Root N + 1 whose targets role is exactly ``signers`` (``threshold`` of them)."""
    if not 1 <= threshold <= len(signers):
        raise ValueError(f"signing threshold {threshold} needs 1..{len(signers)} keys")
    md = Metadata[Root].from_bytes(fleet.root_json.read_bytes())
    root = md.signed
    for keyid in list(root.roles[TARGETS].keyids):
        root.revoke_key(keyid, TARGETS)
    for s in signers:
        root.add_key(SSlibKey.from_crypto(s.public_key), TARGETS)
    root.roles[TARGETS].threshold = threshold
    root.version += 1
    root.expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(
        days=ROOT_EXPIRY_DAYS
    )
    md.signatures.clear()
    for path in fleet.root_keys():
        md.sign(signer_from_file(path), append=True)
    write_root(fleet, md)
    return md


def adopt_transit_keys(
    fleet: FleetPaths, kms: TransitKeys, names: Sequence[str], threshold: int
) -> list[TransitSigner]:
    """Create the transit keys (if new), make them the fleet's bundle keys, delete the file
    targets keys. Idempotent: when the root already lists exactly these keys, no new root."""
    for name in names:
        kms.ensure_key(name)
    signers = [kms.signer(name) for name in names]
    current = Metadata[Root].from_bytes(fleet.root_json.read_bytes()).signed
    listed = {current.keys[k].keyval["public"] for k in current.roles[TARGETS].keyids}
    wanted = {s.public_hex() for s in signers}
    if listed != wanted or current.roles[TARGETS].threshold != threshold:
        write_targets_root(fleet, signers, threshold)
    for key_file in fleet.targets_keys():
        key_file.unlink()
    return signers


def rotate_transit_key(
    fleet: FleetPaths, kms: TransitKeys, names: Sequence[str], rotate: str, threshold: int
) -> list[TransitSigner]:
    """Rotate ``rotate`` in the KMS and publish root N + 1 listing its new version (the old
    version is no longer trusted by gateways that install the new root)."""
    if rotate not in names:
        raise ValueError(f"{rotate!r} is not one of the signing keys {list(names)}")
    kms.rotate(rotate)
    signers = [kms.signer(name) for name in names]
    write_targets_root(fleet, signers, threshold)
    return signers
