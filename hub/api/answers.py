"""What the API answers, as its OpenAPI document says it: the shapes of the answers whose operations return the
services' own dicts (the services build them; these models only document them, so no answer is validated or
copied twice on its way out). A client generated from the document (openapi-generator, NSwag…) reads every field
an answer carries; `tests/api_helpers.as_documented` checks real answers against the served document, with every
object closed, so that a field added to an answer and not here fails a test.

Times are ISO 8601 with their offset (UTC as stored, unless a field says Vietnam's time)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DeliveryState = Literal["pending", "in_flight", "delivered", "dead", "set_aside"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")  # documented exactly: additionalProperties false


# -- dossiers ------------------------------------------------------------------------------------------------------


class Delivery(_Answer):
    """An event's delivery to one destination (an outbox row)."""

    outbox_id: int = Field(description="the row `hub jobs show|replay|retry|set-aside` take")
    destination: str = Field(description="national_portal, one_stop, notify…")
    operation: str = Field(description="the peer's service, e.g. DongBoHoSoMC, CapNhatTienDoHoSoMC")
    state: DeliveryState
    attempts: int
    next_attempt_at: str | None = Field(description="while pending: when it is tried next")
    delivered_at: str | None
    last_error_code: str | None = Field(description="a stable code: GET /peer-errors/{code} says what it means")
    last_error: str | None
    set_aside_at: str | None = Field(default=None, description="only when set aside by an operator")
    set_aside_by: str | None = Field(default=None, description="only when set aside: who (console:<user>, cli:<user>)")
    set_aside_reason: str | None = Field(default=None, description="only when set aside: the operator's reason")
    not_sent: Literal["moved_on"] | None = Field(
        default=None,
        description="only for a citizen's notice done with unsent: it asked for papers or a fee the dossier no "
        "longer waited for when it could go (moved_on)",
    )


class DossierEvent(_Answer):
    event_id: str = Field(description="a UUID; the peers' idempotency key derives from it")
    seq: int = Field(description="its place in the dossier's history, from 1")
    kind: str = Field(description="dossier.sync, dossier.progress, dossier.downflow, payment…")
    TrangThaiHoSo: int = Field(description="the status after the event")
    previous_status: int | None
    at: str = Field(description="when hub recorded it")
    client: str = Field(description="the client system (or hub's own service) that caused it")
    correlation_id: str
    deliveries: list[Delivery]


class Organ(_Answer):
    id: str = Field(description="agency code, e.g. 000.00.00.G22")
    name: str


class DocumentDelivery(_Answer):
    """A document's (or its recall's) delivery to the document exchange platform. A delivered row purged since
    reads as delivered, with nulls."""

    outbox_id: int | None
    state: DeliveryState
    attempts: int | None
    delivered_at: str | None
    last_error_code: str | None = Field(description="a stable code: GET /peer-errors/{code} says what it means")


class ReceiverNotice(_Answer):
    """A signed status notice a receiver sent, verified."""

    status: str | None = Field(
        description="01 arrived, 02 refused, 03 accepted, 04 assigned, 05 being handled, 06 done, 13 recall, "
        "15 recall agreed, 16 recall refused"
    )
    meaning: str | None
    meaning_vi: str | None
    at: str | None = Field(description="when the receiver says it happened")
    description: str | None
    staff: str | None
    signer: str | None = Field(description="the notice's signing certificate's subject")
    received_at: str


class ReceiverSays(_Answer):
    """What one receiver of a document reported last, with every notice before it."""

    id: str | None
    name: str | None
    status: str | None
    meaning: str | None
    meaning_vi: str | None
    at: str | None
    final: bool = Field(description="the status ends the document's course at that receiver")
    history: list[ReceiverNotice]


class Recall(_Answer):
    requested_at: str
    reason: str | None
    delivery: DocumentDelivery


class SentDocument(DocumentDelivery):
    """A document hub sent for the dossier to other agencies (edXML, signed as the agency), with its delivery."""

    document_id: str = Field(description="the edXML envelope's DocumentId")
    code: str = Field(description="the document's number and notation")
    subject: str
    promulgation_date: str
    filed_at: str
    to: list[Organ]
    seq: int | None
    platform_status: str | None = Field(description="what the exchange platform answered on taking it")
    receivers: list[ReceiverSays]
    recall: Recall | None


class DossierView(_Answer):
    """A dossier as hub holds it: its current state, its status history, each event's deliveries, and the documents
    sent for it to other agencies. The owner's personal ID (SoGiayToChuHoSo) is masked."""

    MaHoSo: str
    agency: str
    MaTTHC: str
    TrangThaiHoSo: int = Field(ge=1, le=10)
    status_name: str = Field(description="the status's Vietnamese name")
    updated_at: str
    personal_data_removed_at: str | None = Field(
        description="closed past the retention period (HUB_PERSONAL_DATA_RETENTION_DAYS): when its personal data "
        "was removed"
    )
    dossier: dict[str, Any] = Field(description="the dossier as last filed (DongBoHoSoMC fields)")
    events: list[DossierEvent]
    documents: list[SentDocument]


