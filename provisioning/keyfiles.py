"""Writing and reading key material on disk.

Private keys are created with mode 0600 from the first byte (``os.open`` with the mode,
never chmod after the fact) so they are never readable by others, even briefly. Nothing in
this module logs key bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_private(path: Path, data: bytes) -> Path:
    """Write secret bytes to ``path`` with 0600 permissions (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, PRIVATE_MODE)  # umask cannot widen it, but be explicit
    os.replace(tmp, path)
    return path


def write_public(path: Path, data: bytes) -> Path:
    """Write non-secret bytes (certificates, public metadata) atomically, mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, PUBLIC_MODE)
    os.replace(tmp, path)
    return path


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, key: PrivateKeyTypes) -> Path:
    return write_private(path, private_key_pem(key))


def load_private_key(path: Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def load_ed25519_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = load_private_key(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: expected an Ed25519 private key")
    return key


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """EC P-256: what every TLS stack (mosquitto/OpenSSL, paho, browsers) accepts."""
    return ec.generate_private_key(ec.SECP256R1())


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    return write_public(path, cert.public_bytes(serialization.Encoding.PEM))


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())
