"""The trust root a gateway holds: which keys may sign bundles, and how many must.

Shaped like TUF's root metadata (keys, roles with keyids and a threshold, a version and an
expiry) so that it can be upgraded to full TUF metadata without changing its callers.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from farmiq.bundle.signing import Signer


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

    @classmethod
    def for_signers(cls, signers: list[Signer], threshold: int = 1) -> TrustRoot:
        return cls(
            keys={s.keyid: PublicKey(public=s.public_hex()) for s in signers},
            roles={"bundle": Role(keyids=[s.keyid for s in signers], threshold=threshold)},
        )

    @classmethod
    def load(cls, path: str | Path) -> TrustRoot:
        return cls.model_validate_json(Path(path).read_bytes())

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True))

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
