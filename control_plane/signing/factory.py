"""One factory for every control-plane signer: ``signing.backend`` picks files or the KMS.

Whatever signs (bundles, and other metadata built on ``farmiq.bundle.signing.Signer``)
asks ``build_signers(settings)`` and gets ``Signer`` objects plus the trust root gateways
verify them against; it never needs to know where the private halves are.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot

if TYPE_CHECKING:
    from control_plane.settings import ControlPlaneSettings, CpSigning
    from control_plane.signing.transit import TransitKeys


class SigningSetupError(RuntimeError):
    """The signing configuration cannot work; the message says what to change."""


def vault_token(cfg: CpSigning) -> str:
    if cfg.vault_token_file is not None:
        try:
            return cfg.vault_token_file.read_text().strip()
        except OSError as exc:
            raise SigningSetupError(f"signing.vault_token_file: {exc}") from None
    token = cfg.vault_token or os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
    if not token:
        raise SigningSetupError(
            "signing.backend = 'vault' needs signing.vault_token_file, signing.vault_token "
            "or VAULT_TOKEN"
        )
    return token


def transit_keys(cfg: CpSigning) -> TransitKeys:
    from control_plane.signing.transit import TransitKeys

    if not cfg.vault_url:
        raise SigningSetupError("signing.backend = 'vault' needs signing.vault_url")
    return TransitKeys(cfg.vault_url, vault_token(cfg), mount=cfg.transit_mount)


def build_signers(settings: ControlPlaneSettings) -> tuple[list[Signer], TrustRoot]:
    """The bundle signers and the trust root that lists them.

    * ``file``: Ed25519 PEM files (``signing_keys``, or the fleet's targets keys, or one
      made under data_dir/keys).
    * ``vault``: transit keys ``signing.keys`` in the KMS at ``signing.vault_url``, each at
      its latest version. With a fleet, its root must already list them (``farmiq stack
      up`` / ``adopt_transit_keys`` do that); without one they are created if missing.
    """
    cfg = settings.signing
    if cfg.backend == "vault":
        from control_plane.signing.transit import TransitError

        kms = transit_keys(cfg)
        try:
            if settings.fleet_dir is None:
                for name in cfg.keys:
                    kms.ensure_key(name)
            signers: list[Signer] = [kms.signer(name) for name in cfg.keys]
        except TransitError as exc:
            raise SigningSetupError(str(exc)) from None
    else:
        signers = _file_signers(settings)
    if settings.fleet_dir is not None:
        from provisioning.fleet import FleetPaths

        trust = TrustRoot.load(FleetPaths(settings.fleet_dir).root_json)
        listed = set(trust.roles["bundle"].keyids)
        missing = [s for s in signers if s.keyid not in listed]
        if missing:
            raise SigningSetupError(
                f"the fleet's root does not list signing key(s) {missing}: gateways would "
                "reject every bundle (adopt the keys into the root first)"
            )
        return signers, trust
    trust_path = settings.data_dir / "keys" / "trust_root.json"
    if trust_path.exists():
        return signers, TrustRoot.load(trust_path)
    trust = TrustRoot.for_signers(signers, threshold=min(cfg.threshold, len(signers)))
    trust.save(trust_path)
    return signers, trust


def _file_signers(settings: ControlPlaneSettings) -> list[Signer]:
    if settings.fleet_dir is not None:
        from provisioning.fleet import FleetPaths

        paths = FleetPaths(settings.fleet_dir)
        key_paths = settings.signing_keys or paths.targets_keys()
        if not key_paths or not paths.root_json.exists():
            raise SigningSetupError(
                f"fleet_dir {settings.fleet_dir} holds no fleet signing keys "
                "(farmiq provision init-fleet; with the vault backend set signing.backend)"
            )
        return [Signer.load(p) for p in key_paths]
    key_paths = settings.signing_keys or [settings.data_dir / "keys" / "bundle-signing.pem"]
    return [Signer.load_or_create(p) for p in key_paths]
