"""acquisition links on hook codes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hook_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acquisition_link_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("acquisition_url", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hook_codes", schema=None) as batch_op:
        batch_op.drop_column("acquisition_url")
        batch_op.drop_column("acquisition_link_id")
