"""The trust root a gateway holds: which keys may sign bundles, and how many must.

Two on-disk forms load into the same ``TrustRoot``:

* the fleet's TUF root metadata (``root.json`` from ``farmiq provision init-fleet``,
  python-tuf's Metadata API): its ``targets`` role (keys + threshold) becomes the
  ``bundle`` role. The file must carry its own root threshold of valid signatures, and it
  can only be replaced through ``rotate``: a new root (version + 1) signed by a threshold of
  the *old* root keys and a threshold of the *new* ones (TUF specification, section 5.3).
  Removing a key from the targets role in a rotated root is how a key is revoked.
* the simple JSON form (``TrustRoot.for_signers``) used by demos and tests.

Key ids in bundles are sha256 of the raw Ed25519 public key (``farmiq.bundle.signing``);
TUF's own key ids are mapped to those when a TUF root is loaded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from farmiq.bundle import signature_process
from farmiq.bundle.signing import Signer

TUF_BUNDLE_ROLE = "targets"
# The director role (farmiq/director): python-tuf's Root allows only the four top-level
# roles, so the fleet's root names it in a signed extension field; its keys sit in the
# root's ``keys`` like any other. Root rotation replaces it like the rest of the root.
TUF_DIRECTOR_FIELD = "x-farmiq-director"
DIRECTOR_ROLE = "director"
MAX_ROOT_BYTES = 1024 * 1024
# the last TUF root checked in a child process: (its bytes, the root derived from them)
_last_parsed: tuple[bytes, dict[str, Any]] | None = None


class TrustError(ValueError):
    """A trust root (or a root rotation) that must not be accepted."""


class PublicKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keytype: str = "ed25519"
    public: str  # raw public key, hex


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keyids: list[str]
    threshold: int = Field(default=1, ge=1)


class TrustRoot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    expires: str | None = None
    keys: dict[str, PublicKey]
    roles: dict[str, Role]
    revoked: list[str] = []
    _tuf_bytes: bytes | None = PrivateAttr(default=None)

    @classmethod
    def for_signers(
        cls,
        signers: list[Signer],
        threshold: int = 1,
        *,
        director: list[Signer] | None = None,
        director_threshold: int = 1,
    ) -> TrustRoot:
        roles = {"bundle": Role(keyids=[s.keyid for s in signers], threshold=threshold)}
        keys = {s.keyid: PublicKey(public=s.public_hex()) for s in signers}
        if director:
            keys.update({s.keyid: PublicKey(public=s.public_hex()) for s in director})
            roles[DIRECTOR_ROLE] = Role(
                keyids=[s.keyid for s in director], threshold=director_threshold
            )
        return cls(keys=keys, roles=roles)

    # -- TUF root metadata ---------------------------------------------------------------
    @classmethod
    def from_tuf(cls, data: bytes) -> TrustRoot:
        """Load TUF root metadata, checking that it meets its own root threshold."""
        from tuf.api.exceptions import UnsignedMetadataError
        from tuf.api.metadata import Metadata, Root

        try:
            md = Metadata[Root].from_bytes(data)
        except Exception as exc:
            raise TrustError(f"not TUF root metadata: {exc}") from None
        if not isinstance(md.signed, Root):
            raise TrustError("TUF metadata is not of type root")
        try:
            md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise TrustError(f"root metadata lacks its root threshold: {exc}") from None
        return cls._from_verified_tuf(md, data)

    @classmethod
    def _from_verified_tuf(cls, md: Any, data: bytes) -> TrustRoot:
        import hashlib

        root = md.signed
        role = root.roles.get(TUF_BUNDLE_ROLE)
        if role is None:
            raise TrustError("root metadata has no targets role")
        keys: dict[str, PublicKey] = {}
        for tuf_keyid in role.keyids:
            key = root.keys[tuf_keyid]
            if key.keytype != "ed25519":
                raise TrustError(f"bundle key {tuf_keyid[:12]} is {key.keytype}, need ed25519")
            public = str(key.keyval["public"])
            keys[hashlib.sha256(bytes.fromhex(public)).hexdigest()] = PublicKey(public=public)
        roles = {"bundle": Role(keyids=sorted(keys), threshold=role.threshold)}
        director = root.unrecognized_fields.get(TUF_DIRECTOR_FIELD)
        if director is not None:
            dkeys = cls._director_keys(root, director)
            keys.update(dkeys)
            roles[DIRECTOR_ROLE] = Role(keyids=sorted(dkeys), threshold=director["threshold"])
        trust = cls(
            version=root.version,
            expires=root.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            keys=keys,
            roles=roles,
        )
        trust._tuf_bytes = data
        return trust

    @staticmethod
    def _director_keys(root: Any, director: Any) -> dict[str, PublicKey]:
        import hashlib

        if (
            not isinstance(director, dict)
            or not isinstance(director.get("keyids"), list)
            or type(director.get("threshold")) is not int
            or director["threshold"] < 1
        ):
            raise TrustError(f"root's {TUF_DIRECTOR_FIELD} is malformed")
        out: dict[str, PublicKey] = {}
        for tuf_keyid in director["keyids"]:
            key = root.keys.get(tuf_keyid)
            if key is None or key.keytype != "ed25519":
                raise TrustError(f"director key {str(tuf_keyid)[:12]} missing or not ed25519")
            public = str(key.keyval["public"])
            out[hashlib.sha256(bytes.fromhex(public)).hexdigest()] = PublicKey(public=public)
        return out

    @property
    def is_tuf(self) -> bool:
        return self._tuf_bytes is not None

    def rotate(self, new_root: bytes, *, now: datetime | None = None) -> TrustRoot:
        """Return the trust root after a root rotation, or raise ``TrustError``.

        Accepted only when ``new_root`` is version + 1, is signed by a threshold of the
        current root keys (so a thief of fewer keys cannot rotate) and by a threshold of its
        own root keys, and is not already expired.
        """
        from tuf.api.exceptions import UnsignedMetadataError
        from tuf.api.metadata import Metadata, Root

        if self._tuf_bytes is None:
            raise TrustError("this trust root is not TUF metadata; it cannot be rotated")
        current = Metadata[Root].from_bytes(self._tuf_bytes).signed
        try:
            md = Metadata[Root].from_bytes(new_root)
        except Exception as exc:
            raise TrustError(f"not TUF root metadata: {exc}") from None
        if not isinstance(md.signed, Root):
            raise TrustError("TUF metadata is not of type root")
        if md.signed.version != current.version + 1:
            raise TrustError(
                f"root version {md.signed.version} does not follow installed {current.version}"
            )
        try:
            current.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise TrustError(
                f"new root is not signed by the current root threshold: {exc}"
            ) from None
        try:
            md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise TrustError(f"new root does not meet its own threshold: {exc}") from None
        if md.signed.is_expired(now or datetime.now(UTC)):
            raise TrustError("new root metadata is already expired")
        return self._from_verified_tuf(md, new_root)

    def update(self, new_root: bytes, *, now: datetime | None = None) -> TrustRoot | None:
        """Apply root metadata pushed to a gateway (``down/trust``, usually retained).

        Returns the rotated root, or ``None`` when ``new_root`` is exactly the installed
        version (the retained message delivered again after a reconnect). Anything else
        that ``rotate`` refuses (older, skipped or under-signed versions) raises TrustError.
        """
        if len(new_root) > MAX_ROOT_BYTES:
            raise TrustError(f"root metadata is over {MAX_ROOT_BYTES} bytes")
        if self._tuf_bytes is not None and signature_process.isolated():
            if new_root == self._tuf_bytes:
                return None
            request = {
                "op": "trust-update",
                "current": signature_process.b64(self._tuf_bytes),
                "new": signature_process.b64(new_root),
                "now": now.isoformat() if now else None,
            }
            return self._from_child(request, new_root)
        if self._tuf_bytes is not None:
            from tuf.api.metadata import Metadata, Root

            try:
                incoming = Metadata[Root].from_bytes(new_root)
            except Exception as exc:
                raise TrustError(f"not TUF root metadata: {exc}") from None
            current = Metadata[Root].from_bytes(self._tuf_bytes)
            if (
                isinstance(incoming.signed, Root)
                and incoming.signed.version == current.signed.version
                and incoming.signed_bytes == current.signed_bytes
            ):
                return None
        return self.rotate(new_root, now=now)

    # -- files ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> TrustRoot:
        data = Path(path).read_bytes()
        return cls.parse(data)

    @classmethod
    def parse(cls, data: bytes) -> TrustRoot:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise TrustError(f"trust root is not JSON: {exc}") from None
        if isinstance(obj, dict) and isinstance(obj.get("signed"), dict):
            if signature_process.isolated():
                return cls._parse_in_child(data)
            return cls.from_tuf(data)
        return cls.model_validate_json(data)

    @classmethod
    def _parse_in_child(cls, data: bytes) -> TrustRoot:
        # The check is a pure function of the bytes, so the same file read twice (the
        # preflight, then the agent) costs one child process, not two.
        global _last_parsed
        if _last_parsed is not None and _last_parsed[0] == data:
            trust = cls.model_validate(_last_parsed[1])
            trust._tuf_bytes = data
            return trust
        root = cls._from_child({"op": "trust-parse", "root": signature_process.b64(data)}, data)
        if root is None:
            raise TrustError("the signature check process returned no root")
        _last_parsed = (data, root.model_dump(mode="json"))
        return root

    @classmethod
    def _from_child(cls, request: dict[str, Any], data: bytes) -> TrustRoot | None:
        """A TUF root checked by python-tuf in a child process (``signature_process``). The
        child answers with the root it derived from ``data`` (``None``: unchanged), and
        ``data`` is kept byte for byte."""
        try:
            answer = signature_process.call(request)
        except signature_process.SignatureProcessError as exc:
            raise TrustError(str(exc)) from None
        if "error" in answer:
            raise TrustError(str(answer["error"]))
        if answer.get("trust") is None:
            return None
        try:
            trust = cls.model_validate(answer["trust"])
        except ValidationError:
            raise TrustError(f"signature check process answered {answer!r:.200}") from None
        trust._tuf_bytes = data
        return trust

    def to_bytes(self) -> bytes:
        """The document gateways hold: the signed TUF root byte for byte, or our JSON."""
        if self._tuf_bytes is not None:
            return self._tuf_bytes
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode()

    def save(self, path: str | Path) -> None:
        """Write atomically (a torn trust root would brick the gateway's updates)."""
        import os

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_bytes()
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)

    def is_expired(self, now: datetime | None = None) -> bool:
        if not self.expires:
            return False
        expires = datetime.fromisoformat(self.expires.replace("Z", "+00:00"))
        return expires < (now or datetime.now(UTC))

    def role_keys(self, role: str) -> tuple[dict[str, str], int]:
        """Public keys (hex by keyid) trusted for ``role`` minus revoked ones, and threshold."""
        r = self.roles.get(role)
        if r is None:
            return {}, 1
        keys = {
            kid: self.keys[kid].public
            for kid in r.keyids
            if kid in self.keys and kid not in self.revoked
        }
        return keys, r.threshold
