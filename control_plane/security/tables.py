"""The security area's tables: operator API keys and the append-only audit log.

Declared like every other control-plane table (ORM classes on ``control_plane.db.Base``);
the stores query them with SQLAlchemy Core through ``api_keys_table`` and ``audit_table``.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db import Base


class ApiKey(Base):
    """One operator API key: only the SHA-256 of its secret is stored."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditLogEntry(Base):
    """One change: who, what, on what, when, from where (append-only, see audit_log.py)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(128), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")


api_keys_table: sa.Table = ApiKey.__table__  # type: ignore[assignment]
audit_table: sa.Table = AuditLogEntry.__table__  # type: ignore[assignment]
