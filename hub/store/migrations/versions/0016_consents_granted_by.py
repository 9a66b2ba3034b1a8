"""consents: who recorded each — the client system that collected it (`client`; empty on older rows) or the citizen
themselves, signed in with their ID token (`citizen`).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("consents", sa.Column("granted_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consents") as batch_op:
        batch_op.drop_column("granted_by")
