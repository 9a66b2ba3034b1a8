"""What a citizen, signed in, sees of their own dossiers (tra cứu hồ sơ): the dossiers whose owner's ID number
(SoGiayToChuHoSo) is theirs, each with its status, appointment date and whether it is late, what it waits for
from them (documents to supplement, a fee to pay, with the pay link), its steps and its results.

A dossier is the citizen's when its owner's ID HMAC (under any of hub's keys, ADR 0034) is one of theirs; another's
dossier and an unknown code are answered alike (404), so a code cannot be probed. What the citizen sees is chosen,
not the dossier as the agencies exchange it: no delivery state, no client system, no officer's name (the handling
unit, what was done, and when), no contact details."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.calendar import WorkingCalendar
from hub.domain.dates import VN_TZ, local_iso, parse_national, utcnow
from hub.domain.errors import DomainError, NotFound
from hub.domain.identifiers import usable_link
from hub.domain.privacy import subject_hmacs
from hub.domain.status import NOT_READY, VIETNAMESE_NAMES, DossierStatus
from hub.services.dossiers import PAYMENT_NOT_AWAITED
from hub.services.quota import Quota, citizen_turn
from hub.store.db import reading
from hub.store.models import Document, Dossier, Payment, StatusEvent


class CitizenPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str
    amount: int = Field(description="whole đồng")
    currency: str
    state: Literal["pending", "paid", "failed", "expired"]
    created_at: str
    paid_at: str | None
    pay_url: str | None = Field(description="where to pay: while the payment is pending only")


class CitizenDossierSummary(BaseModel):
    """One of the citizen's dossiers in their list. Times: ISO 8601 in Vietnam's time (+07:00)."""

    model_config = ConfigDict(extra="forbid")
    MaHoSo: str
    MaTTHC: str
    TenTTHC: str | None
    agency: str
    DonViXuLy: str | None = Field(description="the unit handling it")
    TrangThaiHoSo: int = Field(ge=1, le=10)
    status_name: str = Field(description="the status's Vietnamese name, as the national portal shows it")
    status_key: Literal[
        "new", "accepted", "refused", "processing", "supplement_requested", "payment_requested", "withdrawn",
        "stopped", "processed", "result_returned",
    ]  # fmt: skip
    NgayTiepNhan: str | None = Field(description="received")
    NgayHenTra: str | None = Field(description="the appointment date for the result")
    NgayTra: str | None = Field(description="the result returned")
    overdue_working_days: int | None = Field(
        description="working days past NgayHenTra (0: not late); None once the result is ready or the dossier closed"
    )
    waiting_for: Literal["supplement", "payment", "collection"] | None = Field(
        description="what it waits for from the citizen: documents to supplement, a fee to pay, the result to collect"
    )
    payment: CitizenPayment | None = Field(description="the fee to pay, when it waits for a payment and one is made")
    asked: str | None = Field(
        description="when it waits for a supplement: what the agency asked for, in the words of the step that asked"
    )
    updated_at: str


class CitizenDossierList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: int = Field(description="how many dossiers the citizen has")
    count: int
    items: list[CitizenDossierSummary]


class CitizenStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str
    kind: str = Field(description="`status` (a change of status), `step` (a processing step), `payment_expired`")
    TrangThaiHoSo: int
    status_name: str
    unit: str | None = Field(default=None, description="a step's handling unit (PhongBanXuLy)")
    note: str | None = Field(default=None, description="what was done (NoiDungXuLy)")
    amount: int | None = Field(default=None, description="a pay link given up: its amount")


class CitizenFee(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None
    amount: int | None = Field(description="whole đồng")


class CitizenResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None
    number: str | None
    issued_at: str | None
    valid_until: str | None
    link: str | None = Field(description="where to fetch it; only a web address, a URN or a plain identifier")


class CitizenDossier(CitizenDossierSummary):
    """One of the citizen's dossiers in full."""

    TrichYeuHoSo: str | None = Field(description="the dossier's summary as filed")
    KenhThucHien: int | None = Field(description="1 in person, 2 online, 3 postal")
    NgayKetThucXuLy: str | None
    history: list[CitizenStep]
    fees: list[CitizenFee]
    payments: list[CitizenPayment]
    results: list[CitizenResult]


class CitizenDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="e.g. giay_chung_nhan_ket_hon")
    title: str
    number: str
    issuer: str = Field(description="the issuing agency's code")
    dossier_code: str | None = Field(description="the dossier it was issued with")
    issued_at: str
    valid_until: str | None = Field(description="None: it does not expire")
    valid: bool = Field(description="still valid now: what a pre-fill may offer for reuse, with the citizen's consent")
    reference: str = Field(description="where it can be fetched")


class CitizenDocumentList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int
    items: list[CitizenDocument]


# The citizen's reads, prebuilt: SQLAlchemy builds and caches each statement once, not on every request.
_MINE = Dossier.subject_hmac.in_(bindparam("subjects", expanding=True))
_DOSSIER_COLUMNS = (
    Dossier.id, Dossier.code, Dossier.agency, Dossier.procedure_code, Dossier.status, Dossier.data, Dossier.due_at,
    Dossier.updated_at,
)  # fmt: skip
COUNT_MINE = select(func.count()).select_from(Dossier).where(_MINE)
MY_DOSSIERS = (
    select(*_DOSSIER_COLUMNS)
    .where(_MINE)
    .order_by(Dossier.updated_at.desc(), Dossier.id.desc())
    .limit(bindparam("limit"))
)
MY_DOSSIER = select(*_DOSSIER_COLUMNS).where(Dossier.code == bindparam("code"), _MINE)
_PAYMENT_COLUMNS = (
    Payment.dossier_code, Payment.reference, Payment.amount, Payment.currency, Payment.status, Payment.created_at,
    Payment.paid_at, Payment.pay_url,
)  # fmt: skip
PAYMENTS_OF = (
    select(*_PAYMENT_COLUMNS).where(Payment.dossier_code == bindparam("code")).order_by(Payment.created_at, Payment.id)
)
PENDING_OF = (
    select(*_PAYMENT_COLUMNS)
    .where(Payment.dossier_code.in_(bindparam("codes", expanding=True)), Payment.status == "pending")
    .order_by(Payment.created_at, Payment.id)
)
EVENTS_OF = (
    select(
        StatusEvent.kind, StatusEvent.status, StatusEvent.previous_status, StatusEvent.created_at, StatusEvent.payload
    )
    .where(StatusEvent.dossier_id == bindparam("dossier_id"))
    .order_by(StatusEvent.seq)
)
ASKED_OF = (
    select(StatusEvent.dossier_id, StatusEvent.kind, StatusEvent.status, StatusEvent.payload)
    .where(
        StatusEvent.dossier_id.in_(bindparam("ids", expanding=True)),
        StatusEvent.status == int(DossierStatus.SUPPLEMENT_REQUESTED),
    )
    .order_by(StatusEvent.dossier_id, StatusEvent.seq)
)

MY_DOCUMENTS = (
    select(
        Document.kind,
        Document.title,
        Document.number,
        Document.issuer,
        Document.dossier_code,
        Document.issued_at,
        Document.valid_until,
        Document.reference,
    )
    .where(Document.subject.in_(bindparam("subjects", expanding=True)))
    .order_by(Document.issued_at.desc(), Document.id)
)

# what the dossier waits for from its owner, by its status
WAITING_FOR = {
    DossierStatus.SUPPLEMENT_REQUESTED: "supplement",  # documents to add
    DossierStatus.PAYMENT_REQUESTED: "payment",  # a fee to pay
    DossierStatus.PROCESSED: "collection",  # the result, ready to be collected or sent
}
KINDS = {"dossier.sync": "status", "dossier.downflow": "status", "dossier.progress": "step"}


