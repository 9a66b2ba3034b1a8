"""payments and the record of payment callbacks

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.store.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("reference", sa.String(50), nullable=False),
        sa.Column("dossier_code", sa.String(40), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fees", hub.store.models.JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pay_url", sa.String(500), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("bank", sa.String(20), nullable=True),
        sa.Column("paid_at", When, nullable=True),
        sa.Column("settled_by", sa.String(16), nullable=True),
        sa.Column("last_checked_at", When, nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("reference", name=op.f("uq_payments_reference")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_payments_transaction_id")),
    )
    op.create_index("ix_payments_dossier", "payments", ["dossier_code"])
    op.create_index("ix_payments_status_created", "payments", ["status", "created_at"])
    op.create_table(
        "payment_callbacks",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(50), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("answer_code", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("body_digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_callbacks")),
    )
    op.create_index(op.f("ix_payment_callbacks_reference"), "payment_callbacks", ["reference"])


def downgrade() -> None:
    op.drop_table("payment_callbacks")
    op.drop_table("payments")
