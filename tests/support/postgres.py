"""A throw-away database on the machine's PostgreSQL (trust auth on 127.0.0.1:5432)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def temp_database(prefix: str) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new database; drop it afterwards. Skips the test when
    PostgreSQL is not reachable (scripts/test.sh starts it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
