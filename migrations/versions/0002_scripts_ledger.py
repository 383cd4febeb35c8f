"""scripts, approvals, send ledger, alerts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("raised_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_open", ["acknowledged", "raised_at"], unique=False)

    op.create_table(
        "scripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scripts")),
        sa.UniqueConstraint("key", name=op.f("uq_scripts_key")),
    )
    op.create_table(
        "send_ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("entry_type", sa.String(length=16), nullable=False),
        sa.Column("ref_seq", sa.BigInteger(), nullable=True),
        sa.Column("recipient", sa.String(length=128), nullable=False),
        sa.Column("sender", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("script_key", sa.String(length=64), nullable=False),
        sa.Column("script_version", sa.Integer(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=True),
        sa.Column("rendered_text", sa.Text(), nullable=False),
        sa.Column("lint_verdict", sa.String(length=16), nullable=False),
        sa.Column("lexicon_version", sa.String(length=32), nullable=False),
        sa.Column("wecom_id", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_ledger")),
        sa.UniqueConstraint("seq", name=op.f("uq_send_ledger_seq")),
    )
    with op.batch_alter_table("send_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_send_ledger_recipient", ["recipient"], unique=False)
        batch_op.create_index("ix_send_ledger_recorded_at", ["recorded_at"], unique=False)

    op.create_table(
        "script_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("script_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=True),
        sa.Column("lint_verdict", sa.String(length=16), nullable=False),
        sa.Column("lint_findings", sa.JSON(), nullable=False),
        sa.Column("lexicon_version", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["script_id"], ["scripts.id"], name=op.f("fk_script_versions_script_id_scripts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_script_versions")),
        sa.UniqueConstraint("script_id", "number", name="uq_script_versions_number"),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(), nullable=True),
        sa.Column("valid_until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"], ["script_versions.id"], name=op.f("fk_approvals_version_id_script_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_version_id"), ["version_id"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # The ledger is append-only: the database itself refuses to change or remove a row.
        op.execute(
            """
            CREATE FUNCTION send_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'send_ledger is append-only: % refused', TG_OP;
            END $$;
            """
        )
        op.execute(
            "CREATE TRIGGER send_ledger_no_update_delete BEFORE UPDATE OR DELETE ON send_ledger "
            "FOR EACH ROW EXECUTE FUNCTION send_ledger_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS send_ledger_no_update_delete ON send_ledger")
        op.execute("DROP FUNCTION IF EXISTS send_ledger_append_only()")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvals_version_id"))

    op.drop_table("approvals")
    op.drop_table("script_versions")
    with op.batch_alter_table("send_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_send_ledger_recorded_at")
        batch_op.drop_index("ix_send_ledger_recipient")

    op.drop_table("send_ledger")
    op.drop_table("scripts")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_open")

    op.drop_table("alerts")
