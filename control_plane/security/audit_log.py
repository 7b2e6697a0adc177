"""Append-only audit log of every change: who, what, on what, when, from where.

Append-only is enforced by the database, not by convention: triggers abort any UPDATE or
DELETE on the table (SQLite and PostgreSQL), so a bug or a compromised handler using the
application's connection cannot rewrite history.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from control_plane.security.tables import audit_table

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]
_PG_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION farmiq_audit_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION farmiq_audit_append_only()""",
]


def create_audit_table(engine: sa.Engine) -> None:
    audit_table.create(engine, checkfirst=True)
    statements = _PG_TRIGGERS if engine.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    if engine.dialect.name not in ("postgresql", "sqlite"):
        return
    with engine.begin() as conn:
        for stmt in statements:
            conn.execute(sa.text(stmt))


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    source_ip: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "source_ip": self.source_ip,
            "detail": self.detail,
        }


def _engine(ctx_or_engine: Any) -> sa.Engine:
    engine = getattr(ctx_or_engine, "engine", ctx_or_engine)
    if not isinstance(engine, sa.Engine):
        raise TypeError("audit() needs a ControlPlaneContext (with .engine) or an Engine")
    return engine


def audit(
    ctx: Any,
    actor: str,
    action: str,
    target: str = "",
    source_ip: str = "",
    detail: dict[str, Any] | None = None,
) -> int:
    """Append one entry; ``ctx`` is a ControlPlaneContext or a SQLAlchemy Engine."""
    engine = _engine(ctx)
    with engine.begin() as conn:
        result = conn.execute(
            audit_table.insert().values(
                at=dt.datetime.now(dt.UTC),
                actor=actor[:128],
                action=action[:128],
                target=target[:256],
                source_ip=(source_ip or "")[:64],
                detail=json.dumps(detail or {}, sort_keys=True, default=str),
            )
        )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def audit_in_session(
    session: Any,
    actor: str,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an automatic action's entry inside the caller's transaction (a scheduler step
    that holds a row lock must not open a second write transaction: SQLite would wait on
    itself). Committed, or rolled back, with the change it records."""
    body = {**(detail or {}), "before": before, "after": after}
    session.execute(
        audit_table.insert().values(
            at=dt.datetime.now(dt.UTC),
            actor=actor[:128],
            action=action[:128],
            target=target[:256],
            source_ip="",
            detail=json.dumps(body, sort_keys=True, default=str),
        )
    )


def query_audit(
    ctx: Any,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Newest first; page with ``before_id`` = the last id of the previous page."""
    t = audit_table
    stmt = sa.select(t).order_by(t.c.id.desc()).limit(max(1, min(limit, 1000)))
    if actor:
        stmt = stmt.where(t.c.actor == actor)
    if action:
        stmt = stmt.where(t.c.action == action)
    if target:
        stmt = stmt.where(t.c.target == target)
    if since:
        stmt = stmt.where(t.c.at >= since)
    if until:
        stmt = stmt.where(t.c.at < until)
    if before_id:
        stmt = stmt.where(t.c.id < before_id)
    with _engine(ctx).connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        AuditEntry(
            r.id,
            r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC),
            r.actor,
            r.action,
            r.target,
            r.source_ip,
            json.loads(r.detail),
        )
        for r in rows
    ]
