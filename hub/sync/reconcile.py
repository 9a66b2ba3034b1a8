"""Reconciliation with the national portal: compare hub's view of every open up-flow dossier with the portal's
(TraCuuHoSo), report drift per dossier, and repair what is safe.

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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.errors import PeerError
from hub.adapters.national_portal import NationalPortal
from hub.domain.dates import utcnow
from hub.domain.status import DossierStatus
from hub.services.dossiers import NATIONAL_PORTAL
from hub.store.models import Dossier, OutboxMessage, StatusEvent
from hub.sync import outbox

TERMINAL = {int(DossierStatus.REFUSED), int(DossierStatus.WITHDRAWN), int(DossierStatus.STOPPED)}


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
) -> ReconcileResult:
    result = ReconcileResult()
    with sessions() as s:
        q = select(Dossier.id, Dossier.code, Dossier.status).where(Dossier.status.not_in(TERMINAL)).order_by(Dossier.id)
        open_dossiers = s.execute(q).all()
    total = len(open_dossiers)
    for i, (dossier_id, code, status) in enumerate(open_dossiers, start=1):
        if on_progress is not None:
            on_progress(i, total)
        with sessions() as s:
            rows = s.execute(
                select(OutboxMessage.seq, OutboxMessage.state, StatusEvent.status)
                .join(StatusEvent, StatusEvent.event_id == OutboxMessage.event_id)
                .where(OutboxMessage.dossier_id == dossier_id, OutboxMessage.destination == NATIONAL_PORTAL)
                .order_by(OutboxMessage.seq)
            ).all()
        if not rows:
            continue  # a down-flow dossier: the portal is its source, not its destination
        result.checked += 1
        if any(r.state != outbox.DELIVERED for r in rows):
            result.in_progress += 1
            continue
        try:
            seen = portal.look_up(code, correlation_id=f"reconcile-{code}")
        except PeerError:
            result.errors += 1
            continue
        if seen is None:
            drift = Drift(code, "missing_at_portal", status, None, note="the portal does not know the dossier")
            if repair:
                drift.repaired = _requeue(sessions, dossier_id, after_seq=0)
            result.drift.append(drift)
            continue
        portal_status = int(seen.get("TrangThaiHoSo", 0))
        if portal_status == status:
            result.in_sync += 1
            continue
        history = [int(r.status) for r in rows]
        if portal_status in history[:-1]:
            # the portal stopped at an earlier step: everything after its last occurrence goes again
            last = max(i for i, st in enumerate(history[:-1]) if st == portal_status)
            drift = Drift(
                code, "status_behind", status, portal_status, note=f"portal at step {last + 1} of {len(history)}"
            )
            if repair:
                drift.repaired = _requeue(sessions, dossier_id, after_seq=int(rows[last].seq))
            result.drift.append(drift)
        else:
            result.drift.append(
                Drift(code, "status_ahead", status, portal_status, note="changed at the portal: check by hand")
            )
    return result


def unknown_to_hub(sessions: sessionmaker[Session], portal: NationalPortal, agency_patterns: list[str]) -> list[Drift]:
    """Dossiers the portal lists for the routed agencies (TraCuuHoSoMoi) that hub does not know."""
    found: list[Drift] = []
    for pattern in agency_patterns:
        try:
            reply = portal.call(
                "TraCuuHoSoMoi", {"MaCoQuan": pattern, "TuNgay": "00000000000000"}, idempotency_key=None,
                correlation_id="reconcile",
            )  # fmt: skip
        except PeerError:
            continue
        items = reply.get("data")
        codes = [str(i.get("MaHoSo")) for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        if not codes:
            continue
        with sessions() as s:
            known = set(s.scalars(select(Dossier.code).where(Dossier.code.in_(codes))))
        for item in items if isinstance(items, list) else []:
            code = str(item.get("MaHoSo"))
            if code not in known:
                found.append(
                    Drift(code, "unknown_to_hub", 0, int(item.get("TrangThaiHoSo", 0)), note="not taken in yet")
                )
    return found


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
