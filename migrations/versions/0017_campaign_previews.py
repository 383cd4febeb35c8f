"""campaign dry runs as background jobs, with their recipients stored

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_previews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("occurrence", sa.DateTime(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("message", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_previews_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_previews")),
    )
    op.create_index("ix_campaign_previews_campaign", "campaign_previews", ["campaign_id", "id"])
    op.create_index("ix_campaign_previews_status", "campaign_previews", ["status"])
    op.create_table(
        "campaign_preview_recipients",
        sa.Column("preview_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("external_user_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("skip_reason", sa.String(length=64), nullable=True),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("open_kfid", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["preview_id"],
            ["campaign_previews.id"],
            name=op.f("fk_campaign_preview_recipients_preview_id_campaign_previews"),
        ),
        sa.PrimaryKeyConstraint("preview_id", "lead_id", name=op.f("pk_campaign_preview_recipients")),
    )


def downgrade() -> None:
    op.drop_table("campaign_preview_recipients")
    op.drop_index("ix_campaign_previews_status", table_name="campaign_previews")
    op.drop_index("ix_campaign_previews_campaign", table_name="campaign_previews")
    op.drop_table("campaign_previews")
