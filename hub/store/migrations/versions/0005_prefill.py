"""pre-fill: access log (append-only, hash-chained), consents, documents

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.store.models.UTCDateTime(timezone=True)
JSONType = hub.store.models.JSONType


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("officer", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("subject_role", sa.String(32), nullable=False),
        sa.Column("procedure", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("legal_basis", sa.String(200), nullable=False),
        sa.Column("consent_ref", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("fields", JSONType, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("chain_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log")),
        sa.UniqueConstraint("chain_hash", name=op.f("uq_access_log_chain_hash")),
    )
    op.create_index("ix_access_log_subject_at", "access_log", ["subject", "at"])
    op.create_table(
        "consents",
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("scope", JSONType, nullable=False),
        sa.Column("granted_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=True),
        sa.Column("revoked_at", When, nullable=True),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_consents")),
    )
    op.create_index("ix_consents_subject", "consents", ["subject"])
    op.create_table(
        "documents",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("number", sa.String(100), nullable=False),
        sa.Column("issuer", sa.String(32), nullable=False),
        sa.Column("dossier_code", sa.String(40), nullable=True),
        sa.Column("issued_at", When, nullable=False),
        sa.Column("valid_until", When, nullable=True),
        sa.Column("reference", sa.String(500), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint("issuer", "number", name="uq_documents_issuer_number"),
    )
    op.create_index("ix_documents_subject_kind", "documents", ["subject", "kind"])
    # The access log is append-only at the database too: UPDATE and DELETE are refused.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'access_log is append-only'; END $$;
            """
        )
        op.execute(
            "CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log "
            "FOR EACH ROW EXECUTE FUNCTION access_log_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER access_log_no_{action.lower()} BEFORE {action} ON access_log "
                "BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS access_log_append_only ON access_log")
        op.execute("DROP FUNCTION IF EXISTS access_log_append_only()")
    op.drop_table("documents")
    op.drop_table("consents")
    op.drop_table("access_log")
