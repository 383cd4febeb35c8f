"""account managers and handoffs

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_managers",
        sa.Column("userid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sac_number", sa.String(length=32), nullable=True),
        sa.Column("licensed", sa.Boolean(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("open_count", sa.Integer(), nullable=False),
        sa.Column("work_days", sa.String(length=7), nullable=False),
        sa.Column("work_start", sa.String(length=5), nullable=False),
        sa.Column("work_end", sa.String(length=5), nullable=False),
        sa.Column("platforms", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("supervisor_userid", sa.String(length=64), nullable=True),
        sa.Column("last_assigned_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["supervisor_userid"],
            ["account_managers.userid"],
            name=op.f("fk_account_managers_supervisor_userid_account_managers"),
        ),
        sa.PrimaryKeyConstraint("userid", name=op.f("pk_account_managers")),
    )
    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("manager_userid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("open_lead_id", sa.Integer(), nullable=True),
        sa.Column("chain_id", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("misses", sa.Integer(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("advice", sa.Boolean(), nullable=False),
        sa.Column("kept_with_owner", sa.Boolean(), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=True),
        sa.Column("offered_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("responded_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("channel_action", sa.String(length=32), nullable=False),
        sa.Column("channel_status", sa.String(length=16), nullable=False),
        sa.Column("channel_target", sa.String(length=64), nullable=False),
        sa.Column("channel_detail", sa.Text(), nullable=False),
        sa.Column("card_response_code", sa.String(length=128), nullable=True),
        sa.Column("card_replace_name", sa.String(length=32), nullable=False),
        sa.Column("actions_due_at", sa.DateTime(), nullable=True),
        sa.Column("action_attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_handoffs_lead_id_leads")),
        sa.ForeignKeyConstraint(
            ["manager_userid"],
            ["account_managers.userid"],
            name=op.f("fk_handoffs_manager_userid_account_managers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoffs")),
        sa.UniqueConstraint("open_lead_id", name=op.f("uq_handoffs_open_lead_id")),
        sa.UniqueConstraint("task_id", name=op.f("uq_handoffs_task_id")),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoffs_actions_due_at"), ["actions_due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_handoffs_chain_id"), ["chain_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_handoffs_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_handoffs_manager_userid"), ["manager_userid"], unique=False)
        batch_op.create_index("ix_handoffs_status_due", ["status", "due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_index("ix_handoffs_status_due")
        batch_op.drop_index(batch_op.f("ix_handoffs_manager_userid"))
        batch_op.drop_index(batch_op.f("ix_handoffs_lead_id"))
        batch_op.drop_index(batch_op.f("ix_handoffs_chain_id"))
        batch_op.drop_index(batch_op.f("ix_handoffs_actions_due_at"))

    op.drop_table("handoffs")
    op.drop_table("account_managers")
