"""operators.totp_secret, operators.totp_last_step: an operator's second factor at the console (RFC 6238 codes).
The secret is kept encrypted under hub's secret key (AES-GCM, the user name as associated data); the last time
step a code was taken for, so that a code seen over a shoulder or in a proxy's log cannot be used again.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("operators", sa.Column("totp_secret", sa.Text(), nullable=True))
    op.add_column("operators", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operators") as batch_op:
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_secret")
