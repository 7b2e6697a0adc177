"""``init-fleet``: create a fleet's trust roots in one directory.

Layout (``FleetPaths``)::

    offline/root-<n>.key         offline root keys (Ed25519, 0600): move to offline media
    signing/targets-<n>.key      bundle-signing keys (the TUF ``targets`` role)
    control-plane/ca.key         device CA key (online: signs enrollment CSRs)
    control-plane/snapshot.key   online TUF snapshot key
    control-plane/timestamp.key  online TUF timestamp key
    control-plane/director-<n>.key  online director keys: sign every document sent to a
                                 gateway (desired state, commands, features, acks)
    control-plane/client.key     the control plane's own MQTT/TLS identity
    control-plane/client.crt
    broker/server.key            the broker's TLS server identity
    broker/server.crt
    public/ca.crt                the device CA certificate
    public/root.json             TUF root metadata (also 1.root.json): the device trust root
    public/crl.pem               current certificate revocation list
    fleet.json                   non-secret summary

Root metadata is signed by every root key at creation; devices accept it when at least
``root_threshold`` of those signatures verify.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import JSONSerializer

from provisioning.certificate_authority import CertificateAuthority, create_ca
from provisioning.keyfiles import (
    load_ed25519_private_key,
    new_ec_key,
    write_cert,
    write_private_key,
    write_public,
)

log = logging.getLogger(__name__)

CONTROL_PLANE_CN = "farmiq-control-plane"
BROKER_CN = "farmiq-broker"
RESERVED_IDENTITIES = frozenset({CONTROL_PLANE_CN, BROKER_CN})
ROOT_EXPIRY_DAYS = 365


@dataclass(frozen=True)
class FleetPaths:
    root: Path

    @property
    def offline(self) -> Path:
        return self.root / "offline"

    @property
    def signing(self) -> Path:
        return self.root / "signing"

    @property
    def control_plane(self) -> Path:
        return self.root / "control-plane"

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def public(self) -> Path:
        return self.root / "public"

    def root_key(self, n: int) -> Path:
        return self.offline / f"root-{n}.key"

    def targets_key(self, n: int) -> Path:
        return self.signing / f"targets-{n}.key"

    def director_key(self, n: int) -> Path:
        return self.control_plane / f"director-{n}.key"

    def director_keys(self) -> list[Path]:
        return sorted(self.control_plane.glob("director-*.key"))

    @property
    def ca_key(self) -> Path:
        return self.control_plane / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.public / "ca.crt"

    @property
    def snapshot_key(self) -> Path:
        return self.control_plane / "snapshot.key"

    @property
    def timestamp_key(self) -> Path:
        return self.control_plane / "timestamp.key"

    @property
    def cp_key(self) -> Path:
        return self.control_plane / "client.key"

    @property
    def cp_cert(self) -> Path:
        return self.control_plane / "client.crt"

    @property
    def broker_key(self) -> Path:
        return self.broker / "server.key"

    @property
    def broker_cert(self) -> Path:
        return self.broker / "server.crt"

    @property
    def root_json(self) -> Path:
        return self.public / "root.json"

    @property
    def crl(self) -> Path:
        return self.public / "crl.pem"

    @property
    def summary(self) -> Path:
        return self.root / "fleet.json"

    @property
    def state_db(self) -> Path:
        return self.control_plane / "devices.sqlite"

    def targets_keys(self) -> list[Path]:
        return sorted(self.signing.glob("targets-*.key"))

    def root_keys(self) -> list[Path]:
        return sorted(self.offline.glob("root-*.key"))

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.ca_key, self.ca_cert)


def signer_from_file(path: Path) -> CryptoSigner:
    key = load_ed25519_private_key(path)
    return signer_from_key(key)


def signer_from_key(key: ed25519.Ed25519PrivateKey) -> CryptoSigner:
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


def _new_signer(path: Path) -> CryptoSigner:
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_key(path, key)
    return signer_from_key(key)


def add_director_role(root: Root, keys: list[SSlibKey], threshold: int) -> None:
    """Name the director role in the root (``farmiq.bundle.trust.TUF_DIRECTOR_FIELD``):
    python-tuf's Root holds only the four top-level roles, so it is a signed extension."""
    from farmiq.bundle.trust import TUF_DIRECTOR_FIELD

    for key in keys:
        root.keys[key.keyid] = key
    root.unrecognized_fields[TUF_DIRECTOR_FIELD] = {
        "keyids": [k.keyid for k in keys],
        "threshold": threshold,
    }


def write_root(paths: FleetPaths, md: Metadata[Root]) -> None:
    data = md.to_bytes(JSONSerializer(compact=False))
    write_public(paths.public / f"{md.signed.version}.root.json", data)
    write_public(paths.root_json, data)


