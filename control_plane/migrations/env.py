"""Alembic environment of the control plane.

Target metadata: ``control_plane.db.Base.metadata``, which ``control_plane.table_registry``
fills with every area's tables (control_plane.schema.all_metadata). The URL comes from
the caller's connection (``farmiq control-plane migrate``, start-up), else ``-x url=...``,
else ``FARMIQ_CP__DATABASE_URL``, else alembic.ini's ``sqlalchemy.url``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import engine_from_config, pool

from control_plane.schema import all_metadata

config = context.config
target_metadata = all_metadata()


def _url() -> str:
    x = context.get_x_argument(as_dictionary=True)
    return (
        x.get("url")
        or os.environ.get("FARMIQ_CP__DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or ""
    )


def run_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    section = config.get_section(config.config_ini_section) or {}
    section["sqlalchemy.url"] = _url()
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
