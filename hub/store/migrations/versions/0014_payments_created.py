"""payments: an index on (created_at, id) for the console's list of every payment, newest first — without it a
sort of every payment ever made (never purged: 110 ms at a million on PostgreSQL) for each page shown.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_created", "payments", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_payments_created", table_name="payments")
