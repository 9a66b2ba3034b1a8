"""ix_dossiers_closed_updated_at: closed dossiers (3, 7, 8, 10) not yet redacted, by their last change, for the
retention job.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

CLOSED = sa.text("status IN (3, 7, 8, 10) AND redacted_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_dossiers_closed_updated_at",
        "dossiers",
        ["updated_at"],
        postgresql_where=CLOSED,
        sqlite_where=CLOSED,
    )


def downgrade() -> None:
    op.drop_index("ix_dossiers_closed_updated_at", table_name="dossiers")
