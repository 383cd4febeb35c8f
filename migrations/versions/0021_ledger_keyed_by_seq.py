"""the send ledger keyed by its chain position (seq): no surrogate id, one index write per row fewer

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Schema changes only: the append-only trigger refuses UPDATE and DELETE of rows, not these.
    with op.batch_alter_table("send_ledger", schema=None) as batch_op:
        batch_op.drop_constraint("pk_send_ledger", type_="primary")
        batch_op.drop_constraint("uq_send_ledger_seq", type_="unique")
        batch_op.drop_column("id")
        batch_op.create_primary_key("pk_send_ledger", ["seq"])


def downgrade() -> None:
    with op.batch_alter_table("send_ledger", schema=None) as batch_op:
        batch_op.drop_constraint("pk_send_ledger", type_="primary")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE send_ledger ADD COLUMN id BIGSERIAL NOT NULL")  # numbers every row
    else:
        with op.batch_alter_table("send_ledger", schema=None) as batch_op:
            batch_op.add_column(sa.Column("id", sa.Integer(), nullable=True))
        op.execute("UPDATE send_ledger SET id = seq")
    with op.batch_alter_table("send_ledger", schema=None) as batch_op:
        batch_op.alter_column("id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_primary_key("pk_send_ledger", ["id"])
        batch_op.create_unique_constraint("uq_send_ledger_seq", ["seq"])
