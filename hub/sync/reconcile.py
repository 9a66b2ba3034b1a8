"""Reconciliation with the national portal: compare hub's view of every open up-flow dossier (and of those whose
result was returned in the last `returned_days`) with the portal's (TraCuuHoSo), report drift per dossier, and
repair what is safe.

Kinds of drift:
- missing_at_portal: hub delivered the dossier, the portal does not know it (lost on its side) → repair: put the
  dossier's delivered events back in line, in order, with their original idempotency keys;
- status_behind: the portal's status is an earlier one of the dossier's history → repair: re-enqueue the events
  after the one the portal has;
- status_ahead: the portal shows a status hub never sent (changed at the portal) → reported for a person;
- unknown_to_hub: the portal has a dossier of a routed agency that hub does not know → reported (the polling
  fallback takes such dossiers in).
Events still pending or in flight are not drift: the relay is on its way."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.errors import PeerError, PeerProtocolError, PeerUnavailable
from hub.adapters.exchange import ExchangeHook, ExchangeRecord
from hub.adapters.national_portal import NationalPortal
from hub.domain.dates import format_national, utcnow
from hub.domain.numbers import whole_number
from hub.domain.status import DossierStatus
from hub.services.dossiers import NATIONAL_PORTAL
from hub.services.retention import CLOSED
from hub.store.models import Dossier, OutboxMessage, StatusEvent
from hub.sync import outbox

# the dossiers reconcile leaves alone. Not the domain's TERMINAL: a dossier whose result was returned (10) is
# still compared for `returned_days` after (reconcile's second query), so that a portal left behind on that last step is
# brought up to date — not for ever: a province closes hundreds of thousands a year, and every run would ask the
# portal about each of them again
NOT_RECONCILED = {int(DossierStatus.REFUSED), int(DossierStatus.WITHDRAWN), int(DossierStatus.STOPPED)}
STILL_OPEN = [int(st) for st in DossierStatus if int(st) not in NOT_RECONCILED and st != DossierStatus.RESULT_RETURNED]
SETTLED = (outbox.DELIVERED, outbox.SET_ASIDE)
# what a look-up skipped because the portal was found down earlier in the run answers
NOT_ASKED = PeerUnavailable("national_portal", "not asked: the portal was found unavailable earlier in this run")
log = logging.getLogger("hub.reconcile")


@dataclass
class Drift:
    code: str
    kind: str
    hub_status: int
    portal_status: int | None
    repaired: int = 0  # events put back in line
    note: str = ""


@dataclass
class ReconcileResult:
    checked: int = 0
    in_sync: int = 0
    in_progress: int = 0
    errors: int = 0
    not_asked: int = 0  # the portal was found down (or asked to wait) earlier in the run
    drift: list[Drift] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for d in self.drift:
            counts[d.kind] = counts.get(d.kind, 0) + 1
        return {
            "checked": self.checked,
            "in_sync": self.in_sync,
            "in_progress": self.in_progress,
            "errors": self.errors,
            "not_asked": self.not_asked,
            "drift_by_kind": counts,
            "repaired_events": sum(d.repaired for d in self.drift),
            "drift": [d.__dict__ for d in self.drift],
        }


def reconcile(
    sessions: sessionmaker[Session],
    portal: NationalPortal,
    *,
    repair: bool = True,
    agencies: list[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    batch: int = 500,
    concurrency: int = 8,
    on_exchanges: Callable[[list[ExchangeRecord]], None] | None = None,
    returned_days: float = 7.0,
    pace: Callable[[], None] | None = None,
) -> ReconcileResult:
    """Dossiers are read `batch` at a time (one query for their outbox rows) and looked up at the portal
    `concurrency` at a time; verdicts and repairs are made in dossier order. `on_exchanges`: where each batch's
    exchanges with the portal are recorded, together (the append-only record of every outbound exchange). `pace`:
    waits for each look-up's turn in the portal's rate (HUB_PEER_RATE_LIMITS, shared with the deliveries; ADR 0049).
    `returned_days`: how long after its result was returned (10) a dossier is still compared."""
    result = ReconcileResult()
    columns = (Dossier.id, Dossier.code, Dossier.status)
    with sessions() as s:
        # the open statuses by name: a seek per status on ix_dossiers_status_due_at (NOT IN read every dossier)
        open_dossiers = list(s.execute(select(*columns).where(Dossier.status.in_(STILL_OPEN))))
        if returned_days > 0:
            # returned lately, its personal data not removed (what the portal was sent, scrubbed, cannot go again):
            # on ix_dossiers_closed_updated_at, whose predicate CLOSED repeats — a change after 10 is none
            since = utcnow() - timedelta(days=returned_days)
            open_dossiers += s.execute(
                select(*columns).where(
                    CLOSED,
                    Dossier.redacted_at.is_(None),
                    Dossier.updated_at >= since,
                    Dossier.status == int(DossierStatus.RESULT_RETURNED),
                )
            )
    open_dossiers.sort(key=lambda d: d.id)
    total = len(open_dossiers)
    done = 0

    down = threading.Event()  # the portal is unreachable, timing out or asking to wait: ask it no more this run
    exchanges: list[ExchangeRecord] = []  # this batch's, appended from the look-up threads (list.append is atomic)

    def look_up(code: str) -> dict[str, Any] | PeerError | None:
        if down.is_set():
            return NOT_ASKED
        if pace is not None:
            pace()
        try:
            seen = portal.look_up(code, correlation_id=f"reconcile-{code}", on_exchange=exchanges.append)
        except PeerError as exc:
            if exc.peer_down and not down.is_set():
                down.set()
                log.warning(
                    "national portal unavailable (%s: %s): the rest of this reconciliation is not asked",
                    exc.code,
                    str(exc)[:200],
                    extra={"error_code": exc.code, "retry_after_s": exc.retry_after},
                )
            return exc
        if seen is not None and portal_status(seen) is None:  # counted as an error, as an unreadable reply is
            return PeerProtocolError("national_portal", f"TraCuuHoSo {code}: TrangThaiHoSo is not a status")
        return seen

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="reconcile") as pool:
        for start in range(0, total, batch):
            chunk = open_dossiers[start : start + batch]
            rows_of: dict[int, list[Any]] = {d.id: [] for d in chunk}
            with sessions() as s:
                for r in s.execute(
                    select(OutboxMessage.dossier_id, OutboxMessage.seq, OutboxMessage.state, StatusEvent.status)
                    .join(StatusEvent, StatusEvent.event_id == OutboxMessage.event_id)
                    .where(OutboxMessage.dossier_id.in_(list(rows_of)), OutboxMessage.destination == NATIONAL_PORTAL)
                    .order_by(OutboxMessage.dossier_id, OutboxMessage.seq)
                ):
                    rows_of[r.dossier_id].append(r)
            # settled: every message delivered or set aside by an operator (never to be sent: not awaited)
            settled = [d for d in chunk if rows_of[d.id] and all(r.state in SETTLED for r in rows_of[d.id])]
            seen_of = dict(zip((d.id for d in settled), pool.map(look_up, [d.code for d in settled]), strict=True))
            if on_exchanges is not None and exchanges:
                on_exchanges(list(exchanges))
            exchanges.clear()
            for dossier_id, code, status in chunk:
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                rows = rows_of[dossier_id]
                if not rows:
                    continue  # a down-flow dossier: the portal is its source, not its destination
                result.checked += 1
                if dossier_id not in seen_of:
                    result.in_progress += 1  # events still pending or in flight: the relay is on its way
                    continue
                seen = seen_of[dossier_id]
                if seen is NOT_ASKED:
                    result.not_asked += 1
                    continue
                if isinstance(seen, PeerError):
                    result.errors += 1
                    continue
                sent = [r for r in rows if r.state == outbox.DELIVERED]  # what the portal was given
                _judge(sessions, result, dossier_id, code, status, sent, seen, repair)
    return result


def _judge(
    sessions: sessionmaker[Session],
    result: ReconcileResult,
    dossier_id: int,
    code: str,
    status: int,
    rows: list[Any],
    seen: dict[str, Any] | None,
    repair: bool,
) -> None:
    """Compare one settled dossier with the portal's view of it; record (and repair) its drift."""
    if seen is None:
        drift = Drift(code, "missing_at_portal", status, None, note="the portal does not know the dossier")
        if repair:
            drift.repaired = _requeue(sessions, dossier_id, after_seq=0)
        result.drift.append(drift)
        return
    at_portal = portal_status(seen)
    if at_portal == status:
        result.in_sync += 1
        return
    history = [int(r.status) for r in rows]
    if at_portal in history[:-1]:
        # the portal stopped at an earlier step: everything after its last occurrence goes again
        last = max(i for i, st in enumerate(history[:-1]) if st == at_portal)
        drift = Drift(code, "status_behind", status, at_portal, note=f"portal at step {last + 1} of {len(history)}")
        if repair:
            drift.repaired = _requeue(sessions, dossier_id, after_seq=int(rows[last].seq))
        result.drift.append(drift)
    else:
        result.drift.append(Drift(code, "status_ahead", status, at_portal, note="changed at the portal: check by hand"))


