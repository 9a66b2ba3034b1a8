"""payments.pay_url as text: signed gateway URLs (VNPay's carry every parameter and a 128-hex hash) exceed 500

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.alter_column("pay_url", type_=sa.Text(), existing_type=sa.String(500), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.alter_column("pay_url", type_=sa.String(500), existing_type=sa.Text(), existing_nullable=True)
