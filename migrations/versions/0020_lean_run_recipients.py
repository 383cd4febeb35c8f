"""lean run recipients: keyed by (run, lead), no surrogate id, no foreign keys (one row per audience member)

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_KEYS = (
    ("fk_run_recipients_run_id_campaign_runs", "campaign_runs", "run_id"),
    ("fk_run_recipients_lead_id_leads", "leads", "lead_id"),
    ("fk_run_recipients_mass_task_id_mass_tasks", "mass_tasks", "mass_task_id"),
)


def upgrade() -> None:
    with op.batch_alter_table("run_recipients", schema=None) as batch_op:
        for name, _, _ in _KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")
        batch_op.drop_constraint("uq_run_recipients_run_lead", type_="unique")
        batch_op.drop_constraint("pk_run_recipients", type_="primary")
        batch_op.drop_column("id")
        batch_op.create_primary_key("pk_run_recipients", ["run_id", "lead_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_run_recipients", "run_recipients", type_="primary")
        op.execute("ALTER TABLE run_recipients ADD COLUMN id BIGSERIAL NOT NULL")  # numbers every row
    else:
        with op.batch_alter_table("run_recipients", schema=None) as batch_op:
            batch_op.drop_constraint("pk_run_recipients", type_="primary")
            batch_op.add_column(sa.Column("id", sa.Integer(), nullable=True))
        op.execute("UPDATE run_recipients SET id = rowid")
    with op.batch_alter_table("run_recipients", schema=None) as batch_op:
        batch_op.alter_column("id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_primary_key("pk_run_recipients", ["id"])
        batch_op.create_unique_constraint("uq_run_recipients_run_lead", ["run_id", "lead_id"])
        for name, table, column in _KEYS:
            batch_op.create_foreign_key(name, table, [column], ["id"])
