"""Every control-plane table, on one MetaData: ``control_plane.db.Base.metadata``.

Each area declares its tables as ORM classes on ``Base`` in its own module. The plain
imports below register them all, so ``create_all``, the start-up schema check and Alembic
see every table; an area that adds a table module adds its import here (a wrong name fails
at import, loudly).
"""

from __future__ import annotations

import sqlalchemy as sa

from control_plane import actuators, director, tables
from control_plane.db import Base
from control_plane.drift import tables as drift_tables
from control_plane.rollout import tables as rollout_tables
from control_plane.security import tables as security_tables

TABLE_MODULES = (tables, drift_tables, rollout_tables, security_tables, actuators, director)


def metadata() -> sa.MetaData:
    """The MetaData holding every table the control plane owns."""
    return Base.metadata
