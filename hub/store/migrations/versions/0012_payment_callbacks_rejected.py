"""payment_callbacks: a partial index of the refused callbacks (forged, replayed, unknown reference, another
amount), which the console lists newest first — without it, a walk back through every callback ever received.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rejected = sa.text("verdict = 'rejected'")
    op.create_index(
        "ix_payment_callbacks_rejected",
        "payment_callbacks",
        ["id"],
        postgresql_where=rejected,
        sqlite_where=rejected,
    )


def downgrade() -> None:
    op.drop_index("ix_payment_callbacks_rejected", table_name="payment_callbacks")
