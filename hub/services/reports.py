"""The report on how administrative procedures were resolved (tình hình giải quyết thủ tục hành chính) over a
period, per agency and procedure, from the dossiers hub relays — the figures an agency reports each quarter and
that the national portal's service index counts from what reached it: dossiers to resolve (carried over from
before the period, received in it online or in person/by post), resolved in it (before the appointment date, on
it, after it), withdrawn or stopped, and still being resolved at its end (within time, overdue). ADR 0048 says
what counts as what.

Read from hub's store: a dossier's received date, channel and end of processing as its one-stop system sent them
(`NgayTiepNhan`, `KenhThucHien`, `NgayKetThucXuLy`, all kept when closed dossiers' personal data is removed), its
appointment (`NgayHenTra`, the latest sent), and the moments its status first became 9 or 10, 7 or 8 (its
events)."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import BigInteger, DateTime, any_, bindparam, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import VN_TZ, parse_national
from hub.domain.errors import DomainError, InvalidDate, TooManyRequests
from hub.domain.spreadsheet import spreadsheet_safe
from hub.domain.status import OPEN
from hub.domain.status import DossierStatus as S
from hub.services.dossiers import agencies_where
from hub.store.db import reading_session
from hub.store.models import Dossier, StatusEvent

MAX_DAYS = 366 * 5  # a report is of a month, a quarter, a year; five years bounds what one request reads
ONLINE = "2"  # KenhThucHien: 1 in person, 2 online, 3 by post
RESOLVED = (int(S.PROCESSED), int(S.RESULT_RETURNED))
ENDED = (int(S.WITHDRAWN), int(S.STOPPED))
BATCH = 2000  # dossiers read at a time, their events with them
CLOCK_SKEW = timedelta(minutes=10)  # a one-stop system's clock ahead of hub's
NEVER_RECEIVED = 0  # (a key of a dossier's first steps: it ended and no step says it was received before)
# the statuses a dossier may end from before anyone received it (1 newly filed; 5 papers asked of a newly filed
# one), and those that say it was received
BEFORE_RECEIPT = (int(S.NEW), int(S.SUPPLEMENT_REQUESTED))
RECEIVED_ONCE = (int(S.ACCEPTED), int(S.PROCESSING), int(S.PAYMENT_REQUESTED), *RESOLVED)
NOT_RECEIVED = datetime.max.replace(tzinfo=VN_TZ)  # later than any period: counted in none


# A report reads every dossier of its period (a quarter of a busy province: seconds): at most this many at once in a
# process, so that reports asked for together cannot take every thread the API's requests are served on
AT_ONCE = 2
_slots = threading.BoundedSemaphore(AT_ONCE)


@contextmanager
def slot() -> Iterator[None]:
    """A place for one report, or 429 `reports_busy` (Retry-After) when every place is taken."""
    if not _slots.acquire(blocking=False):
        raise TooManyRequests(
            f"{AT_ONCE} reports are being made; ask again shortly", code="reports_busy", retry_after=10
        )
    try:
        yield
    finally:
        _slots.release()


@dataclass
class Figures:
    """One line of the report. `to_resolve` = `carried_over` + `received_online` + `received_other`, and equally
    `resolved` + `ended` + `in_progress`."""

    carried_over: int = 0  # received before the period, neither resolved nor ended before it
    received_online: int = 0  # received in the period, KenhThucHien 2
    received_other: int = 0  # received in the period in person or by post (KenhThucHien 1, 3, or not said)
    resolved_early: int = 0  # resolved on a day before the appointment's (or with no appointment)
    resolved_on_time: int = 0  # resolved on the appointment's day, by its hour or later that day
    resolved_late: int = 0  # resolved on a day after the appointment's
    ended: int = 0  # withdrawn by the citizen (7) or processing stopped (8) in the period
    in_progress_in_time: int = 0  # not resolved nor ended at the period's end, its appointment not passed
    in_progress_overdue: int = 0  # the same, its appointment passed by the period's end

    def add(self, other: Figures) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        received = self.received_online + self.received_other
        resolved = self.resolved_early + self.resolved_on_time + self.resolved_late
        out |= {
            "received": received,
            "to_resolve": self.carried_over + received,
            "resolved": resolved,
            "in_progress": self.in_progress_in_time + self.in_progress_overdue,
            # shares in percent, None where there is nothing to divide
            "on_time_rate": _share(self.resolved_early + self.resolved_on_time, resolved),
            "online_rate": _share(self.received_online, received),
        }
        return out


def _share(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


@dataclass
class Report:
    start: date
    end: date
    at: datetime  # the moment the figures hold for: the period's end, or now when the period is not over
    lines: dict[tuple[str, str], Figures] = field(default_factory=dict)  # (agency, MaTTHC) -> figures
    unreadable: int = 0  # dossiers whose received date could not be read: left out, counted here

    def total(self) -> Figures:
        total = Figures()
        for figures in self.lines.values():
            total.add(figures)
        return total

    @property
    def as_of(self) -> str:
        """The moment the figures hold for, in Vietnam's time, to the second."""
        return self.at.astimezone(VN_TZ).isoformat(timespec="seconds")

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "as_of": self.as_of,
            "lines": [
                {"agency": agency, "MaTTHC": procedure, **figures.as_dict()}
                for (agency, procedure), figures in sorted(self.lines.items())
            ],
            "total": self.total().as_dict(),
            "unreadable": self.unreadable,
        }


