"""A/B variants of approved scripts and each lead's assignment

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "script_experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("script_id", sa.Integer(), nullable=False),
        sa.Column("running_script_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("ended_by", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["script_id"], ["scripts.id"], name=op.f("fk_script_experiments_script_id_scripts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_script_experiments")),
        sa.UniqueConstraint("running_script_id", name=op.f("uq_script_experiments_running_script_id")),
    )
    op.create_index(op.f("ix_script_experiments_script_id"), "script_experiments", ["script_id"])
    op.create_table(
        "script_variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["script_experiments.id"],
            name=op.f("fk_script_variants_experiment_id_script_experiments"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["script_versions.id"], name=op.f("fk_script_variants_version_id_script_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_script_variants")),
        sa.UniqueConstraint("experiment_id", "version_id", name="uq_script_variants_version"),
    )
    op.create_index(op.f("ix_script_variants_version_id"), "script_variants", ["version_id"])
    op.create_table(
        "variant_assignments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["script_experiments.id"],
            name=op.f("fk_variant_assignments_experiment_id_script_experiments"),
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_variant_assignments_lead_id_leads")),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["script_variants.id"],
            name=op.f("fk_variant_assignments_variant_id_script_variants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variant_assignments")),
        sa.UniqueConstraint("experiment_id", "lead_id", name="uq_variant_assignments_lead"),
    )
    op.create_index(op.f("ix_variant_assignments_lead_id"), "variant_assignments", ["lead_id"])
    op.create_index(op.f("ix_variant_assignments_variant_id"), "variant_assignments", ["variant_id"])


def downgrade() -> None:
    op.drop_table("variant_assignments")
    op.drop_table("script_variants")
    op.drop_table("script_experiments")
