"""rollouts: the W3C traceparent of the request that created the rollout, so its scheduler
steps and the desired states they send continue the operator's trace

Revision ID: 0005_rollout_traceparent
Revises: 0004_drift_expected_accuracy
Create Date: 2026-12-02 06:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_rollout_traceparent"
down_revision: str | None = "0004_drift_expected_accuracy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
