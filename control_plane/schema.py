"""The control plane's database schema: Alembic migrations on PostgreSQL, ``create_all`` on
the embedded SQLite default.

``prepare_schema(db)`` runs at start-up. On PostgreSQL it upgrades to the newest
migration under a PostgreSQL advisory lock, so replicas starting together do not race; a
database created by ``create_all`` before migrations existed is stamped at the initial
revision first. Tables that a module declares but no migration creates yet are still
created (and named in a warning) so a new area never breaks start-up; the ops tests fail
until a migration covers them. ``farmiq control-plane migrate`` does the same by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from control_plane.db import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
INITIAL_REVISION = "0001_initial"
ADVISORY_LOCK_ID = 0x6661726D6971  # "farmiq"


def all_metadata() -> list[sa.MetaData]:
    """Every MetaData whose tables the control plane owns (one: every area declares its
    tables on ``control_plane.db.Base``; see ``control_plane.table_registry``)."""
    from control_plane.table_registry import metadata

    return [metadata()]


def alembic_config(url: str, connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()  # type: ignore[no-any-return]


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (under an advisory lock on PostgreSQL)."""
    from alembic import command

    engine = db.engine
    with engine.connect() as conn:
        pg = engine.dialect.name == "postgresql"
        if pg:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_ID})
            conn.commit()
        try:
            cfg = alembic_config(db.url, connection=conn)
            insp = sa.inspect(conn)
            ours = {t for md in all_metadata() for t in md.tables}
            existing = set(insp.get_table_names()) & ours
            if existing and not insp.has_table("alembic_version"):
                # Made by create_all before migrations: adopt it at the initial revision.
                log.warning(
                    "database has tables but no migration history: stamping %s", INITIAL_REVISION
                )
                command.stamp(cfg, INITIAL_REVISION)
                conn.commit()
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if pg:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_ID})
                conn.commit()
    return current_revision(engine)


def unmigrated_tables(engine: sa.Engine) -> list[str]:
    """Tables the code declares that the database does not have."""
    have = set(sa.inspect(engine).get_table_names())
    return sorted({t for md in all_metadata() for t in md.tables} - have)


def prepare_schema(db: Database) -> None:
    if db.engine.dialect.name == "sqlite":
        db.create_all()
        return
    rev = upgrade(db)
    missing = unmigrated_tables(db.engine)
    if missing:
        log.warning("tables without a migration, created directly: %s", ", ".join(missing))
        for md in all_metadata():
            md.create_all(db.engine)
    log.info("database schema at revision %s", rev)
