"""Gateway side of enrollment: make a key pair and CSR, trade a token for a certificate.

Runs on the gateway, so it uses only ``cryptography`` and the standard library (urllib).
The private key never leaves the gateway: only the CSR (public key + self-signature) is
sent. Nothing is written unless the control plane accepted the request, and the key file
is created with mode 0600.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.keyfiles import private_key_pem, write_private, write_public

ENROLL_PATH = "/api/v1/enrollment/enroll"
FILES = {
    "key": "device.key",
    "cert": "device.crt",
    "ca": "ca.crt",
    "root": "trust_root.json",
    "config": "agent.toml",
}


class EnrollFailed(Exception):
    pass


@dataclass(frozen=True)
class EnrolledFiles:
    key: Path
    cert: Path
    ca: Path
    root: Path
    config: Path


def make_key_and_csr(device_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def _post_json(
    url: str, body: dict[str, str], *, cafile: str | None, timeout: float
) -> dict[str, object]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise EnrollFailed(f"control plane refused enrollment ({exc.code}): {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise EnrollFailed(f"cannot reach control plane at {url}: {exc}") from None


def enroll(
    url: str,
    token: str,
    device_id: str,
    out_dir: Path,
    *,
    cafile: str | None = None,
    state_dir: str = "/var/lib/farmiq",
    timeout: float = 30.0,
) -> EnrolledFiles:
    """Enroll this gateway with the control plane at ``url`` and write its files to ``out_dir``."""
    if not url.startswith(("http://", "https://")):
        raise EnrollFailed("--url must be an http:// or https:// control-plane address")
    out = Path(out_dir).resolve()
    key, csr_pem = make_key_and_csr(device_id)
    answer = _post_json(
        url.rstrip("/") + ENROLL_PATH,
        {
            "token": token,
            "device_id": device_id,
            "csr_pem": csr_pem.decode(),
            "gateway_dir": str(out),
            "state_dir": state_dir,
        },
        cafile=cafile,
        timeout=timeout,
    )
    try:
        cert_pem = str(answer["certificate_pem"]).encode()
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca_pem = str(answer["ca_pem"]).encode()
        root_json = str(answer["root_json"])
        config = str(answer["agent_config_toml"])
        json.loads(root_json)
    except (KeyError, ValueError) as exc:
        raise EnrollFailed(f"malformed enrollment answer: {exc}") from None
    # The certificate must be for the key we hold; otherwise the answer is not ours.
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise EnrollFailed("certificate returned does not match this gateway's key")
    out.mkdir(parents=True, exist_ok=True)
    files = EnrolledFiles(*(out / FILES[k] for k in ("key", "cert", "ca", "root", "config")))
    write_private(files.key, private_key_pem(key))
    write_public(files.cert, cert_pem)
    write_public(files.ca, ca_pem)
    write_public(files.root, root_json.encode())
    write_public(files.config, config.encode())
    return files