class OverdueDossier(_Answer):
    MaHoSo: str
    MaTTHC: str
    TrangThaiHoSo: int
    NgayHenTra: str = Field(description="the appointment date, yyyyMMddHHmmss in Vietnam's time")
    overdue_working_days: int = Field(description="working days past NgayHenTra (the province's calendar)")


class OverdueList(_Answer):
    total: int = Field(description="how many dossiers are overdue in all")
    limit: int
    offset: int
    items: list[OverdueDossier] = Field(description="the longest overdue first")


class Undelivered(_Answer):
    destination: str = Field(description="national_portal, one_stop, email or sms")
    waiting: int = Field(description="messages in line or waiting out a retry")
    dead: int = Field(description="messages refused for good or out of attempts (an operator replays them)")
    since: str = Field(description="when the first of them was written (ISO 8601, UTC)")
    attempts: int = Field(description="the first one's attempts so far")
    last_error_code: str | None = Field(
        description="the first one's last error, as a stable code: GET /peer-errors/{code} says what it means"
    )
    last_error: str | None = Field(description="and in words (the peer's answer)")


class UndeliveredDossier(_Answer):
    MaHoSo: str
    MaTTHC: str
    TrangThaiHoSo: int
    deliveries: list[Undelivered] = Field(description="per destination with messages not delivered")


class UndeliveredList(_Answer):
    total: int = Field(description="how many dossiers have messages in that state in all")
    limit: int
    offset: int
    items: list[UndeliveredDossier] = Field(description="the longest waiting first")


class ResolutionFigures(_Answer):
    """How an agency's dossiers of a procedure were resolved over the period (ADR 0048). `to_resolve` =
    `carried_over` + `received` = `resolved` + `ended` + `in_progress`."""

    carried_over: int = Field(description="received before the period, neither resolved nor ended before it")
    received_online: int = Field(description="received in the period online (KenhThucHien 2)")
    received_other: int = Field(description="received in the period in person or by post (KenhThucHien 1, 3)")
    received: int = Field(description="received in the period")
    to_resolve: int = Field(description="carried over and received")
    resolved_early: int = Field(description="resolved on a day before the appointment's (NgayHenTra), or with none")
    resolved_on_time: int = Field(description="resolved on the appointment's day")
    resolved_late: int = Field(description="resolved on a day after the appointment's")
    resolved: int = Field(description="resolved (status 9 or 10 first reached) in the period")
    ended: int = Field(description="withdrawn by the citizen (7) or processing stopped (8) in the period")
    in_progress_in_time: int = Field(description="still being resolved at the period's end, appointment not passed")
    in_progress_overdue: int = Field(description="still being resolved at the period's end, appointment passed")
    in_progress: int
    on_time_rate: float | None = Field(description="percent of the resolved that were early or on time")
    online_rate: float | None = Field(description="percent of the received that came online")


class ResolutionLine(ResolutionFigures):
    agency: str = Field(description="the agency's code (the MaHoSo's first part)")
    MaTTHC: str


class ResolutionReport(_Answer):
    from_: str = Field(alias="from", description="the first day, Vietnam's calendar")
    to: str = Field(description="the last day, included")
    as_of: str = Field(description="the moment the figures hold for: the period's end, or now if it is not over")
    lines: list[ResolutionLine] = Field(description="one a pair of agency and procedure, by agency then MaTTHC")
    total: ResolutionFigures
    unreadable: int = Field(description="dossiers left out, their NgayTiepNhan not a date")


# -- consents, documents, access log ----------------------------------------------------------------------------


class ConsentRecorded(_Answer):
    consent_ref: str = Field(description="give it with a pre-fill to reuse the citizen's documents")
    purpose: str
    scope: list[str]
    expires_at: str | None


class ConsentRevoked(_Answer):
    consent_ref: str
    revoked_at: str


class ConsentWithdrawn(ConsentRevoked):
    state: Literal["withdrawn"]


class CitizenConsent(_Answer):
    """A consent, as the citizen sees it."""

    consent_ref: str
    client: str = Field(description="the client system that may use it")
    purpose: str
    scope: list[str]
    granted_at: str
    expires_at: str | None
    revoked_at: str | None
    state: Literal["active", "expired", "withdrawn"]
    granted_by: Literal["citizen", "client"] = Field(
        description="the citizen's own act, or a client system's record of it"
    )


class CitizenConsentList(_Answer):
    count: int
    items: list[CitizenConsent] = Field(description="newest first")


class DocumentIndexed(_Answer):
    document_id: int
    created: bool = Field(description="false: the issuer's document of that number was indexed already (200)")


