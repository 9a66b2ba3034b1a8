"""population_cache: short-lived, encrypted population replies

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.store.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "population_cache",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", hub.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", hub.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_population_cache")),
    )
    op.create_index(op.f("ix_population_cache_expires_at"), "population_cache", ["expires_at"])


def downgrade() -> None:
    op.drop_table("population_cache")
