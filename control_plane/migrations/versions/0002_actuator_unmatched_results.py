"""actuator results for commands the control plane did not send (kept, not dropped)

Revision ID: 0002_actuator_unmatched
Revises: 0001_initial
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_actuator_unmatched"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "actuator_unmatched_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("received", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("actuator_unmatched_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_actuator_unmatched_results_device_id"), ["device_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_actuator_unmatched_results_command_id"), ["command_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("actuator_unmatched_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actuator_unmatched_results_command_id"))
        batch_op.drop_index(batch_op.f("ix_actuator_unmatched_results_device_id"))
    op.drop_table("actuator_unmatched_results")
