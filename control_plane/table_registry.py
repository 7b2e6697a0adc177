"""Modules that declare control-plane tables. Each area adds its module here so that
``create_all`` and Alembic see every table."""

from __future__ import annotations

import importlib

TABLE_MODULES = [
    "control_plane.tables",
    "control_plane.drift.tables",
    "control_plane.security.tables",
    "control_plane.rollout.tables",
    "control_plane.actuators",
    "control_plane.director",
]


def import_table_modules() -> None:
    for name in TABLE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
