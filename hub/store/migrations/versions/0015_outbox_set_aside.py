"""outbox: a dead letter an operator sets aside (state `set_aside`) — who did, when and why. Such a row is never
delivered, and no longer holds back the later messages of its dossier.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("set_aside_at", UTCDateTime(), nullable=True))
    op.add_column("outbox", sa.Column("set_aside_by", sa.String(length=64), nullable=True))
    op.add_column("outbox", sa.Column("set_aside_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("set_aside_reason")
        batch_op.drop_column("set_aside_by")
        batch_op.drop_column("set_aside_at")