class CitizenDossiers:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        secret_keys: Sequence[bytes],
        calendar: WorkingCalendar,
        quota: Quota | None = None,
    ) -> None:
        self.sessions = sessions
        self.engine = sessions.kw["bind"]
        self._secrets = list(secret_keys)
        self.calendar = calendar
        self.quota = quota

    def _subjects(self, personal_id: str, per_minute: int | None) -> list[str]:
        subjects = subject_hmacs(self._secrets, personal_id)
        citizen_turn(self.quota, subjects[0], per_minute)
        return subjects

    def dossiers(self, personal_id: str, *, limit: int = 50, per_minute: int | None = None) -> dict[str, Any]:
        """The citizen's dossiers, the latest changed first (at most `limit`; `total` says how many there are)."""
        subjects = self._subjects(personal_id, per_minute)
        with reading(self.engine, snapshot=True) as conn:
            total = conn.execute(COUNT_MINE, {"subjects": subjects}).scalar() or 0
            rows = conn.execute(MY_DOSSIERS, {"subjects": subjects, "limit": limit}).all()
            pending: dict[str, Any] = {}
            if rows:
                for p in conn.execute(PENDING_OF, {"codes": [d.code for d in rows]}):
                    pending[p.dossier_code] = p  # the newest pending one of a dossier
            waiting = [d.id for d in rows if d.status == DossierStatus.SUPPLEMENT_REQUESTED]
            asked: dict[int, str] = {}
            if waiting:
                by_dossier: dict[int, list[Any]] = {}
                for e in conn.execute(ASKED_OF, {"ids": waiting}):
                    by_dossier.setdefault(e.dossier_id, []).append(e)
                asked = {i: note for i, found in by_dossier.items() if (note := _asked_in(found)) is not None}
        today = utcnow().astimezone(VN_TZ).date()
        items = [self._summary(d, today, pending.get(d.code), asked.get(d.id)) for d in rows]
        return {"total": int(total), "count": len(items), "items": items}

    def dossier(self, personal_id: str, code: str, *, per_minute: int | None = None) -> dict[str, Any]:
        """One of the citizen's dossiers in full: its summary, steps, fees, payments and results."""
        subjects = self._subjects(personal_id, per_minute)
        with reading(self.engine, snapshot=True) as conn:
            d = conn.execute(MY_DOSSIER, {"code": code[:64], "subjects": subjects}).first()
            if d is None:
                raise NotFound(f"you have no dossier {code[:80]!r}", code="dossier_not_found")
            payments = conn.execute(PAYMENTS_OF, {"code": d.code}).all()
            events = conn.execute(EVENTS_OF, {"dossier_id": d.id}).all()
        pending = next((p for p in reversed(payments) if p.status == "pending"), None)
        today = utcnow().astimezone(VN_TZ).date()
        asked = _asked_in(events) if d.status == DossierStatus.SUPPLEMENT_REQUESTED else None
        data = d.data
        return {
            **self._summary(d, today, pending, asked),
            "TrichYeuHoSo": _text(data.get("TrichYeuHoSo")),
            "KenhThucHien": _number(data.get("KenhThucHien")),
            "NgayKetThucXuLy": _date(data.get("NgayKetThucXuLy")),
            "history": _history(events),
            "fees": [
                {"name": _text(f.get("TenPhiLePhi")), "amount": _number(f.get("Gia"))}
                for f in data.get("DanhSachLePhi") or []
                if isinstance(f, dict)
            ],
            "payments": [_payment(p) for p in payments],
            "results": _results(data.get("DanhSachGiayToKetQua") or []),
        }

    def documents(self, personal_id: str, *, per_minute: int | None = None) -> dict[str, Any]:
        """The documents issued to the citizen that hub holds for reuse (their results: extracts, certificates),
        the latest issued first, each saying whether it is still valid — what a pre-fill may offer, with consent."""
        subjects = self._subjects(personal_id, per_minute)
        now = utcnow()
        with reading(self.engine) as conn:
            rows = conn.execute(MY_DOCUMENTS, {"subjects": subjects}).all()
        items = [
            {
                "kind": d.kind,
                "title": d.title,
                "number": d.number,
                "issuer": d.issuer,
                "dossier_code": d.dossier_code,
                "issued_at": local_iso(d.issued_at),
                "valid_until": local_iso(d.valid_until),
                "valid": d.valid_until is None or d.valid_until > now,
                "reference": d.reference,
            }
            for d in rows
        ]
        return {"count": len(items), "items": items}

    def _summary(self, d: Any, today: date, pending: Any, asked: str | None) -> dict[str, Any]:
        status = DossierStatus(d.status)
        data = d.data
        late = None
        if d.due_at is not None and status in NOT_READY:
            due = d.due_at.astimezone(VN_TZ).date()
            late = self.calendar.working_days_between(due, today) if due < today else 0
        waiting = WAITING_FOR.get(status)
        return {
            "MaHoSo": d.code,
            "MaTTHC": d.procedure_code,
            "TenTTHC": _text(data.get("TenTTHC")),
            "agency": d.agency,
            "DonViXuLy": _text(data.get("DonViXuLy")),
            "TrangThaiHoSo": int(status),
            "status_name": VIETNAMESE_NAMES[status],
            "status_key": status.name.lower(),
            "NgayTiepNhan": _date(data.get("NgayTiepNhan")),
            "NgayHenTra": _date(data.get("NgayHenTra")),
            "NgayTra": _date(data.get("NgayTra")),
            "overdue_working_days": late,
            "waiting_for": waiting,
            "payment": None if waiting != "payment" or pending is None else _payment(pending),
            "asked": asked if waiting == "supplement" else None,
            "updated_at": local_iso(d.updated_at),
        }


