"""Tables: dossiers (current state), status events (append-only), outbox, outbound exchanges (append-only),
idempotency keys of client requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive, in UTC, so they still sort)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table(model: type[Base]) -> Table:
    """A model's Core table, for the prebuilt statements of hot paths (typed: `Model.__table__` is a FromClause
    to type checkers)."""
    return Base.metadata.tables[model.__tablename__]


class Dossier(Base):
    """The current state of a dossier (hồ sơ) as hub knows it."""

    __tablename__ = "dossiers"
    __table_args__ = (
        Index("ix_dossiers_status_due_at", "status", "due_at"),
        Index("ix_dossiers_updated_at_id", "updated_at", "id"),  # the console's list, newest first, a page at a time
        # the closed ones not yet redacted, by their last change, for the retention job (hub.services.retention):
        # a change to an open dossier costs it nothing, and the redacted ones leave it
        Index(
            "ix_dossiers_closed_updated_at",
            "updated_at",
            postgresql_where=text("status IN (3, 7, 8, 10) AND redacted_at IS NULL"),
            sqlite_where=text("status IN (3, 7, 8, 10) AND redacted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)  # MaHoSo
    agency: Mapped[str] = mapped_column(String(32), index=True)
    procedure_code: Mapped[str] = mapped_column(String(16))  # MaTTHC
    status: Mapped[int] = mapped_column(SmallInteger)  # TrangThaiHoSo
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    subject_hmac: Mapped[str | None] = mapped_column(String(64), index=True)  # HMAC of the owner's ID number
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the dossier in the national (DongBoHoSoMC) shape
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # NgayHenTra (appointment for the result)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # when its personal data was removed, closed past the retention period (hub.services.retention); a change
    # after that clears it (it may have brought some again)
    redacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StatusEvent(Base):
    """Append-only: one row per accepted change of a dossier, numbered per dossier (seq 1, 2, ...)."""

    __tablename__ = "status_events"
    __table_args__ = (UniqueConstraint("dossier_id", "seq", name="uq_status_events_dossier_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))  # dossier.sync | dossier.progress
    status: Mapped[int] = mapped_column(SmallInteger)
    previous_status: Mapped[int | None] = mapped_column(SmallInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    client: Mapped[str] = mapped_column(String(64))
    correlation_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """One message to deliver to one destination. The database is the source of truth for delivery."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("dossier_id", "destination", "seq", name="uq_outbox_dossier_destination_seq"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_state_destination", "state", "destination"),
        # what the relay's claim walks, so it costs the batch and not the backlog: pending rows in due order,
        # and the rows not yet delivered of a dossier (is an earlier event still in line?)
        Index(
            "ix_outbox_pending_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_outbox_undelivered",
            "dossier_id",
            "destination",
            "seq",
            postgresql_where=text("state <> 'delivered'"),
            sqlite_where=text("state <> 'delivered'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    seq: Mapped[int] = mapped_column(Integer)
    destination: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    idempotency_key: Mapped[str] = mapped_column(String(80))
    correlation_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # pending | in_flight | delivered | dead | set_aside
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(36))
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    peer_reply: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # a dead letter an operator decided not to deliver (it no longer holds back its dossier's later messages)
    set_aside_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    set_aside_by: Mapped[str | None] = mapped_column(String(64))
    set_aside_reason: Mapped[str | None] = mapped_column(Text)


class Exchange(Base):
    """Append-only record of every exchange with a peer: hub's calls out, and what peers push in (`inbound.*`)."""

    __tablename__ = "exchanges"
    __table_args__ = (Index("ix_exchanges_peer_outcome_at", "peer", "outcome", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    peer: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    outbox_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    response_digest: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[float] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(16))  # ok | retryable | permanent
    error_code: Mapped[str | None] = mapped_column(String(64))


class IdempotencyRecord(Base):
    """The answer given to a client's request with an Idempotency-Key, replayed for repeats."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("client", "key", name="uq_idempotency_keys_client_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(SmallInteger)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Procedure(Base):
    """A procedure (thủ tục hành chính) of the national catalogue, synced from the portal (LayDanhSachTTHC)."""

    __tablename__ = "procedures"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)  # MaTTHC
    name: Mapped[str] = mapped_column(String(500))
    limit_working_days: Mapped[int] = mapped_column(Integer)  # ThoiHanGiaiQuyet
    fees: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)  # PhiLePhi: [{TenPhiLePhi, Gia}]
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Route(Base):
    """Down-flow routing: which provincial one-stop system serves an agency code (exact, or a prefix with '*')."""

    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agency_pattern: Mapped[str] = mapped_column(String(32), unique=True)
    endpoint: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccessLogEntry(Base):
    """Append-only, hash-chained record of every access to a citizen's personal data (allowed or refused).
    `subject` is an HMAC of the personal ID, never the ID. `chain_hash` = HMAC(audit key, prev_hash + entry):
    editing or deleting any entry breaks the chain from there on (`hub audit verify`). Triggers refuse UPDATE
    and DELETE on both backends."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_subject_at", "subject", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    client: Mapped[str] = mapped_column(String(64))  # the client system that asked
    agency: Mapped[str] = mapped_column(String(32))  # the agency it asked for
    officer: Mapped[str] = mapped_column(String(100))  # the officer (MaCanBo) or end user behind the request
    subject: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256 of the personal ID
    subject_role: Mapped[str] = mapped_column(String(32))  # subject | spouse | father | mother
    procedure: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(100))
    legal_basis: Mapped[str] = mapped_column(String(200))
    consent_ref: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64))  # MaYeuCau sent to the population database
    correlation_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # allowed | refused | not_found | failed
    reason: Mapped[str | None] = mapped_column(String(500))
    fields: Mapped[list[str]] = mapped_column(JSONType)  # names of the fields that left hub
    prev_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64), unique=True)


