"""console: operators and job runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("username", name=op.f("uq_operators_username")),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("finished_at", When, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", hub.store.models.JSONType, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    op.create_index("ix_job_runs_name_started", "job_runs", ["name", "started_at"])
    # the console lists dead letters and backlogs by destination
    op.create_index("ix_outbox_state_destination", "outbox", ["state", "destination"])


def downgrade() -> None:
    op.drop_index("ix_outbox_state_destination", table_name="outbox")
    op.drop_table("job_runs")
    op.drop_table("operators")
