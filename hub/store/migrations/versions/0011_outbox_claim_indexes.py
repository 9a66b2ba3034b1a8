"""outbox: partial indexes for the relay's claim (pending rows in due order; undelivered rows per dossier)

With a backlog (a portal outage of an hour), the claim's "is an earlier event of this dossier still in line?"
test scanned every undelivered row: 150-190 ms per claim at 100,000 pending. With these it walks the due rows in
order and probes each dossier's line by index, stopping at the batch size: about 2 ms.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pending = sa.text("state = 'pending'")
    undelivered = sa.text("state <> 'delivered'")
    op.create_index(
        "ix_outbox_pending_due",
        "outbox",
        ["next_attempt_at", "id"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index(
        "ix_outbox_undelivered",
        "outbox",
        ["dossier_id", "destination", "seq"],
        postgresql_where=undelivered,
        sqlite_where=undelivered,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_undelivered", table_name="outbox")
    op.drop_index("ix_outbox_pending_due", table_name="outbox")
