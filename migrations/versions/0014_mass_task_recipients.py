"""a mass-send task's recipients found by index

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_run_recipients_mass_task", ["mass_task_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_run_recipients_mass_task")