def unknown_to_hub(
    sessions: sessionmaker[Session],
    portal: NationalPortal,
    agency_patterns: list[str],
    *,
    on_exchange: ExchangeHook | None = None,
    days: float = 7.0,
    on_error: Callable[[PeerError], None] | None = None,
    pace: Callable[[], None] | None = None,
) -> list[Drift]:
    """Dossiers the portal lists for the routed agencies (TraCuuHoSoMoi) as filed in the last `days` that hub does
    not know (the portal's whole history, asked every run, would grow without end). A route the portal does not
    list is passed to `on_error` (the run's errors) and the next route asked. `pace`: waits for each call's turn
    at the portal (HUB_PEER_RATE_LIMITS)."""
    found: list[Drift] = []
    since = format_national(utcnow() - timedelta(days=days))
    for pattern in agency_patterns:
        if pace is not None:
            pace()
        try:
            reply = portal.call(
                "TraCuuHoSoMoi", {"MaCoQuan": pattern, "TuNgay": since}, idempotency_key=None,
                correlation_id="reconcile", on_exchange=on_exchange,
            )  # fmt: skip
        except PeerError as exc:
            log.warning(
                "national portal did not list the dossiers filed for %s: %s", pattern, exc.code,
                extra={"error_code": exc.code},
            )  # fmt: skip
            if on_error is not None:
                on_error(exc)
            continue
        items = reply.get("data")
        # entries that break the contract (not an object, no status) are passed over
        listed = [i for i in items if isinstance(i, dict) and portal_status(i)] if isinstance(items, list) else []
        codes = [str(i.get("MaHoSo")) for i in listed]
        if not codes:
            continue
        known: set[str] = set()
        with sessions() as s:  # a few hundred codes a query (a week of a province's filings, thousands in all)
            for i in range(0, len(codes), 500):
                known.update(s.scalars(select(Dossier.code).where(Dossier.code.in_(codes[i : i + 500]))))
        for item, code in zip(listed, codes, strict=True):
            if code not in known:
                found.append(Drift(code, "unknown_to_hub", 0, portal_status(item), note="not taken in yet"))
    return found


def portal_status(seen: dict[str, Any]) -> int | None:
    """The dossier's TrangThaiHoSo as the portal gave it (an integer 1–10, or its digits); None if it gave none."""
    value = whole_number(seen.get("TrangThaiHoSo"), 2)
    return value if value is not None and 1 <= value <= 10 else None


def _requeue(sessions: sessionmaker[Session], dossier_id: int, *, after_seq: int) -> int:
    """Put delivered up-flow rows after `after_seq` back in line, due now (order is kept by the claim rule)."""
    with sessions.begin() as s:
        result = s.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.dossier_id == dossier_id,
                OutboxMessage.destination == NATIONAL_PORTAL,
                OutboxMessage.seq > after_seq,
                OutboxMessage.state == outbox.DELIVERED,
            )
            .values(state=outbox.PENDING, attempts=0, next_attempt_at=utcnow(), delivered_at=None)
            .execution_options(synchronize_session=False)
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
