"""Ed25519 signing keys for bundles. Key ids are the sha256 of the raw public key.

``cryptography`` is imported when a key is first used, not with this module, and the
gateway daemon checks signatures in a child process (``signature_process``): it never
carries the ~8 MB of OpenSSL bindings (bench/footprint.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farmiq.bundle import signature_process

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


def public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_bytes(key)).hexdigest()


class Signer:
    """One signing key. Private material stays inside; ``repr`` never shows it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.keyid = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"Signer(keyid={self.keyid[:12]}...)"

    @classmethod
    def generate(cls) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": self._key.sign(data).hex()}

    def public_hex(self) -> str:
        return public_bytes(self.public_key).hex()

    def save(self, path: str | Path) -> None:
        """Write the private key as PEM with 0600 permissions (created that way, no race)."""
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(p, 0o600)

    @classmethod
    def load(cls, path: str | Path) -> Signer:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | Path) -> Signer:
        p = Path(path)
        if p.exists():
            return cls.load(p)
        signer = cls.generate()
        signer.save(p)
        return signer


def valid_signers(keys: dict[str, str], signatures: list[Any], data: bytes) -> set[str]:
    """Key ids of ``keys`` (key id -> raw public key, hex) whose signature of ``data`` is
    among ``signatures`` (``{"keyid", "sig"}`` objects; anything else is ignored) and valid.

    Checked in one child process when this process asked for that
    (``farmiq.bundle.signature_process``), in-process otherwise.
    """
    candidates = [
        (s["keyid"], s["sig"])
        for s in signatures
        if isinstance(s, dict)
        and isinstance(s.get("keyid"), str)
        and isinstance(s.get("sig"), str)
        and s["keyid"] in keys
    ]
    if signature_process.isolated():
        valid = signature_process.valid_signatures([(keys[k], v, data) for k, v in candidates])
    else:
        valid = [verify_signature(keys[k], v, data) for k, v in candidates]
    return {kid for (kid, _), ok in zip(candidates, valid, strict=True) if ok}


def verify_signature(public_hex: str, signature_hex: str, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(signature_hex), data
        )
        return True
    except (InvalidSignature, ValueError):
        return False
