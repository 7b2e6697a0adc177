"""drift windows: the label-free expected-accuracy sums (farmiq/cbpe.py) per window

Revision ID: 0004_drift_expected_accuracy
Revises: 0003_director_counters
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_drift_expected_accuracy"
down_revision: str | None = "0003_director_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("drift_windows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("est_rows", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("est_sum", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("est_var", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drift_windows", schema=None) as batch_op:
        batch_op.drop_column("est_var")
        batch_op.drop_column("est_sum")
        batch_op.drop_column("est_rows")
