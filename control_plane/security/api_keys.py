"""API keys: random secrets shown once, stored only as SHA-256 digests, each with a role.

Keys carry 256 bits of randomness, so a fast hash is enough to make a leaked table useless
(slow password KDFs exist for low-entropy human passwords) and lookup is one indexed query.
Format: ``fiq_<8-char id>_<secret>``; the id part is stored in clear to name keys in listings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from control_plane.security.roles import Principal, Role
from control_plane.security.tables import api_keys_table

KEY_PREFIX = "fiq_"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    id: int
    name: str
    role: Role
    prefix: str
    created_at: dt.datetime
    revoked: bool


class ApiKeyStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        api_keys_table.create(engine, checkfirst=True)

    def create(self, name: str, role: Role | str, *, created_by: str = "") -> str:
        """Create a key and return its secret; this is the only time it is visible."""
        role = Role.parse(role)
        if not name or len(name) > 128:
            raise ValueError("key name must be 1-128 characters")
        ident = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{ident}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                api_keys_table.insert().values(
                    name=name,
                    role=role.label,
                    prefix=ident,
                    key_sha256=key_digest(key),
                    created_at=dt.datetime.now(dt.UTC),
                    created_by=created_by,
                )
            )
        return key

    def authenticate(self, key: str) -> Principal | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(api_keys_table).where(
                    api_keys_table.c.key_sha256 == key_digest(key),
                    api_keys_table.c.revoked_at.is_(None),
                )
            ).first()
        if row is None:
            return None
        return Principal(key_id=row.id, name=row.name, role=Role.parse(row.role))

    def revoke(self, name: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                api_keys_table.update()
                .where(api_keys_table.c.name == name, api_keys_table.c.revoked_at.is_(None))
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
        return done.rowcount == 1

    def list(self) -> list[ApiKeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys_table).order_by(api_keys_table.c.id)).all()
        return [
            ApiKeyInfo(
                r.id, r.name, Role.parse(r.role), r.prefix, r.created_at, r.revoked_at is not None
            )
            for r in rows
        ]
