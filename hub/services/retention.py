"""Personal data of closed dossiers, removed once they have been closed for the retention period (Decree 13/2023 on
personal data protection: kept no longer than its purpose needs). hub is not the dossier's system of record — the
one-stop system and the national portal are —: it holds the owner's name, ID number, contacts, the summary and the
files' links to relay them and to answer look-ups while the dossier is open. A dossier closed (refused 3,
withdrawn 7, stopped 8, result returned 10) longer than the period, with nothing of it still to deliver, keeps what
statistics and the status history need (MaHoSo, procedure, agency, channel, dates, statuses, fees, who handled each
step: `KEEP`) and loses everything else: in its row, in its events, in its delivered outbox messages (and their
peers' replies).
The citizen no longer finds it among their own (the owner's HMAC goes too). The access log of personal data and the
payment records are legal records and stay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.domain.status import TERMINAL
from hub.store.models import Dossier, OutboxMessage, StatusEvent
from hub.sync import outbox

# What a redacted dossier keeps, at any depth: the fields statistics and the status history need, none of which
# says who the citizen is, how to reach them or what their files hold (DongBoHoSoMC, CapNhatTienDoHoSoMC, the
# one-stop system's down-flow messages, the documents sent to other agencies, the peers' answers) — and nothing
# else. A list of what to keep, not of what to remove: a field this list does not know (a one-stop system may send
# more than the contract names, e.g. the person who filed on the owner's behalf) goes, with what it holds.
KEEP = frozenset(
    {
        # the dossier: which, what procedure, which channel, when, its status, who handles it, its fees
        "MaHoSo", "MaTTHC", "TenTTHC", "MaLinhVuc", "TenLinhVuc", "KenhThucHien", "LoaiDoiTuong", "NgayTiepNhan",
        "NgayHenTra", "TrangThaiHoSo", "NgayTra", "HinhThuc", "NgayKetThucXuLy", "DonViXuLy", "DuocThanhToanTrucTuyen",
        "DanhSachLePhi", "TenPhiLePhi", "MaPhiLePhi", "HinhThucThu", "Gia",
        # a processing step: the officer, their title and department, when, the status
        "NguoiXuLy", "ChucDanh", "ThoiDiemXuLy", "PhongBanXuLy", "TrangThai", "NgayBatDau", "NgayKetThucTheoQuyDinh",
        "ThoiDiem",
        # the messages' envelopes, and the peers' answers but their free text
        "data", "isUpdating", "body", "endpoint", "client", "document_id", "request_hash", "error_code", "status",
        "message_id", "signer",
    }
)  # fmt: skip


def scrub(value: Any) -> Any:
    """`value` with only the KEEP keys, at any depth."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k in KEEP}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


# as written in the partial index ix_dossiers_closed_updated_at, literally: a bound list would not let PostgreSQL's
# planner see that the index holds every row the query wants
CLOSED = text(f"dossiers.status IN ({', '.join(str(int(s)) for s in sorted(TERMINAL))})")


WAITING = (outbox.PENDING, outbox.IN_FLIGHT, outbox.DEAD)


def _closed(cutoff: Any) -> list[Any]:
    """Closed before `cutoff`, not redacted since (a change clears `redacted_at`: it may bring data again), and
    with no message still waiting, in flight or dead."""
    waiting = exists().where(OutboxMessage.dossier_id == Dossier.id, OutboxMessage.state.in_(WAITING))
    return [CLOSED, Dossier.redacted_at.is_(None), Dossier.updated_at < cutoff, ~waiting]


def due(session: Session, *, closed_for_days: float) -> int:
    """How many dossiers `redact_closed` would take now."""
    cutoff = utcnow() - timedelta(days=closed_for_days)
    return int(session.scalar(select(func.count()).select_from(Dossier).where(*_closed(cutoff))) or 0)


def redact_closed(session: Session, *, closed_for_days: float, limit: int = 500) -> dict[str, int]:
    """Remove the personal data of up to `limit` dossiers closed for longer than `closed_for_days`, not redacted
    since their last change and with no message still to deliver (waiting, in flight or dead: an operator may need
    it whole) — of their rows, their events and their delivered messages; how many rows of each changed. Each
    dossier is locked and checked again first: a change taken meanwhile (it locks the dossier before writing its
    messages) keeps it whole until the next run."""
    cutoff = utcnow() - timedelta(days=closed_for_days)
    ids = list(session.scalars(select(Dossier.id).where(*_closed(cutoff)).order_by(Dossier.updated_at).limit(limit)))
    if not ids:
        return {"dossiers": 0, "events": 0, "messages": 0}
    locked = session.scalars(
        select(Dossier)
        .where(Dossier.id.in_(ids))
        .order_by(Dossier.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    still = set(
        session.scalars(
            select(OutboxMessage.dossier_id).where(OutboxMessage.dossier_id.in_(ids), OutboxMessage.state.in_(WAITING))
        )
    )
    now = utcnow()
    chosen = [
        d
        for d in locked
        if d.status in TERMINAL and d.redacted_at is None and d.updated_at < cutoff and d.id not in still
    ]
    for d in chosen:
        d.data, d.subject_hmac, d.redacted_at = scrub(d.data), None, now
    ids = [d.id for d in chosen]
    # the rows that change, written by primary key in one batch a table (an UPDATE a row was 2.8 ms a dossier)
    events = [
        {"id": e.id, "payload": cleaned}
        for e in session.execute(select(StatusEvent.id, StatusEvent.payload).where(StatusEvent.dossier_id.in_(ids)))
        if (cleaned := scrub(e.payload)) != e.payload
    ]
    delivered = and_(OutboxMessage.dossier_id.in_(ids), OutboxMessage.state.in_((outbox.DELIVERED, outbox.SET_ASIDE)))
    messages = []
    for m in session.execute(
        select(OutboxMessage.id, OutboxMessage.payload, OutboxMessage.peer_reply).where(delivered)
    ):
        payload, reply = scrub(m.payload), scrub(m.peer_reply)
        if payload != m.payload or reply != m.peer_reply:
            messages.append({"id": m.id, "payload": payload, "peer_reply": reply})
    if events:
        session.execute(update(StatusEvent), events)
    if messages:
        session.execute(update(OutboxMessage), messages)
    return {"dossiers": len(chosen), "events": len(events), "messages": len(messages)}


BATCH = 500


def redact_all(
    sessions: sessionmaker[Session], closed_for_days: float, *, by: str | None = None, on_step: Any = None
) -> dict[str, int]:
    """`redact_closed` in transactions of BATCH dossiers until none is left; `by` given (an operator's run), each
    transaction is recorded as their action."""
    from hub.services import actions

    totals = {"dossiers": 0, "events": 0, "messages": 0}
    while True:
        with sessions.begin() as s:
            step = redact_closed(s, closed_for_days=closed_for_days, limit=BATCH)
            if by is not None and step["dossiers"]:
                actions.record(s, by, "personal_data_removed", {"closed_for_days": closed_for_days}, step)
        totals = {k: totals[k] + step[k] for k in totals}
        if on_step is not None:
            on_step(step)
        if step["dossiers"] < BATCH:
            return totals
