"""Control-plane records of enrollment tokens, enrolled devices and their certificates.

Tokens are stored only as SHA-256 digests: they are 256-bit random strings, so a fast hash is
enough (no password-style KDF needed) and a leaked database cannot be replayed. A token is
bound to one device id, expires, and is consumed by a single conditional UPDATE so two
concurrent enrollments cannot both use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from provisioning.certificate_authority import RevokedCert
from provisioning.fleet import RESERVED_IDENTITIES

METADATA = sa.MetaData()

# A device id becomes an MQTT username and a topic level: no wildcards, separators or spaces.
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HARDWARE_CLASS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def new_token() -> str:
    """32 random bytes, URL-safe base64, never starting with '-' (a command line would read
    such a token as an option: ``enroll --token -x...``)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


tokens_table = sa.Table(
    "enrollment_tokens",
    METADATA,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(63), nullable=False, index=True),
    sa.Column("hardware_class", sa.String(63), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_by", sa.String(128), nullable=False, default=""),
)

devices_table = sa.Table(
    "devices_enrolled",
    METADATA,
    sa.Column("device_id", sa.String(63), primary_key=True),
    sa.Column("hardware_class", sa.String(63), nullable=False),
    sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_reason", sa.String(256), nullable=True),
)

certificates_table = sa.Table(
    "device_certificates",
    METADATA,
    sa.Column("serial", sa.String(48), primary_key=True),  # decimal string: exceeds BIGINT
    sa.Column("device_id", sa.String(63), nullable=False, index=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("pem", sa.Text, nullable=False),
)


class EnrollmentError(Exception):
    """Enrollment refused; the message is safe to show to the requester."""


def validate_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.fullmatch(device_id or ""):
        raise ValueError(
            f"invalid device id {device_id!r}: 1-63 of a-z 0-9 _ -, starting with a letter/digit"
        )
    if device_id in RESERVED_IDENTITIES:
        raise ValueError(f"device id {device_id!r} is reserved")
    return device_id


def validate_hardware_class(hardware_class: str) -> str:
    if not HARDWARE_CLASS_RE.fullmatch(hardware_class or ""):
        raise ValueError(f"invalid hardware class {hardware_class!r}")
    return hardware_class


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes even for timezone=True columns.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    hardware_class: str
    enrolled_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_reason: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class TokenGrant:
    device_id: str
    hardware_class: str


class DeviceRegistry:
    """Tokens, devices and certificates in any SQLAlchemy database (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        METADATA.create_all(engine)

    @classmethod
    def sqlite(cls, path: str) -> DeviceRegistry:
        return cls(sa.create_engine(f"sqlite:///{path}"))

    # -- tokens -------------------------------------------------------------------------
    def create_token(
        self,
        device_id: str,
        *,
        hardware_class: str = "generic",
        ttl: dt.timedelta = dt.timedelta(hours=24),
        created_by: str = "",
    ) -> str:
        """Return a fresh one-time token for ``device_id``; only its digest is stored."""
        validate_device_id(device_id)
        validate_hardware_class(hardware_class)
        if ttl <= dt.timedelta(0):
            raise ValueError("token lifetime must be positive")
        token = new_token()
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            conn.execute(
                tokens_table.insert().values(
                    token_sha256=token_digest(token),
                    device_id=device_id,
                    hardware_class=hardware_class,
                    created_at=now,
                    expires_at=now + ttl,
                    created_by=created_by,
                )
            )
        return token

    def consume_token(self, token: str, device_id: str) -> TokenGrant:
        """Spend ``token`` for ``device_id`` or raise ``EnrollmentError`` (one reason for all
        failures, so a caller cannot probe which tokens exist)."""
        now = dt.datetime.now(dt.UTC)
        digest = token_digest(token)
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(tokens_table).where(tokens_table.c.token_sha256 == digest)
            ).first()
            refused = EnrollmentError(
                "enrollment token is invalid, expired, used, or for another device"
            )
            if row is None or row.device_id != device_id or row.used_at is not None:
                raise refused
            if _utc(row.expires_at) <= now:
                raise refused
            done = conn.execute(
                tokens_table.update()
                .where(tokens_table.c.token_sha256 == digest, tokens_table.c.used_at.is_(None))
                .values(used_at=now)
            )
            if done.rowcount != 1:
                raise refused
            device = conn.execute(
                sa.select(devices_table).where(devices_table.c.device_id == device_id)
            ).first()
            if device is not None and device.revoked_at is not None:
                raise EnrollmentError(f"device {device_id} is revoked; issue it a new id")
        return TokenGrant(device_id=row.device_id, hardware_class=row.hardware_class)

    # -- devices ------------------------------------------------------------------------
    def record_certificate(
        self, device_id: str, hardware_class: str, serial: int, not_after: dt.datetime, pem: str
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(devices_table.c.device_id).where(devices_table.c.device_id == device_id)
            ).first()
            if exists is None:
                conn.execute(
                    devices_table.insert().values(
                        device_id=device_id, hardware_class=hardware_class, enrolled_at=now
                    )
                )
            else:
                conn.execute(
                    devices_table.update()
                    .where(devices_table.c.device_id == device_id)
                    .values(hardware_class=hardware_class)
                )
            conn.execute(
                certificates_table.insert().values(
                    serial=str(serial),
                    device_id=device_id,
                    issued_at=now,
                    not_after=not_after,
                    pem=pem,
                )
            )

    def revoke(self, device_id: str, reason: str = "") -> int:
        """Mark the device and all its certificates revoked; return how many certs."""
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            done = conn.execute(
                devices_table.update()
                .where(devices_table.c.device_id == device_id)
                .values(revoked_at=now, revoked_reason=reason[:256])
            )
            if done.rowcount != 1:
                raise KeyError(f"no enrolled device {device_id!r}")
            certs = conn.execute(
                certificates_table.update()
                .where(
                    certificates_table.c.device_id == device_id,
                    certificates_table.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            # Unused tokens for a revoked device must not re-enroll it.
            conn.execute(
                tokens_table.update()
                .where(tokens_table.c.device_id == device_id, tokens_table.c.used_at.is_(None))
                .values(used_at=now)
            )
        return int(certs.rowcount)

    def get(self, device_id: str) -> DeviceRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(devices_table).where(devices_table.c.device_id == device_id)
            ).first()
        return None if row is None else self._record(row)

    def devices(self) -> list[DeviceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(devices_table).order_by(devices_table.c.device_id)).all()
        return [self._record(r) for r in rows]

    def is_active(self, device_id: str) -> bool:
        """True when the device is enrolled and not revoked: rollouts must check this."""
        record = self.get(device_id)
        return record is not None and record.active

    def is_revoked(self, device_id: str) -> bool:
        """True when the device was enrolled and then revoked (unknown ids are not)."""
        record = self.get(device_id)
        return record is not None and not record.active

    def revoked_device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices() if not d.active]

    def revoked_certificates(self) -> list[RevokedCert]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(certificates_table.c.serial, certificates_table.c.revoked_at).where(
                    certificates_table.c.revoked_at.is_not(None)
                )
            ).all()
        return [RevokedCert(int(r.serial), _utc(r.revoked_at)) for r in rows]

    @staticmethod
    def _record(row: sa.Row) -> DeviceRecord:  # type: ignore[type-arg]
        return DeviceRecord(
            device_id=row.device_id,
            hardware_class=row.hardware_class,
            enrolled_at=_utc(row.enrolled_at),
            revoked_at=_utc(row.revoked_at) if row.revoked_at else None,
            revoked_reason=row.revoked_reason,
        )
