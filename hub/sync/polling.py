"""Polling fallback of the down-flow: ask the national portal for dossiers filed there for the agencies hub routes
(TraCuuHoSoMoi), and take in what a lost push did not bring. A dossier already known unchanged creates nothing,
so a push and a poll of the same dossier lead to one delivery.

What is asked for is a window, not the portal's whole history (every five minutes, a province's every dossier
ever filed online): those filed in the last `HUB_PORTAL_POLL_DAYS` — a lost push of a new dossier, and a change
at the portal to a recent one whose push was lost — and, when hub has not heard from the portal for longer than
that (hub stopped, the portal down), back to its last answered poll of the route, so no outage leaves a gap.
`hub poll --since DATE` asks further back by hand. The dossiers the portal lists that hub holds unchanged are
told apart with one query a few hundred at a time, with no transaction each."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.adapters.errors import PeerError
from hub.domain.dates import format_national, utcnow
from hub.domain.errors import DomainError
from hub.services.schemas import DossierIn
from hub.settings import ClientSystem
from hub.store.models import Dossier, Flag

log = logging.getLogger("hub.polling")

POLLER = ClientSystem(name="dvcqg-poll", api_key=SecretStr("-"), agencies=["*"], roles=["national_portal"])
# a poll's window starts this long before the last one's start: a dossier filed a moment before that poll and
# listed by the portal a moment after it, or the two clocks apart
OVERLAP = timedelta(minutes=10)
CHUNK = 500


def _mark(pattern: str) -> str:
    return f"poll_portal:{pattern}"[:64]


def last_polled(sessions: Any, pattern: str) -> datetime | None:
    """When the route's last poll the portal answered started (UTC), if any."""
    with sessions() as s:
        flag = s.get(Flag, _mark(pattern))
    return datetime.fromisoformat(flag.value) if flag is not None else None


def _note_polled(sessions: Any, pattern: str, started: datetime) -> None:
    for _ in range(2):  # another process noting the same route first: then update its note
        try:
            with sessions.begin() as s:
                flag = s.get(Flag, _mark(pattern))
                if flag is None:
                    s.add(Flag(name=_mark(pattern), value=started.isoformat(), updated_by="poll", updated_at=utcnow()))
                elif datetime.fromisoformat(flag.value) < started:
                    flag.value, flag.updated_at = started.isoformat(), utcnow()
            return
        except IntegrityError:
            continue


def poll_portal(runtime: Any, *, since: datetime | None = None) -> dict[str, int]:
    """One polling round over the routing table's agencies, asking for dossiers filed since `since` (UTC), or since
    the window above. Returns counts (seen, new events, unchanged, invalid, errors)."""
    counts = {"seen": 0, "new_events": 0, "unchanged": 0, "invalid": 0, "errors": 0}
    started = utcnow()
    window = started - timedelta(days=runtime.settings.portal_poll_days)
    pace = runtime.portal_pace()  # the portal's agreed rate (HUB_PEER_RATE_LIMITS), shared with the deliveries
    for route in runtime.routes.all():
        pattern = route["agency_pattern"]
        if since is None:
            last = last_polled(runtime.sessions, pattern)
            start = window if last is None else min(window, last - OVERLAP)
        else:
            start = since
        if pace is not None:
            pace()
        try:
            reply = runtime.portal.call(
                "TraCuuHoSoMoi",
                {"MaCoQuan": pattern, "TuNgay": format_national(start)},
                idempotency_key=None,
                correlation_id="poll",
                on_exchange=runtime.record_exchange,
            )
        except PeerError as exc:
            counts["errors"] += 1
            log.warning("poll: portal did not answer", extra={"error_code": exc.code})
            continue
        items = reply.get("data")
        listed: list[DossierIn] = []
        for item in items if isinstance(items, list) else []:
            counts["seen"] += 1
            try:
                listed.append(DossierIn.model_validate(item))
            except (ValidationError, DomainError) as exc:
                counts["invalid"] += 1
                log.warning("poll: dossier not taken in", extra={"reason": exc.__class__.__name__})
        for i in range(0, len(listed), CHUNK):
            _take_in(runtime, listed[i : i + CHUNK], counts)
        _note_polled(runtime.sessions, pattern, started)
    return counts


def _take_in(runtime: Any, dossiers: list[DossierIn], counts: dict[str, int]) -> None:
    """Push each listed dossier hub does not hold as the portal has it; those it holds unchanged are counted."""
    national = [d.national() for d in dossiers]
    with runtime.sessions() as s:
        held = {
            code: (status, data)
            for code, status, data in s.execute(
                select(Dossier.code, Dossier.status, Dossier.data).where(
                    Dossier.code.in_([n["MaHoSo"] for n in national])
                )
            )
        }
    for dossier, data in zip(dossiers, national, strict=True):
        if held.get(data["MaHoSo"]) == (data["TrangThaiHoSo"], data):
            counts["unchanged"] += 1  # as the push path would find it: nothing new, no event
            continue
        try:
            answer = runtime.dossiers.push_from_portal(POLLER, dossier, idempotency_key=None, correlation_id="poll")
        except DomainError as exc:
            counts["invalid"] += 1
            log.warning("poll: dossier not taken in", extra={"reason": exc.__class__.__name__})
            continue
        counts["unchanged" if answer.body.get("unchanged") else "new_events"] += 1