def init_fleet(
    directory: Path,
    *,
    root_threshold: int = 2,
    root_keys: int = 3,
    targets_threshold: int = 1,
    targets_keys: int = 1,
    director_threshold: int = 1,
    director_keys: int = 1,
    broker_hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    fleet_name: str = "farmiq",
) -> FleetPaths:
    """Create every trust root of a new fleet under ``directory``; refuse to overwrite one."""
    if not 1 <= root_threshold <= root_keys:
        raise ValueError("need 1 <= --root-threshold <= --root-keys")
    if not 1 <= targets_threshold <= targets_keys:
        raise ValueError("need 1 <= --targets-threshold <= --targets-keys")
    if not 1 <= director_threshold <= director_keys:
        raise ValueError("need 1 <= --director-threshold <= --director-keys")
    paths = FleetPaths(Path(directory))
    if paths.summary.exists() or paths.root_json.exists():
        raise FileExistsError(f"{directory} already holds a fleet; refusing to overwrite its keys")
    paths.root.mkdir(parents=True, exist_ok=True)
    for sub in (paths.offline, paths.signing, paths.control_plane, paths.broker):
        sub.mkdir(parents=True, exist_ok=True)
        sub.chmod(0o700)
    paths.public.mkdir(parents=True, exist_ok=True)

    root_signers = [_new_signer(paths.root_key(i + 1)) for i in range(root_keys)]
    targets_signers = [_new_signer(paths.targets_key(i + 1)) for i in range(targets_keys)]
    snapshot = _new_signer(paths.snapshot_key)
    timestamp = _new_signer(paths.timestamp_key)
    director_signers = [_new_signer(paths.director_key(i + 1)) for i in range(director_keys)]

    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=ROOT_EXPIRY_DAYS)
    root = Root(expires=expires, consistent_snapshot=False)
    for s in root_signers:
        root.add_key(s.public_key, Root.type)
    for s in targets_signers:
        root.add_key(s.public_key, "targets")
    root.add_key(snapshot.public_key, "snapshot")
    root.add_key(timestamp.public_key, "timestamp")
    root.roles[Root.type].threshold = root_threshold
    root.roles["targets"].threshold = targets_threshold
    add_director_role(root, [s.public_key for s in director_signers], director_threshold)
    md = Metadata(root)
    for s in root_signers:
        md.sign(s, append=True)
    write_root(paths, md)

    ca_key = new_ec_key()
    write_private_key(paths.ca_key, ca_key)
    ca_cert = create_ca(ca_key, f"{fleet_name} device CA")
    write_cert(paths.ca_cert, ca_cert)
    ca = CertificateAuthority(ca_key, ca_cert)

    cp_key = new_ec_key()
    write_private_key(paths.cp_key, cp_key)
    write_cert(
        paths.cp_cert, ca.issue(cp_key.public_key(), CONTROL_PLANE_CN, client=True, days=825)
    )

    broker_key = new_ec_key()
    write_private_key(paths.broker_key, broker_key)
    dns = [h for h in broker_hosts if not _is_ip(h)]
    ips = [h for h in broker_hosts if _is_ip(h)]
    write_cert(
        paths.broker_cert,
        ca.issue(
            broker_key.public_key(),
            BROKER_CN,
            client=False,
            server=True,
            dns_names=dns,
            ip_addresses=ips,
            days=825,
        ),
    )
    ca.write_crl(paths.crl, [])

    summary = {
        "fleet": fleet_name,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "root_threshold": root_threshold,
        "root_keyids": [s.public_key.keyid for s in root_signers],
        "targets_threshold": targets_threshold,
        "targets_keyids": [s.public_key.keyid for s in targets_signers],
        "director_threshold": director_threshold,
        "director_keyids": [s.public_key.keyid for s in director_signers],
        "control_plane_identity": CONTROL_PLANE_CN,
        "broker_hosts": list(broker_hosts),
    }
    write_public(paths.summary, json.dumps(summary, indent=2).encode())
    log.info(
        "fleet %s created in %s (root %d-of-%d)", fleet_name, directory, root_threshold, root_keys
    )
    return paths


MAX_CONTROL_PLANE_REPLICAS = 8  # identities farmiq-control-plane-1..8 in the broker ACL


def control_plane_replica_cn(n: int) -> str:
    return f"{CONTROL_PLANE_CN}-{n}"


def issue_control_plane_replica(paths: FleetPaths, n: int) -> tuple[Path, Path]:
    """An MQTT/TLS identity of its own for control-plane replica ``n`` (CN
    ``farmiq-control-plane-<n>``): the broker binds each client id to its certificate
    (``use_username_as_clientid``), so replicas sharing one certificate would take over
    each other's session. Returns (certificate, key) under control-plane/."""
    if not 1 <= n <= MAX_CONTROL_PLANE_REPLICAS:
        raise ValueError(f"replica {n}: 1..{MAX_CONTROL_PLANE_REPLICAS}")
    cert, key = paths.control_plane / f"client-{n}.crt", paths.control_plane / f"client-{n}.key"
    if not cert.exists():
        k = new_ec_key()
        write_private_key(key, k)
        cn = control_plane_replica_cn(n)
        write_cert(cert, paths.ca().issue(k.public_key(), cn, client=True, days=825))
    return cert, key


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
