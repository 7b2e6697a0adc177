"""Bundle-signing keys on the control plane: files (``signing.backend = "file"``) or a
Vault-compatible KMS's transit engine (``"vault"``), behind the one ``Signer`` interface."""

from control_plane.signing.factory import SigningSetupError, build_signers

__all__ = ["SigningSetupError", "build_signers"]
