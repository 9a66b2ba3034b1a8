"""dossiers by their last change: the console's list of dossiers, newest first, pages of it by (updated_at, id)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dossiers_updated_at_id", "dossiers", ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_dossiers_updated_at_id", table_name="dossiers")
