"""The fleet's X.509 certificate authority for device, broker and control-plane certificates.

Subject names of issued device certificates are set by the CA from the enrolled device id,
never copied from the CSR: mosquitto uses the certificate CN as the MQTT username
(``use_identity_as_username``), so a gateway that could choose its own CN could choose
another gateway's topics.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.keyfiles import load_cert, load_private_key, write_public

ORGANIZATION = "FarmIQ Edge"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519 signs without a separate digest; EC/RSA use SHA-256.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def create_ca(
    key: CertificateIssuerPrivateKeyTypes, common_name: str, *, days: int = 3650
) -> x509.Certificate:
    """A self-signed CA certificate that may sign end-entity certificates and CRLs only."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, _hash_for(key))


@dataclass(frozen=True)
class RevokedCert:
    serial: int
    revoked_at: dt.datetime


class CertificateAuthority:
    """Issues certificates and CRLs with the fleet CA key."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> CertificateAuthority:
        key = load_private_key(key_path)
        if not isinstance(
            key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)
        ):
            raise ValueError(f"{key_path}: unsupported CA key type")
        return cls(key, load_cert(cert_path))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        public_key: CertificatePublicKeyTypes,
        common_name: str,
        *,
        client: bool = True,
        server: bool = False,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        days: int = 365,
        serial: int | None = None,
    ) -> x509.Certificate:
        now = _now()
        usages = []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, _hash_for(self.key))

    def sign_csr(self, csr_pem: bytes, device_id: str, *, days: int = 365) -> x509.Certificate:
        """Sign a gateway CSR as a client certificate whose CN is ``device_id``.

        The CSR must carry a valid self-signature (proof the requester holds the key).
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValueError(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise ValueError("CSR signature is invalid (requester does not hold the key)")
        public_key = csr.public_key()
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
            raise ValueError("CSR key must be EC P-256 or Ed25519")
        if (
            isinstance(public_key, ec.EllipticCurvePublicKey)
            and public_key.curve.name != "secp256r1"
        ):
            raise ValueError("CSR EC key must use curve P-256")
        return self.issue(public_key, device_id, client=True, days=days)

    def crl(
        self, revoked: Iterable[RevokedCert], *, days: int = 30
    ) -> x509.CertificateRevocationList:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(secrets.randbits(63)), critical=False)
        )
        for item in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(item.serial)
                .revocation_date(item.revoked_at)
                .build()
            )
        return builder.sign(self.key, _hash_for(self.key))

    def write_crl(self, path: Path, revoked: Iterable[RevokedCert], *, days: int = 30) -> Path:
        crl = self.crl(revoked, days=days)
        return write_public(path, crl.public_bytes(serialization.Encoding.PEM))