COLUMNS = (
    "carried_over", "received_online", "received_other", "received", "to_resolve", "resolved_early",
    "resolved_on_time", "resolved_late", "resolved", "ended", "in_progress_in_time", "in_progress_overdue",
    "in_progress", "on_time_rate", "online_rate",
)  # fmt: skip


def as_csv(report: Report, names: dict[str, str] | None = None) -> str:
    """The report's lines, then a total line (agency and MaTTHC "*"), as CSV: one column a figure, headed by its
    name in the JSON, or by `names` (the console's words for a spreadsheet). Codes are the one-stop systems' own:
    written so that no spreadsheet runs one as a formula."""
    keys = ["from", "to", "agency", "MaTTHC", *COLUMNS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([(names or {}).get(k, k) for k in keys])
    head = {"from": report.start.isoformat(), "to": report.end.isoformat()}
    lines = [(agency, procedure, figures.as_dict()) for (agency, procedure), figures in sorted(report.lines.items())]
    for agency, procedure, values in [*lines, ("*", "*", report.total().as_dict())]:
        row = spreadsheet_safe({**head, "agency": agency, "MaTTHC": procedure, **{c: values[c] for c in COLUMNS}})
        writer.writerow(row[k] for k in keys)
    return out.getvalue()


def period(start: date, end: date) -> tuple[datetime, datetime]:
    """The period's bounds as instants: from `start`'s midnight to the midnight after `end`, Vietnam time."""
    if end < start:
        raise DomainError(f"the period ends ({end}) before it starts ({start})", code="invalid_period")
    if start.year < 1900 or end.year > 9000:
        raise DomainError("a report's days are from 1900 to 9000", code="invalid_period")
    if (end - start).days >= MAX_DAYS:
        raise DomainError(f"a report covers at most {MAX_DAYS} days", code="invalid_period")
    return (
        datetime.combine(start, time(), tzinfo=VN_TZ),
        datetime.combine(end + timedelta(days=1), time(), tzinfo=VN_TZ),
    )


def served(
    sessions: sessionmaker[Session], start: date, end: date, *, agencies: Sequence[str], now: datetime
) -> Report:
    """`resolution` as a request to the API or the console makes it: in one of the process's few places (`slot`),
    from one snapshot of the store."""
    with slot(), reading_session(sessions, snapshot=True) as session:
        return resolution(session, start, end, agencies=agencies, now=now)


def resolution(session: Session, start: date, end: date, *, agencies: Sequence[str] = ("*",), now: datetime) -> Report:
    """The report for the days `start` to `end` (inclusive, Vietnam time) over the dossiers of `agencies`."""
    lo, hi = period(start, end)
    report = Report(start, end, min(hi, now))
    cut = report.at
    for row, firsts in _candidates(session, lo, agencies):
        received = _received(row) if NEVER_RECEIVED not in firsts else NOT_RECEIVED
        if received is None:
            report.unreadable += 1
            continue
        if received >= cut:
            continue  # received after the period (or not yet)
        resolved, ended = _first(firsts, RESOLVED, row.finished), _first(firsts, ENDED, None)
        closed = min((t for t in (resolved, ended) if t is not None), default=None)
        if closed is not None and closed < lo:
            continue  # done with before the period
        figures = report.lines.setdefault((row.agency, row.procedure_code), Figures())
        if received < lo:
            figures.carried_over += 1
        elif row.channel is not None and str(row.channel) == ONLINE:  # (SQLite reads a JSON number as one)
            figures.received_online += 1
        else:
            figures.received_other += 1
        if closed is not None and closed < cut:
            if closed == resolved:
                _resolved(figures, closed, row.due_at)
            else:
                figures.ended += 1
        elif row.due_at is not None and row.due_at < cut:
            figures.in_progress_overdue += 1
        else:
            figures.in_progress_in_time += 1
    return report


def _resolved(figures: Figures, at: datetime, due: datetime | None) -> None:
    if due is None:
        figures.resolved_early += 1  # no appointment to miss
        return
    day, due_day = at.astimezone(VN_TZ).date(), due.astimezone(VN_TZ).date()
    if day < due_day:
        figures.resolved_early += 1
    elif day == due_day:
        figures.resolved_on_time += 1
    else:
        figures.resolved_late += 1


def _candidates(
    session: Session, lo: datetime, agencies: Sequence[str]
) -> Iterator[tuple[Any, dict[int, tuple[datetime, Any]]]]:
    """The dossiers that may count: open ones, and closed ones changed since the period began (one closed and left
    alone before it was done with before it). With each, its first event of each of the statuses 7, 8, 9, 10: when
    hub recorded it, and the time of that step as its one-stop system stated it (ThoiDiemXuLy). Read a batch at a
    time by id, each batch one query for the dossiers and one for their events."""
    where = [
        or_(Dossier.status.in_([int(s) for s in sorted(OPEN)]), Dossier.updated_at >= lo),
        *agencies_where(agencies),
    ]
    where.append(Dossier.status.notin_([int(S.REFUSED)]))  # not received: no part of what was resolved
    postgresql = session.get_bind().dialect.name == "postgresql"

    def instant(column: Any) -> Any:
        """PostgreSQL's timestamptz as psycopg reads it (aware: all the report needs), not put in UTC a value at a
        time by the store's type (a tenth of the report's time); SQLite's naive UTC made aware by it."""
        return type_coerce(column, DateTime(timezone=True)) if postgresql else column

    columns = (
        Dossier.id,
        Dossier.agency,
        Dossier.procedure_code,
        Dossier.status,
        instant(Dossier.due_at).label("due_at"),
        instant(Dossier.created_at).label("created_at"),
        Dossier.data["NgayTiepNhan"].as_string().label("received"),
        Dossier.data["KenhThucHien"].as_string().label("channel"),
        Dossier.data["NgayKetThucXuLy"].as_string().label("finished"),
    )
    if postgresql:  # one array parameter: psycopg parses a query of 2,000
        # placeholders afresh at every batch (a fifth of the report's time), PostgreSQL plans `= ANY` as `IN`

        def of_batch(ids: list[int]) -> Any:
            return StatusEvent.dossier_id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
    else:

        def of_batch(ids: list[int]) -> Any:
            return StatusEvent.dossier_id.in_(ids)

    conn = session.connection()  # Core: the rows as they come, no ORM loading of each
    after = 0
    while True:
        rows = conn.execute(select(*columns).where(*where, Dossier.id > after).order_by(Dossier.id).limit(BATCH)).all()
        if not rows:
            return
        ids = [r.id for r in rows]
        firsts: dict[int, dict[int, tuple[datetime, Any]]] = {}
        for dossier_id, status, previous, at, stated in conn.execute(
            select(
                StatusEvent.dossier_id,
                StatusEvent.status,
                StatusEvent.previous_status,
                instant(StatusEvent.created_at),
                StatusEvent.payload["ThoiDiemXuLy"].as_string(),
            )
            .where(of_batch(ids), StatusEvent.status.in_([*RESOLVED, *ENDED]))
            .order_by(StatusEvent.dossier_id, StatusEvent.seq)
        ).all():
            seen = firsts.setdefault(dossier_id, {})
            seen.setdefault(int(status), (at, stated))  # the first of each status
            if int(status) in ENDED and previous in BEFORE_RECEIPT:  # withdrawn or stopped while newly filed,
                seen.setdefault(NEVER_RECEIVED, (at, None))  # or asked for papers: received before that?
        unsure = [d for d, seen in firsts.items() if NEVER_RECEIVED in seen]
        if unsure:  # a few: those that ended while newly filed or asked for papers
            received = set(
                conn.execute(
                    select(StatusEvent.dossier_id)
                    .where(StatusEvent.dossier_id.in_(unsure), StatusEvent.status.in_(RECEIVED_ONCE))
                    .distinct()
                ).scalars()
            )
            for d in received:
                del firsts[d][NEVER_RECEIVED]
        empty: dict[int, tuple[datetime, Any]] = {}
        for r in rows:  # (the rows as read: `received`, `channel`, `finished` as sent, read only where needed)
            yield r, firsts.get(r.id, empty)
        after = ids[-1]


def _national(raw: Any) -> datetime | None:
    if not raw:
        return None
    try:
        return parse_national(str(raw))
    except InvalidDate:
        return None


def _received(row: Any) -> datetime | None:
    """When the dossier was received: its NgayTiepNhan (every dossier hub takes has one; without it, when hub first
    saw the dossier); None when it is not a date; NOT_RECEIVED for a dossier filed online (1, newly filed) that no
    officer has received yet."""
    if int(row.status) == int(S.NEW):
        return NOT_RECEIVED
    if row.received:
        return _national(row.received)
    first: datetime = row.created_at
    return first


def _first(firsts: dict[int, tuple[datetime, Any]], statuses: Sequence[int], official: Any) -> datetime | None:
    """The first moment the dossier reached any of `statuses`: the step's time as its one-stop system stated it
    (ThoiDiemXuLy) or, for its resolution, the end of processing it sent (NgayKetThucXuLy, `official`) — unless
    that is later than when hub heard of the step (a date to come is a plan, not the end), then when hub did."""
    seen = [firsts[s] for s in statuses if s in firsts]
    if not seen:
        return None
    heard, stated = min(seen, key=lambda first: first[0])
    for raw in (official, stated):
        when = _national(raw)
        if when is not None and when <= heard + CLOCK_SKEW:
            return when
    return heard
