"""Ed25519 signing in a Vault / OpenBao transit engine: the private key never leaves the KMS.

``TransitSigner`` is a ``farmiq.bundle.signing.Signer``: the same ``keyid`` (sha256 of the
raw public key), ``public_key``, ``public_hex()`` and ``sign(data) -> {"keyid", "sig"}``, so
bundles, TUF metadata or anything else that takes a ``Signer`` signs through the KMS
unchanged. A transit key has versions; a signer is pinned to one version (the latest when
it was made), because gateways trust a specific public key, and a rotation only takes
effect once the trust root lists the new version (``control_plane.signing.rotation``).

hvac (the Vault client library) speaks the HTTP API; this module keeps to the few calls
it needs so the rest of the control plane never sees hvac.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from farmiq.bundle.signing import Signer, key_id


class TransitError(RuntimeError):
    """The KMS refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class TransitKeyVersion:
    name: str
    version: int
    public_key: Ed25519PublicKey


class TransitKeys:
    """The transit engine at ``url`` (mount ``mount``), authenticated by ``token``."""

    def __init__(self, url: str, token: str, *, mount: str = "transit", timeout: float = 10):
        import hvac

        self.url = url
        self.mount = mount
        self._client = hvac.Client(url=url, token=token, timeout=timeout)

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        import hvac.exceptions
        import requests

        try:
            return fn(*args, mount_point=self.mount, **kw)
        except hvac.exceptions.VaultError as exc:
            raise TransitError(f"KMS {self.url}: {what} failed: {exc}".strip()) from None
        except requests.RequestException as exc:
            raise TransitError(f"KMS {self.url} unreachable ({what}): {exc}") from None

    def enable_engine(self) -> None:
        """Mount the transit engine if it is not mounted yet (dev servers start without)."""
        import hvac.exceptions
        import requests

        try:
            mounts = self._client.sys.list_mounted_secrets_engines()
            if f"{self.mount}/" not in (mounts.get("data") or mounts):
                self._client.sys.enable_secrets_engine("transit", path=self.mount)
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise TransitError(f"KMS {self.url}: cannot mount transit: {exc}") from None

    def ensure_key(self, name: str) -> None:
        """Create an ed25519 key ``name`` unless it exists (creating never overwrites)."""
        tr = self._client.secrets.transit
        self._call(f"create key {name}", tr.create_key, name=name, key_type="ed25519")

    def versions(self, name: str) -> list[TransitKeyVersion]:
        """Every live version of the key, oldest first."""
        answer = self._call(f"read key {name}", self._client.secrets.transit.read_key, name=name)
        data = answer["data"]
        if data.get("type") != "ed25519":
            raise TransitError(f"KMS key {name} is {data.get('type')}, need ed25519")
        out = []
        for ver, info in sorted(data["keys"].items(), key=lambda kv: int(kv[0])):
            raw = base64.b64decode(info["public_key"])
            out.append(TransitKeyVersion(name, int(ver), Ed25519PublicKey.from_public_bytes(raw)))
        return out

    def latest(self, name: str) -> TransitKeyVersion:
        return self.versions(name)[-1]

    def rotate(self, name: str) -> TransitKeyVersion:
        self._call(f"rotate key {name}", self._client.secrets.transit.rotate_key, name=name)
        return self.latest(name)

    def sign(self, name: str, version: int, data: bytes) -> bytes:
        answer = self._call(
            f"sign with {name} v{version}",
            self._client.secrets.transit.sign_data,
            name=name,
            hash_input=base64.b64encode(data).decode(),
            key_version=version,
        )
        sig = str(answer["data"]["signature"])  # "vault:v<N>:<base64>"
        prefix, ver, b64 = sig.split(":", 2)
        if prefix != "vault" or ver != f"v{version}":
            raise TransitError(f"KMS answered a signature of {ver}, asked for v{version}")
        return base64.b64decode(b64)

    def signer(self, name: str, version: int | None = None) -> TransitSigner:
        kv = self.latest(name) if version is None else self._version(name, version)
        return TransitSigner(self, kv)

    def _version(self, name: str, version: int) -> TransitKeyVersion:
        for kv in self.versions(name):
            if kv.version == version:
                return kv
        raise TransitError(f"KMS key {name} has no version {version}")


class TransitSigner(Signer):
    """A ``Signer`` whose private half is a transit key version inside the KMS."""

    def __init__(self, keys: TransitKeys, version: TransitKeyVersion) -> None:
        # Deliberately not Signer.__init__: there is no private key here to hold.
        self._keys = keys
        self.key_name = version.name
        self.key_version = version.version
        self.public_key = version.public_key
        self.keyid = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"TransitSigner({self.key_name} v{self.key_version}, keyid={self.keyid[:12]}...)"

    def sign(self, data: bytes) -> dict[str, str]:
        from cryptography.exceptions import InvalidSignature

        sig = self._keys.sign(self.key_name, self.key_version, data)
        try:  # a KMS answering with another key's signature must fail here, not on a gateway
            self.public_key.verify(sig, data)
        except InvalidSignature:
            raise TransitError(
                f"KMS signature from {self.key_name} v{self.key_version} does not verify"
            ) from None
        return {"keyid": self.keyid, "sig": sig.hex()}

    def save(self, path: object) -> None:
        raise TypeError("a KMS key cannot be exported: its private half never leaves the KMS")