class Consent(Base):
    """A citizen's consent to a client system: to reuse documents they submitted before, for a purpose, until it
    expires or is revoked — recorded by the client system that collected it or by the citizen, signed in. Checked at
    the moment of use."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_subject", "subject"),)

    ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))  # HMAC of the personal ID
    client: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(100))
    scope: Mapped[list[str]] = mapped_column(JSONType)  # e.g. ["documents"]
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # who recorded it: the client system that collected it ("client"; None on rows from before) or the citizen,
    # signed in with their ID token ("citizen": the consent is their own act, not a client's word for it)
    granted_by: Mapped[str | None] = mapped_column(String(16))


class Document(Base):
    """A document issued to a citizen with a dossier (a result: extract, certificate), indexed for reuse."""

    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_subject_kind", "subject", "kind"),
        UniqueConstraint("issuer", "number", name="uq_documents_issuer_number"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(64))  # HMAC of the holder's personal ID
    kind: Mapped[str] = mapped_column(String(64))  # e.g. giay_chung_nhan_ket_hon
    title: Mapped[str] = mapped_column(String(300))
    number: Mapped[str] = mapped_column(String(100))  # số hiệu of the document
    issuer: Mapped[str] = mapped_column(String(32))  # agency code
    dossier_code: Mapped[str | None] = mapped_column(String(40))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: does not expire
    reference: Mapped[str] = mapped_column(String(500))  # where the document can be fetched
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EdocSent(Base):
    """A document hub filed for other agencies through the document exchange (the outbox delivers it): what status
    notices from its receivers are matched against."""

    __tablename__ = "edocs_sent"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(String(64), unique=True)  # edXML DocumentId, hub's
    event_id: Mapped[str] = mapped_column(String(36))  # its outbox row's
    dossier_code: Mapped[str] = mapped_column(String(40), index=True)
    agency: Mapped[str] = mapped_column(String(32))  # the sender
    sender_name: Mapped[str] = mapped_column(String(500))
    receivers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)  # [{id, name}]
    code: Mapped[str] = mapped_column(String(120))  # số/ký hiệu, e.g. 57/TLKS-UBND
    promulgation_date: Mapped[str] = mapped_column(String(10))  # ISO date, as in the envelope
    subject: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recall_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # hub sent a recall (13)
    recall_reason: Mapped[str | None] = mapped_column(Text)


class EdocNotice(Base):
    """Append-only record of every status notice the document exchange relayed, and hub's verdict on it: applied
    (signed by a receiver of a document hub sent), or why not. The signed envelope is kept as evidence."""

    __tablename__ = "edoc_notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notice_id: Mapped[str] = mapped_column(String(64), unique=True)  # the platform's id: each taken once
    document_id: Mapped[str | None] = mapped_column(String(64), index=True)
    receiver: Mapped[str | None] = mapped_column(String(32))  # agency code of the notice's author
    receiver_name: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str | None] = mapped_column(String(2))  # contracts/document_exchange/status_codes.json
    description: Mapped[str | None] = mapped_column(Text)
    staff: Mapped[str | None] = mapped_column(String(500))
    stated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the receiver says it happened
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verdict: Mapped[str] = mapped_column(String(24))  # applied | unknown_document | not_a_receiver | rejected
    detail: Mapped[str | None] = mapped_column(Text)
    signer: Mapped[str | None] = mapped_column(String(500))
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary)


class Payment(Base):
    """A fee payment for a dossier at a payment platform. Amounts are integer đồng. `transaction_id` (the
    platform's MaGiaoDich) is unique: a transaction is credited once, however often it is reported."""

    __tablename__ = "payments"
    __table_args__ = (
        Index("ix_payments_dossier", "dossier_code"),
        Index("ix_payments_status_created", "status", "created_at"),
        Index("ix_payments_created", "created_at", "id"),  # the console's list of every payment, newest first
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    reference: Mapped[str] = mapped_column(String(50), unique=True)  # MaThamChieu: ours
    dossier_code: Mapped[str] = mapped_column(String(40))
    agency: Mapped[str] = mapped_column(String(32))
    client: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    fees: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))  # pending | paid | failed | expired (abandoned, never paid)
    pay_url: Mapped[str | None] = mapped_column(Text)
    # set while a request is asking the platform to create it (INIT): until then another request for it waits for
    # that answer rather than send a second INIT; left set by a crash, it lapses and the next request asks again
    init_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    transaction_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    bank: Mapped[str | None] = mapped_column(String(20))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settled_by: Mapped[str | None] = mapped_column(String(16))  # callback | query
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentCallback(Base):
    """Append-only record of every callback a payment platform sent, and what hub answered."""

    __tablename__ = "payment_callbacks"
    # the refused ones, newest first, for the console (few among many: a partial index of them alone)
    __table_args__ = (
        Index(
            "ix_payment_callbacks_rejected",
            "id",
            postgresql_where=text("verdict = 'rejected'"),
            sqlite_where=text("verdict = 'rejected'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    platform: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(50), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))  # applied | duplicate | declined | rejected
    answer_code: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(500))
    body_digest: Mapped[str] = mapped_column(String(64))


class Operator(Base):
    """A person who uses the operator console. Passwords are argon2 hashes; roles: viewer, operator."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the second factor (RFC 6238): its secret encrypted under hub's secret key, None until enrolled; the last time
    # step a code was taken for (a code is taken once)
    totp_secret: Mapped[str | None] = mapped_column(Text, default=None)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)


class JobRun(Base):
    """One run of a scheduled job (portal polling, payment checks), whoever ran it: the console shows the last."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_name_started", "name", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | error
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)


class OperatorAction(Base):
    """Append-only record of what operators did to hub (replays, retries, dead letters set aside, maintenance,
    payments queried, operator accounts changed) and of their sign-ins, failed ones included: who, when, to what,
    with what result — written in the transaction of the action itself."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)  # console:<user>, cli:<os user>
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[dict[str, Any]] = mapped_column(JSONType)  # what it was done to (ids, MaHoSo, peer, reference)
    outcome: Mapped[dict[str, Any]] = mapped_column(JSONType)  # what came of it (rows replayed, …)
    correlation_id: Mapped[str | None] = mapped_column(String(64))


class Flag(Base):
    """Cluster-wide switches set by operators (e.g. maintenance: stop dispatching, keep accepting)."""

    __tablename__ = "flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PopulationCacheEntry(Base):
    """A population-database reply kept for a few minutes, encrypted (AES-GCM), keyed by an HMAC of the ID."""

    __tablename__ = "population_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC of (personal ID, name, birth date)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
