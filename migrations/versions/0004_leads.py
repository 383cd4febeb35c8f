"""leads, hook codes, members

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=30), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("contact_way_config_id", sa.String(length=64), nullable=True),
        sa.Column("qr_code_url", sa.String(length=512), nullable=True),
        sa.Column("kf_open_kfid", sa.String(length=64), nullable=True),
        sa.Column("kf_url", sa.String(length=512), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_hook_codes_code")),
        sa.UniqueConstraint("keyword", name=op.f("uq_hook_codes_keyword")),
    )
    op.create_table(
        "leads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("external_user_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=True),
        sa.Column("hook_code", sa.String(length=30), nullable=True),
        sa.Column("first_state_raw", sa.String(length=128), nullable=True),
        sa.Column("owner_userid", sa.String(length=64), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("external_user_id", name=op.f("uq_leads_external_user_id")),
    )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index("ix_leads_platform_code", ["platform", "hook_code"], unique=False)

    op.create_table(
        "members",
        sa.Column("userid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("userid", name=op.f("pk_members")),
    )
    op.create_table(
        "lead_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("wecom_synced", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_lead_tags_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_tags")),
        sa.UniqueConstraint("lead_id", "name", name="uq_lead_tags_lead_name"),
    )
    with op.batch_alter_table("lead_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_tags_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "lead_touches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=30), nullable=True),
        sa.Column("raw_state", sa.String(length=128), nullable=True),
        sa.Column("member", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_lead_touches_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_touches")),
    )
    with op.batch_alter_table("lead_touches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_touches_lead_id"), ["lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lead_touches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_touches_lead_id"))

    op.drop_table("lead_touches")
    with op.batch_alter_table("lead_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_tags_lead_id"))

    op.drop_table("lead_tags")
    op.drop_table("members")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_platform_code")

    op.drop_table("leads")
    op.drop_table("hook_codes")
