"""procedure catalogue

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.store.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "procedures",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("limit_working_days", sa.Integer(), nullable=False),
        sa.Column("fees", JSON, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("synced_at", hub.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_procedures")),
    )


def downgrade() -> None:
    op.drop_table("procedures")
