"""Fee payments: create at the platform (idempotent per dossier and amount), verify and apply callbacks exactly
once, settle late or lost callbacks by querying, reconcile against the platform's daily statement, and move the
dossier out of status 6 (payment requested) through the relay so the national portal learns it."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import and_, bindparam, func, insert, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.errors import AskedToWait, PeerError, PeerRejected, SharedWaits, wait_asked
from hub.adapters.payment.base import Callback, CallbackRejected, PaymentOrder, PaymentPlatform
from hub.domain import identifiers
from hub.domain.dates import format_national, utcnow
from hub.domain.errors import Conflict, DomainError, Forbidden, NotFound
from hub.domain.money import dong
from hub.domain.status import DossierStatus
from hub.services import actions
from hub.services.dossiers import SELECT_DOSSIER, DossierService
from hub.services.schemas import NulFree
from hub.settings import ClientSystem
from hub.store.group_commit import GroupCommit
from hub.store.models import Dossier, Payment, PaymentCallback, Procedure, table

log = logging.getLogger("hub.payments")
VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
MAX_FEE = 1_000_000_000  # đồng: a sanity bound, far above any administrative fee
# How long a request asking the platform to create a payment (INIT) holds it: longer than the adapters let an INIT
# take (connect 3 s + read 10 s); a request that died holding it is taken over after it.
INIT_LEASE = timedelta(seconds=30)
INIT_WAIT = 15.0  # seconds another request for the same payment waits for that INIT's answer before a 503
PAYMENTS = table(Payment)
CALLBACKS = table(PaymentCallback)
# The callback path in prebuilt Core statements (as ingest): no ORM identity map or flush on the hot path.
LOCK_PAYMENT = (
    select(
        PAYMENTS.c.id, PAYMENTS.c.status, PAYMENTS.c.transaction_id, PAYMENTS.c.amount, PAYMENTS.c.currency,
        PAYMENTS.c.dossier_code,
    )
    .where(PAYMENTS.c.reference == bindparam("reference"), PAYMENTS.c.platform == bindparam("platform"))
    .with_for_update()
)  # fmt: skip
SETTLE_PAYMENT = update(PAYMENTS).where(PAYMENTS.c.id == bindparam("payment_id"))
# The common case in one statement: a pending payment of exactly this amount is credited (None: see why, slowly).
CREDIT_PAYMENT = (
    update(PAYMENTS)
    .where(
        PAYMENTS.c.reference == bindparam("ref"),
        PAYMENTS.c.platform == bindparam("plat"),
        PAYMENTS.c.status != "paid",
        PAYMENTS.c.amount == bindparam("want_amount"),
        PAYMENTS.c.currency == bindparam("want_currency"),
    )
    .returning(
        PAYMENTS.c.amount,
        PAYMENTS.c.dossier_code,
        # the dossier's other payments already paid (a citizen who paid twice), in the same round trip; written out
        # because SQLAlchemy's SQLite compiler leaves RETURNING's columns unqualified, and the correlation with them
        literal_column(
            "(SELECT count(*) FROM payments AS other WHERE other.dossier_code = payments.dossier_code"
            " AND other.status = 'paid' AND other.reference != payments.reference)"
        ).label("also_paid"),
    )
)
INSERT_CALLBACK = insert(CALLBACKS)
SYSTEM = ClientSystem(name="hub-payments", api_key=SecretStr(secrets.token_urlsafe(24)), agencies=["*"])


def _callback_row(
    platform: str,
    reference: str | None,
    transaction: str | None,
    verdict: str,
    code: str,
    reason: str | None,
    digest: str,
) -> dict[str, Any]:
    """A callback's record (payment_callbacks): what came, hub's verdict and the answer it gave."""
    return {
        "at": utcnow(),
        "platform": platform,
        "reference": reference[:50] if reference else None,
        "transaction_id": transaction[:64] if transaction else None,
        "verdict": verdict,
        "answer_code": code,
        "reason": reason[:500] if reason else None,
        "body_digest": digest,
    }


class PlatformUnavailable(DomainError):
    code = "payment_platform_unavailable"
    status = 503


class FeeIn(NulFree):
    model_config = ConfigDict(extra="forbid", strict=True)
    TenPhiLePhi: str = Field(min_length=1, max_length=300)
    MaPhiLePhi: str | None = Field(default=None, max_length=50)
    SoTien: int = Field(ge=0, le=MAX_FEE, description="whole đồng")


class PaymentIn(NulFree):
    model_config = ConfigDict(extra="forbid")
    MaHoSo: str
    fees: list[FeeIn] | None = Field(default=None, description="must equal the dossier's DanhSachLePhi if given")
    payer_name: str | None = Field(default=None, max_length=200)

    @field_validator("MaHoSo")
    @classmethod
    def _code(cls, value: str) -> str:
        return identifiers.dossier_code(value).value


def new_reference(now: datetime) -> str:
    """MaThamChieu: HUB, the day in Vietnam (as the dossier codes and the platform's statements have it), 12 hex."""
    return f"HUB{now.astimezone(VN_TZ).strftime('%y%m%d')}{secrets.token_hex(6).upper()}"


def view(p: Payment) -> dict[str, Any]:
    return {
        "reference": p.reference,
        "MaHoSo": p.dossier_code,
        "platform": p.platform,
        "amount": p.amount,
        "currency": p.currency,
        "fees": p.fees,
        "status": p.status,
        "pay_url": p.pay_url,
        "transaction_id": p.transaction_id,
        "paid_at": p.paid_at.isoformat() if p.paid_at else None,
        "settled_by": p.settled_by,
        "created_at": p.created_at.isoformat(),
    }


def callback_view(c: PaymentCallback) -> dict[str, Any]:
    return {
        "at": c.at,
        "platform": c.platform,
        "reference": c.reference,
        "transaction_id": c.transaction_id,
        "verdict": c.verdict,
        "answer_code": c.answer_code,
        "reason": c.reason,
    }


def release_payment_claims(session: Session) -> int:
    """Clear every payment's INIT claim: only for a process that knows no other can be creating one (embedded
    mode's take-over, `hub.sync.embedded.Presence`). How many it cleared."""
    done = session.execute(
        update(Payment).where(Payment.init_until.is_not(None), Payment.pay_url.is_(None)).values(init_until=None)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _InFlight:
    """Another request is asking the platform to create this payment, holding it until `until`."""

    reference: str
    until: datetime


@dataclass(frozen=True, slots=True)
class _Apply:
    platform: str
    cb: Callback
    source: str
    correlation_id: str
    digest: str


class PaymentService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        platforms: Mapping[str, PaymentPlatform],
        dossiers: DossierService,
        *,
        platform_for: Callable[[str], str],
        callback_url: Callable[[str], str],
        callback_max_age: timedelta,
        query_after: timedelta,
        expire_after: timedelta = timedelta(hours=72),
        on_commit: Callable[[], None] = lambda: None,
        shared_waits: SharedWaits | None = None,
    ) -> None:
        self.sessions = sessions
        self.platforms = dict(platforms)
        self.dossiers = dossiers
        self.platform_for = platform_for
        self.callback_url = callback_url
        self.callback_max_age = callback_max_age
        self.query_after = query_after
        self.expire_after = expire_after
        self._on_commit = on_commit
        # platforms that asked hub to wait (Retry-After): not called before it is over, by any process of the cluster
        self._waits = AskedToWait(shared_waits)
        # confirmations arriving together are applied in one transaction (each still exactly once)
        self._applies: GroupCommit[Session, _Apply, tuple[str, str, str | None]] = GroupCommit(
            sessions.begin, self._apply_batch, order=lambda a: a.cb.reference
        )

    # -- create ----------------------------------------------------------------------------------------------

    def create(
        self, client: ClientSystem, body: PaymentIn, *, client_ip: str, correlation_id: str
    ) -> tuple[int, dict[str, Any]]:
        code = body.MaHoSo
        agency = identifiers.dossier_code(code).agency
        if not client.may_act_for(agency):
            raise Forbidden(f"client {client.name!r} may not act for agency {agency}", code="agency_not_allowed")
        platform_name = self.platform_for(agency)
        platform = self.platforms.get(platform_name)
        if platform is None:
            raise PlatformUnavailable(f"payment platform {platform_name!r} is not configured")
        # a pay link given up as expired may have been paid after all (its confirmation lost): ask before making a
        # new one, or the citizen is sent to pay twice
        given_up = [Payment.dossier_code == code, Payment.status == "expired"]
        self._ask(given_up, limit=5, correlation_id=correlation_id)
        # the same request twice at once (a double click, a client's retry after its own timeout): one of them asks
        # the platform; the other waits for that answer and gives the same payment (200) — one INIT, one pay link
        waited_until = time.monotonic() + INIT_WAIT
        while True:
            claimed = self._claim(client, body, platform_name, client_ip)
            if not isinstance(claimed, _InFlight):
                break
            if not self._await_init(claimed.reference, waited_until):
                left = max(1, math.ceil((claimed.until - utcnow()).total_seconds()))
                raise PlatformUnavailable(
                    "another request is asking the payment platform to create this payment and has no answer yet; "
                    "retry the same request",
                    retry_after=min(left, math.ceil(INIT_WAIT)),
                )
        if isinstance(claimed, tuple):
            return claimed
        order = claimed
        try:
            self._waits.check(platform_name)
            created = platform.create(order, correlation_id=correlation_id)
            url = urlsplit(created.pay_url)
            if url.scheme not in ("https", "http") or not url.netloc:  # the citizen is sent there: a web page only
                raise PeerRejected(
                    platform_name, "the platform's pay link is not a web address", code="payment_pay_url_invalid"
                )
        except BaseException as exc:
            with self.sessions.begin() as s:  # no answer: a request waiting for this one asks the platform itself
                s.execute(
                    update(Payment)
                    .where(Payment.reference == order.reference, Payment.pay_url.is_(None))
                    .values(init_until=None)
                )
            if not isinstance(exc, PeerError):
                raise
            self._waits.note(platform_name, exc)
            raise PlatformUnavailable(
                "the payment platform did not create the payment; retry the same request",
                peer_error=exc.code,
                **wait_asked(exc),
            ) from None
        with self.sessions.begin() as s:
            payment = s.scalars(select(Payment).where(Payment.reference == order.reference)).one()
            payment.pay_url = created.pay_url
            payment.init_until = None
            payment.updated_at = utcnow()
            return 201, view(payment)

    def _claim(
        self, client: ClientSystem, body: PaymentIn, platform_name: str, client_ip: str
    ) -> tuple[int, dict[str, Any]] | PaymentOrder | _InFlight:
        """Under the dossier's lock: the payment made before (200), another request's INIT still in flight, or the
        order this request is now the one to send (the payment made — or taken over — and its INIT claimed)."""
        code = body.MaHoSo
        agency = identifiers.dossier_code(code).agency
        with self.sessions.begin() as s:
            dossier = s.scalar(select(Dossier).where(Dossier.code == code).with_for_update())
            if dossier is None:
                raise NotFound(f"dossier {code} is unknown to hub", code="dossier_not_found")
            fees = [
                {"TenPhiLePhi": str(f.get("TenPhiLePhi")), "MaPhiLePhi": f.get("MaPhiLePhi"), "SoTien": f.get("Gia")}
                for f in dossier.data.get("DanhSachLePhi") or []
            ]
            if any(
                not isinstance(f["SoTien"], int) or isinstance(f["SoTien"], bool) or not 0 <= f["SoTien"] <= MAX_FEE
                for f in fees
            ):
                raise DomainError(
                    "the dossier's DanhSachLePhi holds an amount that is not whole đồng", code="invalid_amount"
                )
            amount = sum(int(f["SoTien"]) for f in fees)
            if body.fees is not None:
                asked = Counter((f.TenPhiLePhi, f.SoTien) for f in body.fees)
                if asked != Counter((f["TenPhiLePhi"], f["SoTien"]) for f in fees):
                    raise DomainError("the fees differ from the dossier's DanhSachLePhi", code="fees_mismatch")
            existing = s.scalars(
                select(Payment).where(Payment.dossier_code == code, Payment.status.in_(("pending", "paid")))
            ).first()
            now = utcnow()
            if existing is not None and existing.amount == amount:
                if existing.pay_url is not None or existing.status == "paid":
                    return 200, view(existing)
                if existing.init_until is not None and existing.init_until > now:
                    return _InFlight(existing.reference, existing.init_until)
                payment = existing  # INIT failed before, or its request died: ask again with the same reference
                payment.init_until = now + INIT_LEASE
            elif existing is not None:
                raise Conflict(
                    f"payment {existing.reference} for another amount is {existing.status}", code="payment_exists"
                )
            else:
                if dossier.status != DossierStatus.PAYMENT_REQUESTED:
                    raise Conflict(
                        f"dossier {code} is in status {dossier.status}, not 6 (payment requested)",
                        code="payment_not_requested",
                    )
                if amount <= 0:
                    raise DomainError("the dossier has no fee to pay", code="nothing_to_pay")
                procedure = s.get(Procedure, dossier.procedure_code)
                if procedure is not None:
                    allowed = {int(f.get("Gia", -1)) for f in procedure.fees}
                    stray = [f for f in fees if f["SoTien"] and f["SoTien"] not in allowed]
                    if stray:
                        raise DomainError(
                            f"fee {stray[0]['SoTien']} đồng is not among the catalogue's fees for {procedure.code}",
                            code="fee_not_in_catalogue",
                        )
                payment = Payment(
                    reference=new_reference(now),
                    dossier_code=code,
                    agency=agency,
                    client=client.name,
                    platform=platform_name,
                    amount=amount,
                    currency="VND",
                    fees=fees,
                    status="pending",
                    init_until=now + INIT_LEASE,
                    created_at=now,
                    updated_at=now,
                )
                s.add(payment)
                s.flush()
            return PaymentOrder(
                reference=payment.reference,
                amount=payment.amount,
                dossier_code=code,
                procedure_code=dossier.procedure_code,
                fees=[{k: v for k, v in f.items() if v is not None} for f in fees],
                payer_name=body.payer_name or dossier.data.get("ChuHoSo"),
                description=f"Nộp phí, lệ phí hồ sơ {code}",
                callback_url=self.callback_url(platform_name),
                client_ip=client_ip,
            )

    def _await_init(self, reference: str, until: float) -> bool:
        """Wait (till the monotonic `until`) for another request's INIT of `reference` to end — answered, failed or
        lapsed; False when it is still in flight then."""
        pause = 0.02
        while time.monotonic() < until:
            time.sleep(min(pause, max(0.0, until - time.monotonic())))
            pause = min(pause * 2, 0.2)
            with self.sessions() as s:
                row = s.execute(
                    select(Payment.pay_url, Payment.status, Payment.init_until).where(Payment.reference == reference)
                ).one_or_none()
            if row is None or row.pay_url is not None or row.status != "pending":
                return True
            if row.init_until is None or row.init_until <= utcnow():
                return True
        return False

    def get(self, client: ClientSystem, reference: str) -> dict[str, Any]:
        with self.sessions() as s:
            p = s.scalars(select(Payment).where(Payment.reference == reference)).first()
            if p is None or not client.may_act_for(p.agency):
                raise NotFound(f"no payment {reference!r}", code="payment_not_found")
            return view(p)

    def receipt(self, client: ClientSystem, reference: str, *, correlation_id: str) -> bytes:
        payment = self.get(client, reference)
        if payment["status"] != "paid":
            raise Conflict("a receipt exists only for a paid payment", code="payment_not_paid")
        platform = self.platforms.get(payment["platform"])
        if platform is None:  # made at a platform hub is no longer configured for: nobody to ask for the receipt
            raise PlatformUnavailable(f"payment platform {payment['platform']!r} is not configured")
        try:
            self._waits.check(payment["platform"])
            return platform.receipt(reference, correlation_id=correlation_id)
        except PeerError as exc:
            self._waits.note(payment["platform"], exc)
            if exc.code == "receipt_not_offered":
                raise Conflict("this payment platform issues no receipt document", code="receipt_not_offered") from None
            raise PlatformUnavailable(
                "the payment platform did not give the receipt", peer_error=exc.code, **wait_asked(exc)
            ) from None

    # -- callbacks -------------------------------------------------------------------------------------------

    def callback(
        self, platform_name: str, body: bytes, content_type: str | None, query: dict[str, str], *, correlation_id: str
    ) -> tuple[int, dict[str, Any]]:
        """Verify first; then apply once. Returns the HTTP status and body the platform expects."""
        platform = self.platforms.get(platform_name)
        if platform is None:
            raise NotFound(f"no payment platform {platform_name!r}", code="unknown_platform")
        digest = hashlib.sha256(body).hexdigest()
        try:
            cb = platform.parse_callback(body, content_type, query)
        except CallbackRejected as exc:
            self._record(_callback_row(platform_name, None, None, "rejected", exc.answer_code, exc.reason, digest))
            log.warning("payment callback rejected", extra={"platform": platform_name, "reason": exc.reason})
            return platform.answer(exc.answer_code, exc.reason)
        now = utcnow()
        if cb.at < now - self.callback_max_age or cb.at > now + timedelta(minutes=5):
            reason = f"transaction time {cb.at.isoformat()} is outside the accepted window (replay?)"
            self._record(
                _callback_row(platform_name, cb.reference, cb.transaction_id, "rejected", "07", reason, digest)
            )
            return platform.answer("07", reason)
        verdict, code, why = self._apply(platform_name, cb, "callback", correlation_id, digest)
        return platform.answer(code, why or verdict)

    def _record(self, row: dict[str, Any]) -> None:
        """A callback refused before it could be applied (its `_callback_row`), recorded in a transaction of its own."""
        with self.sessions.begin() as s:
            s.execute(INSERT_CALLBACK, row)

    def _apply(
        self, platform: str, cb: Callback, source: str, correlation_id: str, digest: str
    ) -> tuple[str, str, str | None]:
        for attempt in (1, 2):
            try:
                result = self._applies.submit(_Apply(platform, cb, source, correlation_id, digest))
                if result[0] == "applied":
                    self._on_commit()
                return result
            except IntegrityError:
                if attempt == 2:  # the same transaction id credited to another payment: refuse it
                    reason = f"transaction {cb.transaction_id} is already credited to another payment"
                    self._record(
                        _callback_row(platform, cb.reference, cb.transaction_id, "rejected", "02", reason, digest)
                    )
                    return "rejected", "02", reason
        raise AssertionError("unreachable")

    def _apply_batch(self, s: Session, batch: Sequence[_Apply]) -> list[tuple[str, str, str | None]]:
        """Callbacks in one transaction, in order of their payment reference (GroupCommit's `order`); a later
        callback for the same payment sees what an earlier one did, as if they came apart. Their records are
        written together at the end (one executemany: one round trip on PostgreSQL, not one a callback)."""
        records: list[dict[str, Any]] = []
        verdicts = [self._apply_in(s, a.platform, a.cb, a.source, a.correlation_id, a.digest, records) for a in batch]
        if records:
            s.execute(INSERT_CALLBACK, records)
        return verdicts

    def _apply_in(
        self,
        s: Session,
        platform: str,
        cb: Callback,
        source: str,
        correlation_id: str,
        digest: str,
        records: list[dict[str, Any]],
    ) -> tuple[str, str, str | None]:
        def done(verdict: str, code: str, reason: str | None) -> tuple[str, str, str | None]:
            records.append(_callback_row(platform, cb.reference, cb.transaction_id, verdict, code, reason, digest))
            return verdict, code, reason

        now = utcnow()
        if cb.success:
            # the unique transaction id is checked here, inside the transaction (IntegrityError: credited elsewhere)
            credited = s.execute(
                CREDIT_PAYMENT,
                {
                    "ref": cb.reference,
                    "plat": platform,
                    "want_amount": cb.amount,
                    "want_currency": cb.currency,
                    "status": "paid",
                    "transaction_id": cb.transaction_id,
                    "bank": cb.bank,
                    "paid_at": cb.at,
                    "settled_by": source,
                    "updated_at": now,
                },
            ).first()
            if credited is not None:
                self._move_on(
                    s, credited.dossier_code, cb.reference, credited.amount, cb.transaction_id, now, correlation_id
                )
                if credited.also_paid:  # booked (the money came), and said: the finance office owes a refund
                    twice = s.scalars(
                        select(Payment.reference).where(
                            Payment.dossier_code == credited.dossier_code,
                            Payment.status == "paid",
                            Payment.reference != cb.reference,
                        )
                    ).all()
                    log.warning(
                        "dossier paid twice: a refund is owed",
                        extra={"dossier": credited.dossier_code, "reference": cb.reference, "also_paid": list(twice)},
                    )
                return done("applied", "00", None)
        # not credited: say why (unknown, already paid, other amount) or record the failure
        payment = s.execute(LOCK_PAYMENT, {"reference": cb.reference, "platform": platform}).first()
        if payment is None:
            return done("rejected", "01", f"unknown reference {cb.reference}")
        if payment.status == "paid":
            if payment.transaction_id == cb.transaction_id:
                repeat = getattr(self.platforms.get(platform), "duplicate_code", "00")
                return done("duplicate", repeat, "already applied")
            return done("rejected", "02", f"already paid by transaction {payment.transaction_id}")
        if cb.currency != payment.currency or cb.amount != payment.amount:
            reason = f"amount {cb.amount} {cb.currency} differs from {payment.amount} {payment.currency}"
            return done("rejected", "04", reason)
        s.execute(SETTLE_PAYMENT, {"payment_id": payment.id, "status": "failed", "updated_at": now})
        return done("declined", "00", f"the platform reports failure {cb.error_code}")

    def _move_on(
        self,
        s: Session,
        code: str,
        reference: str,
        amount: int,
        transaction_id: str,
        now: datetime,
        correlation_id: str,
    ) -> None:
        """A credited dossier waiting for payment (6) goes back to processing (4), through the relay. One that was
        not waiting for it (withdrawn or stopped meanwhile, paid already, moved on at the counter) keeps its status,
        and its history says that a payment came it did not wait for: a refund may be owed."""
        dossier = s.execute(SELECT_DOSSIER, {"code": code}).first()  # locked: no one moves it meanwhile
        if dossier is None:
            return
        if dossier.status != DossierStatus.PAYMENT_REQUESTED:
            fact = {"reference": reference, "amount": amount, "transaction_id": transaction_id}
            self.dossiers.payment_not_awaited(s, code, dossier, fact, client=SYSTEM.name, correlation_id=correlation_id)
            log.warning(
                "payment credited for a dossier not waiting for one: a refund may be owed",
                extra={"dossier": code, "reference": reference, "status": int(dossier.status)},
            )
            return
        step = {
            "MaHoSo": code,
            "NguoiXuLy": "Hệ thống thanh toán",
            "ThoiDiemXuLy": format_national(now),
            "NoiDungXuLy": f"Đã thanh toán {dong(amount)} đồng (mã giao dịch {transaction_id})",
            "TrangThai": int(DossierStatus.PROCESSING),
        }
        self.dossiers.apply(s, SYSTEM, code, "dossier.progress", step, correlation_id, notify="paid", locked=dossier)

    # -- late or lost callbacks ------------------------------------------------------------------------------

    def check_pending(
        self, *, correlation_id: str, limit: int = 200, references: Sequence[str] | None = None
    ) -> dict[str, int]:
        """Query the platform for pending payments older than `query_after` — each again a minute after its last
        query in its first hour, every 15 minutes after that; those never asked or asked longest ago first, so
        that abandoned pay links never crowd out a newer payment — or, `references` given (an operator asks),
        for those of them not yet paid (pending, or given up as expired), now. A payment the platform still
        reports unpaid `expire_after` after it was made is given up as `expired` (a new one can be made; a late
        confirmation is still credited). A platform found down is asked once a run, not once a payment (its other
        payments: `not_asked`), and not again before the end of a Retry-After it sent."""
        now = utcnow()
        if references is None:
            young = Payment.created_at > now - timedelta(hours=1)
            when = [
                Payment.status == "pending",
                Payment.created_at <= now - self.query_after,
                or_(
                    Payment.last_checked_at.is_(None),
                    and_(young, Payment.last_checked_at <= now - timedelta(minutes=1)),
                    and_(~young, Payment.last_checked_at <= now - timedelta(minutes=15)),
                ),
            ]
        else:
            when = [Payment.status.in_(("pending", "expired")), Payment.reference.in_(list(references)[:limit])]
        return dict(Counter(verdict for _, verdict in self._ask(when, limit=limit, correlation_id=correlation_id)))

    def give_up(self, reference: str, *, by: str, reason: str, correlation_id: str) -> dict[str, Any]:
        """An operator gives up a pending pay link now rather than after HUB_PAYMENT_EXPIRE_AFTER_HOURS — the fee was
        wrong and has been corrected, the dossier must be paid another way: the one-stop system can then make the
        dossier's new payment. The platform is asked first: a payment it reports paid is credited, not given up;
        one it cannot be asked about is left as it is (the citizen may have paid). Given up, it is `expired` as
        an abandoned link is (its dossier's history says so; a late confirmation is still credited, and a dossier
        paid twice is flagged for a refund), and the operator's action is kept with the reason."""
        with self.sessions() as s:
            payment = s.scalars(select(Payment).where(Payment.reference == reference)).first()
            if payment is None:
                raise NotFound(f"no payment {reference!r}", code="payment_not_found")
            status, code, amount, init_until = payment.status, payment.dossier_code, payment.amount, payment.init_until
        if status != "pending":
            raise Conflict(f"payment {reference} is {status}, not pending", code="payment_not_pending")
        if init_until is not None and init_until > utcnow():
            raise Conflict(
                f"payment {reference} is being created at the platform right now; try again in a minute",
                code="payment_not_pending",
            )
        pending = [Payment.reference == reference, Payment.status == "pending"]
        asked = self._ask(pending, limit=1, correlation_id=correlation_id)
        verdict = asked[0][1] if asked else "still_pending"  # none: settled meanwhile (the update below finds out)
        if verdict in ("errors", "not_asked"):
            raise PlatformUnavailable(
                "the payment platform did not answer whether it was paid; nothing was given up, try again later"
            )
        if verdict not in ("still_pending", "expired", "platform_not_configured"):
            return {"reference": reference, "given_up": False, "platform_said": verdict}  # paid or declined: settled
        with self.sessions.begin() as s:
            # (when the check just gave it up itself, past HUB_PAYMENT_EXPIRE_AFTER_HOURS, there is nothing to do)
            given_up = verdict != "expired" and self._expire(s, code, reference, amount, correlation_id)
            outcome = {"given_up": given_up or verdict == "expired", "platform_said": verdict}
            target = {"reference": reference, "MaHoSo": code, "reason": reason}
            actions.record(s, by, "payment_given_up", target, outcome)
        if given_up:
            self._on_commit()
        log.info("payment given up by an operator", extra={"reference": reference, "operator": by, "reason": reason})
        return {"reference": reference, **outcome}

    def _ask(self, when: Sequence[Any], *, limit: int, correlation_id: str) -> list[tuple[str, str]]:
        """Ask the platform about each payment matching `when` and settle what it reports, as a confirmation
        arriving by query: (reference, what came of it) for each. A payment whose INIT is in flight is left to the
        request making it; one whose INIT failed (no pay link, no request on it) is asked about too — the platform
        may have made it after all — and, never paid, given up in time like an abandoned pay link."""
        now = utcnow()
        with self.sessions() as s:
            due = s.execute(
                select(Payment.reference, Payment.platform, Payment.created_at, Payment.dossier_code, Payment.amount)
                .where(
                    or_(Payment.pay_url.is_not(None), Payment.init_until.is_(None), Payment.init_until <= now),
                    *when,
                )
                .order_by(Payment.last_checked_at.asc().nulls_first(), Payment.created_at)
                .limit(limit)
            ).all()
        outcomes: list[tuple[str, str]] = []
        down: set[str] = set()  # platforms found down in this run: the rest of their payments wait for the next
        for reference, platform_name, created_at, code, amount in due:
            platform = self.platforms.get(platform_name)
            if platform is None:  # made at a platform hub is no longer configured for: nobody to ask
                outcomes.append((reference, "platform_not_configured"))
                continue
            if platform_name in down or self._waits.left(platform_name) > 0:
                outcomes.append((reference, "not_asked"))  # asked first next time (the least recently asked)
                continue
            try:
                result = platform.query(reference, correlation_id=correlation_id)
            except PeerError as exc:
                outcomes.append((reference, "errors"))
                self._waits.note(platform_name, exc)
                if exc.peer_down:  # unreachable, timing out, or asking to wait: one call, not one per payment
                    down.add(platform_name)
                    log.warning(
                        "payment platform unavailable, its other payments are checked next time",
                        extra={"platform": platform_name, "error_code": exc.code, "retry_after_s": exc.retry_after},
                    )
                continue
            expired = False
            if result.status in ("paid", "failed") and result.transaction_id and result.amount is not None:
                cb = Callback(
                    reference=reference,
                    success=result.status == "paid",
                    amount=result.amount,
                    currency="VND",
                    transaction_id=result.transaction_id,
                    bank=None,
                    at=result.at or now,
                    error_code="00" if result.status == "paid" else "51",
                )
                verdict, _, _ = self._apply(platform_name, cb, "query", correlation_id, "query:" + reference)
                outcomes.append((reference, verdict))
            else:
                expired = created_at <= now - self.expire_after  # (the store's datetimes are aware, in UTC)
                outcomes.append((reference, "expired" if expired else "still_pending"))
            asked = utcnow()
            given_up = False
            with self.sessions.begin() as s:
                if expired and self._expire(s, code, reference, amount, correlation_id):
                    log.info("payment expired unpaid", extra={"reference": reference, "platform": platform_name})
                    given_up = True
                s.execute(update(PAYMENTS).where(PAYMENTS.c.reference == reference).values(last_checked_at=asked))
            if given_up:
                self._on_commit()  # the citizen's message is in the outbox: the relay need not wait for its poll
        return outcomes

    def _expire(self, s: Session, code: str, reference: str, amount: int, correlation_id: str) -> bool:
        """Give a pending payment up (`expired`), only if nothing credited it meanwhile, and say so in its dossier's
        history (`_expired`), in `s`'s transaction. Whether anything was given up and written."""
        done = s.execute(
            update(PAYMENTS)
            .where(PAYMENTS.c.reference == reference, PAYMENTS.c.status == "pending")
            .values(status="expired", updated_at=utcnow())
        )
        return bool(done.rowcount) and self._expired(s, code, reference, amount, correlation_id)  # type: ignore[attr-defined]

    def _expired(self, s: Session, code: str, reference: str, amount: int, correlation_id: str) -> bool:
        """A payment just given up: said in its dossier's history, in the same transaction (once, as the change of
        status is); the citizen is told to pay again only while the dossier still waits for a payment (6) and has
        no other pay link open or paid. Whether anything was written."""
        dossier = s.execute(SELECT_DOSSIER, {"code": code}).first()  # locked, after the payment: as callbacks do
        if dossier is None:
            return False
        other = s.scalar(
            select(func.count())
            .select_from(Payment)
            .where(
                Payment.dossier_code == code,
                Payment.reference != reference,
                Payment.status.in_(("pending", "paid")),
            )
        )
        waiting = dossier.status == DossierStatus.PAYMENT_REQUESTED and not other
        self.dossiers.payment_expired(
            s, code, dossier, client=SYSTEM.name, reference=reference, amount=amount, tell_citizen=waiting,
            correlation_id=correlation_id,
        )  # fmt: skip
        return True

    def of_dossier(self, code: str) -> list[dict[str, Any]]:
        """A dossier's payments, newest first, each with the callbacks received for it (for the console)."""
        with self.sessions() as s:
            payments = s.scalars(
                select(Payment).where(Payment.dossier_code == code).order_by(Payment.created_at.desc(), Payment.id)
            ).all()
            refs = [p.reference for p in payments]
            heard: dict[str, list[dict[str, Any]]] = {}
            if refs:
                for c in s.scalars(
                    select(PaymentCallback).where(PaymentCallback.reference.in_(refs)).order_by(PaymentCallback.id)
                ):
                    heard.setdefault(str(c.reference), []).append(callback_view(c))
            return [
                view(p) | {"last_checked_at": p.last_checked_at, "callbacks": heard.get(p.reference, [])}
                for p in payments
            ]

    def listing(self, status: str | None, *, limit: int = 200) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Payments in a state (all: None), oldest pending first, others newest first; and the count per state."""
        with self.sessions() as s:
            counts = {
                str(state): int(n)
                for state, n in s.execute(select(Payment.status, func.count()).group_by(Payment.status)).all()
            }
            q = select(Payment)
            if status is not None:
                q = q.where(Payment.status == status)
            # oldest pending first, others newest first: both one walk of an index ((status|created_at), id)
            order = (
                (Payment.created_at.asc(), Payment.id.asc())
                if status == "pending"
                else (Payment.created_at.desc(), Payment.id.desc())
            )
            rows = [
                view(p) | {"last_checked_at": p.last_checked_at} for p in s.scalars(q.order_by(*order).limit(limit))
            ]
        return rows, counts

    def refused_callbacks(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """The latest callbacks hub refused (forged, replayed, unknown, another amount): newest first."""
        with self.sessions() as s:
            return [
                callback_view(c)
                for c in s.scalars(
                    select(PaymentCallback)
                    .where(PaymentCallback.verdict == "rejected")
                    .order_by(PaymentCallback.id.desc())
                    .limit(limit)
                )
            ]

    # -- reconciliation --------------------------------------------------------------------------------------

    def reconcile(self, platform_name: str, day: date, *, correlation_id: str, repair: bool = True) -> dict[str, Any]:
        """Hub's ledger of payments paid on `day` (Vietnam time) against the platform's statement. A line for a
        payment hub does not have as paid (its confirmation lost, and the payment given up as expired or never
        asked about since) is, with `repair`, asked about at the platform and credited on its answer — the
        dossier moves on — and reported as `recovered`; the statement alone credits nothing."""
        platform = self.platforms[platform_name]
        try:
            lines = platform.statement(day, correlation_id=correlation_id)
        except PeerError as exc:
            raise PlatformUnavailable(
                "the payment platform did not give its statement", peer_error=exc.code, **wait_asked(exc)
            ) from None
        recovered: set[str] = set()
        if repair and lines:
            unsettled = [
                Payment.platform == platform_name,
                Payment.status.in_(("pending", "expired", "failed")),
                Payment.reference.in_(sorted({line.reference for line in lines})),
            ]
            asked = self._ask(unsettled, limit=len(lines), correlation_id=correlation_id)
            recovered = {reference for reference, verdict in asked if verdict == "applied"}
            if recovered:
                log.warning(
                    "payments credited from reconciliation: their confirmation never reached hub",
                    extra={"platform": platform_name, "day": day.isoformat(), "references": sorted(recovered)},
                )
        start = datetime(day.year, day.month, day.day, tzinfo=VN_TZ)
        with self.sessions() as s:
            ours = s.scalars(
                select(Payment).where(
                    Payment.platform == platform_name,
                    Payment.status == "paid",
                    and_(Payment.paid_at >= start, Payment.paid_at < start + timedelta(days=1)),
                )
            ).all()
            by_txn = {p.transaction_id: p for p in ours}
            theirs = {line.transaction_id: line for line in lines}
            known_refs = {
                p.reference: p
                for p in s.scalars(
                    select(Payment).where(Payment.reference.in_([line.reference for line in lines]))
                ).all()
            }
        rows: list[dict[str, Any]] = []
        for txn, line in sorted(theirs.items()):
            mine = by_txn.get(txn)
            if mine is None:
                other = known_refs.get(line.reference)
                kind = "missing_at_hub"
                note = f"hub has {line.reference} as {other.status}" if other is not None else "reference unknown"
                rows.append(_row(kind, line.reference, txn, None, line.amount, note))
            elif mine.amount != line.amount:
                rows.append(_row("amount_mismatch", mine.reference, txn, mine.amount, line.amount, None))
            elif mine.reference in recovered:
                note = "credited now: its confirmation had not reached hub; the platform confirms it paid"
                rows.append(_row("recovered", mine.reference, txn, mine.amount, line.amount, note))
            else:
                rows.append(_row("matched", mine.reference, txn, mine.amount, line.amount, None))
        for paid in sorted(ours, key=lambda p: p.reference):
            if paid.transaction_id not in theirs:
                rows.append(
                    _row("missing_at_platform", paid.reference, paid.transaction_id or "", paid.amount, None, None)
                )
        summary = Counter(r["result"] for r in rows)
        return {
            "platform": platform_name,
            "date": day.isoformat(),
            "summary": {
                k: summary.get(k, 0)
                for k in ("matched", "recovered", "missing_at_hub", "missing_at_platform", "amount_mismatch")
            },
            "hub_total": sum(p.amount for p in ours),
            "platform_total": sum(line.amount for line in lines),
            "rows": rows,
        }


def _row(
    result: str, reference: str, txn: str, hub: int | None, platform: int | None, note: str | None
) -> dict[str, Any]:
    return {
        "result": result,
        "reference": reference,
        "transaction_id": txn,
        "hub_amount": hub,
        "platform_amount": platform,
        "note": note,
    }