def _asked_in(events: Sequence[Any]) -> str | None:
    """What the latest processing step that asked for a supplement said (the documents to add), if one did."""
    for e in reversed(events):
        if e.kind == "dossier.progress" and e.status == DossierStatus.SUPPLEMENT_REQUESTED:
            return _text(e.payload.get("NoiDungXuLy")) if isinstance(e.payload, dict) else None
    return None


def _text(value: Any) -> str | None:
    """A text field of the dossier as documented (a client system's free-form lists may hold anything)."""
    return value if isinstance(value, str) else None


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _date(value: Any) -> str | None:
    """A national date (yyyyMMddHHmmss, Vietnam's time) as ISO 8601 with its offset; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return parse_national(value).isoformat()
    except (DomainError, ValueError):
        return None


def _history(events: Any) -> list[dict[str, Any]]:
    """The steps the citizen can follow: each change of status, each processing step (its unit and what was done;
    not the officer's name), a pay link given up. A correction of details that left the status as it was is left
    out, as is the agency's own note of a payment it did not wait for (the citizen sees the payment itself)."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e.kind == PAYMENT_NOT_AWAITED:
            continue
        kind = KINDS.get(e.kind)
        payload = e.payload if isinstance(e.payload, dict) else {}
        if kind == "status" and e.previous_status == e.status:
            continue
        item: dict[str, Any] = {
            "at": local_iso(e.created_at),
            "kind": kind or e.kind.replace(".", "_"),
            "TrangThaiHoSo": e.status,
            "status_name": VIETNAMESE_NAMES[DossierStatus(e.status)],
        }
        if kind == "step":
            item["at"] = _date(payload.get("ThoiDiemXuLy")) or item["at"]
            item["unit"] = _text(payload.get("PhongBanXuLy"))
            item["note"] = _text(payload.get("NoiDungXuLy"))
        elif e.kind == "payment.expired":
            item["amount"] = _number(payload.get("amount"))
        out.append(item)
    return out


def _payment(p: Any) -> dict[str, Any]:
    return {
        "reference": p.reference,
        "amount": p.amount,
        "currency": p.currency,
        "state": p.status,
        "created_at": local_iso(p.created_at),
        "paid_at": local_iso(p.paid_at),
        "pay_url": p.pay_url if p.status == "pending" else None,
    }


def _results(items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        link = item.get("DuongDanTaiLieu")
        out.append(
            {
                "title": _text(item.get("TenGiayTo")) or _text(item.get("LoaiGiayTo")),
                "number": _text(item.get("SoHieu")),
                "issued_at": _date(item.get("NgayCap")),
                "valid_until": _date(item.get("HieuLucDen")),
                "link": link if isinstance(link, str) and usable_link(link) else None,
            }
        )
    return out