class DataUse(_Answer):
    """One entry of the access log about the citizen: who read what of their data, why, on what basis."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    at: str
    client: str
    agency: str
    officer: str
    as_: str = Field(alias="as", description="whose data it was in the request: subject, spouse, father, mother…")
    procedure: str
    purpose: str
    legal_basis: str
    consent_ref: str | None
    outcome: Literal["allowed", "refused", "not_found", "failed"]
    reason: str | None
    fields: list[str] = Field(description="the fields that left hub")


class DataUsage(_Answer):
    count: int
    items: list[DataUse] = Field(description="newest first")


# -- signatures ----------------------------------------------------------------------------------------------------


class VerificationReport(_Answer):
    """A signature's validation, in the vocabulary of ETSI EN 319 102-1."""

    indication: Literal["TOTAL-PASSED", "TOTAL-FAILED", "INDETERMINATE"]
    sub_indication: str | None = Field(description="HASH_FAILURE, REVOKED, NO_CERTIFICATE_CHAIN_FOUND, TRY_LATER…")
    detail: str | None
    signature_format: str | None = Field(description="XMLDSig, XAdES-B-B, XAdES-B-T, XAdES-B-LT, PAdES…")
    signer: dict[str, Any] | None = Field(description="the signing certificate: subject, issuer, serial, validity")
    chain: list[dict[str, Any]] = Field(description="the path built to a trust anchor, signer first")
    signing_time: str | None = Field(description="as the signer claims it (xades:SigningTime)")
    validation_time: str | None
    timestamp: dict[str, Any] | None = Field(description="the signature time-stamp: time, TSA, status")
    revocation: list[dict[str, Any]] = Field(description="the CRL/OCSP evidence used, per certificate")
    algorithms: dict[str, Any]
    signed_references: list[dict[str, Any]] = Field(description="what the signature covers: use only their content")


# -- payments ------------------------------------------------------------------------------------------------------


class PaymentFee(_Answer):
    TenPhiLePhi: str
    MaPhiLePhi: str | None
    SoTien: int = Field(description="whole đồng")


class PaymentView(_Answer):
    reference: str = Field(description="MaThamChieu: hub's reference at the platform")
    MaHoSo: str
    platform: str = Field(description="dvc, vnpay…")
    amount: int = Field(description="whole đồng")
    currency: str
    fees: list[PaymentFee]
    status: Literal["pending", "paid", "failed", "expired"]
    pay_url: str | None = Field(description="where to send the citizen to pay")
    transaction_id: str | None
    paid_at: str | None
    settled_by: str | None = Field(description="callback or query: how hub learnt it was paid")
    created_at: str


class DvcCallbackAnswer(_Answer):
    """The DVC payment platform's expected answer to its confirmation."""

    MaLoi: str = Field(
        description="00 confirmed, 01 unknown reference, 02 already confirmed, 04 amount mismatch, 07 replay, "
        "97 bad signature, 99 other"
    )
    MoTaLoi: str


class VnpayCallbackAnswer(_Answer):
    """VNPay's expected answer to its IPN."""

    RspCode: str = Field(
        description="00 ok, 01 order not found, 02 already confirmed, 04 invalid amount, 97 bad signature, 99 other"
    )
    Message: str


# -- health --------------------------------------------------------------------------------------------------------


class Health(_Answer):
    status: Literal["ok"]
    version: str


class WorkerSeen(_Answer):
    name: str
    host: str
    pid: int
    processes: int
    beat_age_s: float
    last_drain_age_s: float | None


class Readiness(_Answer):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="database, disk, broker: `ok` or what is wrong")
    peers: dict[str, dict[str, str | None]] = Field(description="each peer's last exchange by outcome (informative)")
    workers: list[WorkerSeen] | None = Field(description="the workers beating (informative); null when not known")
    maintenance: bool | None = Field(description="dispatch paused by an operator; null when not known")


# -- problem types (GET /problems) ---------------------------------------------------------------------------------


class ProblemTypeOut(_Answer):
    """A problem type: what its `code` means and what the caller does about it (ADR 0050)."""

    code: str
    type: str = Field(description="/problems/{code}: the `type` a problem of this code carries")
    statuses: list[int] = Field(description="the HTTP statuses it comes with")
    title: str
    meaning: str
    remedy: Literal["fix_request", "retry_later", "authenticate", "ask_operators"] = Field(
        description="fix_request: sent again unchanged it is refused again; retry_later: the same request later (same "
        "Idempotency-Key, after Retry-After) can succeed; authenticate: send valid credentials; ask_operators: hub "
        "is not set up for it yet"
    )
    retry: bool = Field(description="remedy is retry_later")
    action: str = Field(description="what to do, in a sentence")


class ProblemTypeList(_Answer):
    items: list[ProblemTypeOut]


class PeerErrorOut(_Answer):
    """What another system's error, as hub records it, means (a delivery's `last_error_code`, a problem's
    `peer_error`; ADR 0050)."""

    code: str
    peer: str = Field(description="the system it comes from (any: hub's adapters of every system)")
    meaning: str
    retried: bool = Field(
        description="hub tries again by itself (a delivery waits); false: refused for good (a delivery is a dead "
        "letter at once, replayed or set aside by an operator)"
    )
    action: str = Field(description="what to do, in a sentence")


class PeerErrorList(_Answer):
    items: list[PeerErrorOut]
