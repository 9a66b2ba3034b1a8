"""edocs_sent (the documents hub filed for other agencies, by their edXML DocumentId) and edoc_notices (every
status notice their receivers sent back, with hub's verdict). Documents sent before this revision are taken from
their outbox rows.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from hub.store.models import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    sent = op.create_table(
        "edocs_sent",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("document_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("dossier_code", sa.String(40), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("sender_name", sa.String(500), nullable=False),
        sa.Column("receivers", JSONType, nullable=False),
        sa.Column("code", sa.String(120), nullable=False),
        sa.Column("promulgation_date", sa.String(10), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("recall_requested_at", UTCDateTime(), nullable=True),
        sa.Column("recall_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_edocs_sent"),
        sa.UniqueConstraint("document_id", name="uq_edocs_sent_document_id"),
    )
    op.create_index("ix_edocs_sent_dossier_code", "edocs_sent", ["dossier_code"])
    op.create_table(
        "edoc_notices",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("notice_id", sa.String(64), nullable=False),
        sa.Column("document_id", sa.String(64), nullable=True),
        sa.Column("receiver", sa.String(32), nullable=True),
        sa.Column("receiver_name", sa.String(500), nullable=True),
        sa.Column("status", sa.String(2), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("staff", sa.String(500), nullable=True),
        sa.Column("stated_at", UTCDateTime(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("verdict", sa.String(24), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("signer", sa.String(500), nullable=True),
        sa.Column("envelope", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_edoc_notices"),
        sa.UniqueConstraint("notice_id", name="uq_edoc_notices_notice_id"),
    )
    op.create_index("ix_edoc_notices_document_id", "edoc_notices", ["document_id"])
    _backfill(sent)


def _backfill(sent: Any) -> None:
    """Documents already sent: their outbox rows hold the envelope, which says sender, receivers, code, subject."""
    from hub.signing.edxml import NS
    from hub.signing.xml import parse_untrusted

    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT o.event_id, o.payload, o.created_at, d.code FROM outbox o JOIN dossiers d ON d.id = o.dossier_id "
            "WHERE o.operation = 'send_edoc' ORDER BY o.id"
        )
    ).all()
    out = []
    for event_id, payload, created_at, code in rows:
        data = json.loads(payload) if isinstance(payload, str) else payload
        try:
            root = parse_untrusted(data["envelope"].encode())
        except Exception:  # noqa: BLE001, S112 - an envelope that does not read is not matched; nothing else to do
            continue
        msg = root.find("edXML:edXMLEnvelope/edXML:edXMLHeader/edXML:MessageHeader", NS)
        if msg is None:
            continue
        number = msg.findtext("edXML:Code/edXML:CodeNumber", "", NS)
        notation = msg.findtext("edXML:Code/edXML:CodeNotation", "", NS)
        out.append(
            {
                "document_id": data["document_id"],
                "event_id": event_id,
                "dossier_code": code,
                "agency": msg.findtext("edXML:From/edXML:OrganId", "", NS),
                "sender_name": msg.findtext("edXML:From/edXML:OrganName", "", NS),
                "promulgation_date": msg.findtext("edXML:PromulgationInfo/edXML:PromulgationDate", "", NS),
                "receivers": [
                    {"id": t.findtext("edXML:OrganId", "", NS), "name": t.findtext("edXML:OrganName", "", NS)}
                    for t in msg.findall("edXML:To", NS)
                ],
                "code": f"{number}/{notation}",
                "subject": msg.findtext("edXML:Subject", "", NS),
                "created_at": created_at if not isinstance(created_at, str) else _parse(created_at),
                "recall_requested_at": None,
                "recall_reason": None,
            }
        )
    if out:
        op.bulk_insert(sent, out)


def _parse(value: str) -> Any:
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def downgrade() -> None:
    op.drop_index("ix_edoc_notices_document_id", table_name="edoc_notices")
    op.drop_table("edoc_notices")
    op.drop_index("ix_edocs_sent_dossier_code", table_name="edocs_sent")
    op.drop_table("edocs_sent")
