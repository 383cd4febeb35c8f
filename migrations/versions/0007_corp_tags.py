"""corp tags

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corp_tags",
        sa.Column("local_name", sa.String(length=64), nullable=False),
        sa.Column("group_name", sa.String(length=30), nullable=False),
        sa.Column("tag_name", sa.String(length=30), nullable=False),
        sa.Column("wecom_tag_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("local_name", name=op.f("pk_corp_tags")),
        sa.UniqueConstraint("wecom_tag_id", name=op.f("uq_corp_tags_wecom_tag_id")),
    )
    with op.batch_alter_table("lead_tags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sync_error", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lead_tags", schema=None) as batch_op:
        batch_op.drop_column("sync_error")

    op.drop_table("corp_tags")
