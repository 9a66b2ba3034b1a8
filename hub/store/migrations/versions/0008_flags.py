"""flags (maintenance mode); index for the latest exchange per peer

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.store.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", hub.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_flags")),
    )
    # the console's and `hub peers status`'s "last success / last failure per peer" without a table scan
    op.create_index("ix_exchanges_peer_outcome_at", "exchanges", ["peer", "outcome", "at"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_peer_outcome_at", table_name="exchanges")
    op.drop_table("flags")
