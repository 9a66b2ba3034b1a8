"""Claiming due outbox rows under the per-dossier order rule, and recording the outcome of deliveries.

Order rule: a row is deliverable only when every earlier row (lower seq) of the same dossier to the same
destination is delivered (or set aside by an operator). A dead letter therefore holds back the dossier's later
events until it is replayed or set aside; other dossiers flow freely. Citizens' notices (email, SMS) are the
exception (ADR 0045): each is a message of its own, so a dead one — a text the gateway refuses for good, a
brandname template not registered for that kind — does not hold back the dossier's later notices on its channel
(one still waiting or in flight does: they go in order). Claims are leases: a worker that dies leaves
rows whose lease expires and are claimed again (delivery is idempotent at the peer by the row's idempotency key).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, func, insert, literal_column, or_, select, update
from sqlalchemy.orm import Session

from hub.adapters.exchange import ExchangeRecord
from hub.domain.dates import utcnow
from hub.store.models import Exchange, OutboxMessage, table

PENDING, IN_FLIGHT, DELIVERED, DEAD = "pending", "in_flight", "delivered", "dead"
SET_ASIDE = "set_aside"  # a dead letter an operator decided not to deliver: done with, for the order rule
STATES = (PENDING, IN_FLIGHT, DELIVERED, DEAD, SET_ASIDE)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    claim_token: str
    destination: str
    operation: str
    payload: dict[str, Any]
    idempotency_key: str
    correlation_id: str
    attempts: int
    created_at: datetime


_OUTBOX = table(OutboxMessage)
_EARLIER = _OUTBOX.alias("earlier")
# Literal states (not bound parameters): the planner matches them to the partial indexes' predicates.
_PENDING: Any = literal_column(f"'{PENDING}'")
_IN_FLIGHT: Any = literal_column(f"'{IN_FLIGHT}'")
_DELIVERED: Any = literal_column(f"'{DELIVERED}'")
_SET_ASIDE: Any = literal_column(f"'{SET_ASIDE}'")
_DEAD: Any = literal_column(f"'{DEAD}'")
# the destinations whose dead letters do not hold back later messages (hub.services.notifications' channels)
NOTICES = ("email", "sms")
_NOTICES: Any = [literal_column(f"'{d}'") for d in NOTICES]


def holds_back(state: str, destination: str) -> bool:
    """Whether a row in `state` holds back its dossier's later rows to `destination` (the claim's rule, below)."""
    return state not in (DELIVERED, SET_ASIDE) and not (state == DEAD and destination in NOTICES)


# The rows a worker may take: pending and due, in a destination it is delivering to, and first in line for their
# dossier and destination (event n+1 never before n is acknowledged). Walked in due order on ix_outbox_pending_due,
# each candidate's line probed on ix_outbox_undelivered: the cost is the batch's, not the backlog's.
_CLAIMABLE = (
    select(_OUTBOX.c.id)
    .where(
        _OUTBOX.c.state == _PENDING,
        _OUTBOX.c.next_attempt_at <= bindparam("now"),
        _OUTBOX.c.destination.in_(bindparam("destinations", expanding=True)),
        ~exists().where(
            _EARLIER.c.dossier_id == _OUTBOX.c.dossier_id,
            _EARLIER.c.destination == _OUTBOX.c.destination,
            _EARLIER.c.seq < _OUTBOX.c.seq,
            _EARLIER.c.state != _DELIVERED,  # as written: the term of ix_outbox_undelivered's predicate
            _EARLIER.c.state != _SET_ASIDE,
            or_(_EARLIER.c.state != _DEAD, _EARLIER.c.destination.not_in(_NOTICES)),
        ),
    )
    .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=_OUTBOX)
)
# One statement, built once: take the rows (SKIP LOCKED on PostgreSQL, so workers never wait on each other's
# claims; SQLite serializes writers), lease them, and return what delivering them needs.
CLAIM = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(_CLAIMABLE.scalar_subquery()))
    .values(state=IN_FLIGHT, lease_until=bindparam("lease_until"), claim_token=bindparam("token"))
    .returning(
        _OUTBOX.c.id,
        _OUTBOX.c.destination,
        _OUTBOX.c.operation,
        _OUTBOX.c.payload,
        _OUTBOX.c.idempotency_key,
        _OUTBOX.c.correlation_id,
        _OUTBOX.c.attempts,
        _OUTBOX.c.created_at,
        _OUTBOX.c.next_attempt_at,
    )
)
# Rows whose worker died (or stalled past its lease) go back in line. Their old claim token is cleared, so that
# worker, if it comes back, records nothing (compare-and-set on the token).
RELEASE_EXPIRED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.state == _IN_FLIGHT, _OUTBOX.c.lease_until < bindparam("now"))
    .values(state=PENDING, claim_token=None, lease_until=None)
)


def release_expired(session: Session) -> int:
    """Put rows whose lease expired back in line; returns how many."""
    return int(session.connection().execute(RELEASE_EXPIRED, {"now": utcnow()}).rowcount)


# Rows another transaction holds (the worker recording their outcomes at this moment) are skipped, not waited
# for: a renewal never queues behind a record, so the two can never lock rows crosswise (a deadlock on PostgreSQL).
RENEW = (
    update(_OUTBOX)
    .where(
        _OUTBOX.c.id.in_(
            select(_OUTBOX.c.id)
            .where(_OUTBOX.c.state == _IN_FLIGHT, _OUTBOX.c.claim_token.in_(bindparam("tokens", expanding=True)))
            .with_for_update(skip_locked=True)
        )
    )
    .values(lease_until=bindparam("until"))
)


def renew(session: Session, tokens: Sequence[str], lease_seconds: float) -> int:
    """Extend the leases of the batches a live worker is still delivering; returns the rows renewed."""
    until = utcnow() + timedelta(seconds=lease_seconds)
    return int(session.connection().execute(RENEW, {"tokens": list(tokens), "until": until}).rowcount)


RELEASE_ALL = (
    update(_OUTBOX).where(_OUTBOX.c.state == _IN_FLIGHT).values(state=PENDING, claim_token=None, lease_until=None)
)


def release_all(session: Session) -> int:
    """Put every leased row back in line, leases running or not: only for a process that knows no other can hold
    one (`hub.sync.embedded.Presence`). A late outcome from the old claim changes nothing (its token is gone)."""
    return int(session.connection().execute(RELEASE_ALL).rowcount)


def claim(
    session: Session, limit: int, lease_seconds: float, destinations: Sequence[str], *, token: str | None = None
) -> list[Claimed]:
    """Lease up to `limit` deliverable rows for `destinations`, oldest due first, in one round trip. The batch
    shares one claim token (`token`, to add rows to a batch claimed by an earlier call): recording an outcome is a
    compare-and-set on it, so a worker whose lease expired (and whose rows another worker took) changes nothing."""
    if not destinations or limit <= 0:
        return []
    now = utcnow()
    token = token or str(uuid.uuid4())
    returned = (
        session.connection()
        .execute(
            CLAIM,
            {
                "now": now,
                "destinations": list(destinations),
                "limit": limit,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "token": token,
            },
        )
        .all()
    )
    rows = sorted(returned, key=lambda r: (r.next_attempt_at, r.id))
    return [
        Claimed(
            r.id,
            token,
            r.destination,
            r.operation,
            r.payload,
            r.idempotency_key,
            r.correlation_id,
            r.attempts,
            r.created_at,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed row. kind: delivered | retry | dead | released (not tried)."""

    claimed: Claimed
    kind: str
    error_code: str | None = None
    error: str | None = None
    reply: Any = None
    retry_at: datetime | None = None


RECORD_OUTCOME = update(_OUTBOX).where(_OUTBOX.c.id == bindparam("b_id"), _OUTBOX.c.claim_token == bindparam("b_token"))


def exchange_row(rec: ExchangeRecord, outbox_id: int | None = None) -> dict[str, Any]:
    """The append-only record of one exchange, as an adapter reported it (a row for `write_exchanges`)."""
    return {
        "at": utcnow(),
        "peer": rec.peer,
        "operation": rec.operation,
        "correlation_id": rec.correlation_id,
        "outbox_id": outbox_id,
        "request_digest": rec.request_digest,
        "response_digest": rec.response_digest,
        "duration_ms": rec.duration_ms,
        "outcome": rec.outcome,
        "error_code": rec.error_code,
    }


INSERT_EXCHANGE = insert(table(Exchange))  # Core: no ORM bulk-insert machinery


def write_exchanges(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Append exchange records inside the caller's transaction: one executemany, no ORM unit of work."""
    if rows:
        session.connection().execute(INSERT_EXCHANGE, list(rows))


def record(session: Session, outcomes: Sequence[Outcome], exchanges: Sequence[dict[str, Any]]) -> int:
    """Write the outcomes of a batch (compare-and-set on the claim token) and the exchange records: one
    executemany per kind of outcome, not one round trip per row. Returns how many rows were still ours."""
    now = utcnow()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        c = o.claimed
        values: dict[str, Any] = {"b_id": c.id, "b_token": c.claim_token, "claim_token": None, "lease_until": None}
        if o.kind == "delivered":
            values |= {
                "state": DELIVERED,
                "delivered_at": now,
                "attempts": c.attempts + 1,
                "peer_reply": o.reply,
                "last_error_code": None,
                "last_error": None,
            }
        elif o.kind == "retry":
            values |= {
                "state": PENDING,
                "attempts": c.attempts + 1,
                "next_attempt_at": o.retry_at,
                "last_error_code": o.error_code,
                "last_error": o.error,
                "peer_reply": o.reply,
            }
        elif o.kind == "dead":
            values |= {
                "state": DEAD,
                "attempts": c.attempts + 1,
                "last_error_code": o.error_code,
                "last_error": o.error,
                "peer_reply": o.reply,
            }
        else:  # released untried: the peer is down, keep the attempt count
            values |= {"state": PENDING, "next_attempt_at": o.retry_at}
        by_kind.setdefault(o.kind, []).append(values)
    mine = 0
    for rows in by_kind.values():
        result = session.connection().execute(RECORD_OUTCOME, rows)
        mine += result.rowcount
    write_exchanges(session, exchanges)
    return mine


def _chosen(
    ids: Sequence[int] | None, destination: str | None, dossier_ids: Sequence[int] | None
) -> list[ColumnElement[bool]]:
    """An operator's choice of rows: by id, destination and/or dossier (each None: any)."""
    cond: list[ColumnElement[bool]] = []
    if ids is not None:
        cond.append(OutboxMessage.id.in_(ids))
    if destination is not None:
        cond.append(OutboxMessage.destination == destination)
    if dossier_ids is not None:
        cond.append(OutboxMessage.dossier_id.in_(dossier_ids))
    return cond


def replay(
    session: Session,
    ids: Sequence[int] | None = None,
    *,
    destination: str | None = None,
    dossier_ids: Sequence[int] | None = None,
) -> int:
    """Put dead letters back in line (attempts reset, due now). Order is kept by the claim rule."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.state == DEAD, *_chosen(ids, destination, dossier_ids))
        .values(state=PENDING, attempts=0, next_attempt_at=utcnow(), claim_token=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def set_aside(
    session: Session,
    ids: Sequence[int] | None = None,
    *,
    dossier_ids: Sequence[int] | None = None,
    by: str,
    reason: str,
) -> int:
    """Dead letters an operator decided not to deliver: never sent, and no longer holding back their dossier's
    later messages (which are then delivered in their order). Final: a row set aside is not replayed — its
    dossier's later messages may have gone since. Returns how many rows were set aside."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.state == DEAD, *_chosen(ids, None, dossier_ids))
        .values(state=SET_ASIDE, set_aside_at=utcnow(), set_aside_by=by[:64], set_aside_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def set_aside_note(m: Any) -> dict[str, Any]:
    """Who set a dead letter aside, when and why (for the API's, the CLI's and the console's views of a row: an
    OutboxMessage or a row read with its set_aside_* columns)."""
    at = m.set_aside_at.isoformat() if m.set_aside_at else None
    return {"set_aside_at": at, "set_aside_by": m.set_aside_by, "set_aside_reason": m.set_aside_reason}


def retry_now(
    session: Session,
    ids: Sequence[int] | None = None,
    *,
    destination: str | None = None,
    dossier_ids: Sequence[int] | None = None,
) -> int:
    """Make messages waiting out their backoff due now (attempts kept): once a peer's problem is fixed, an operator
    need not wait up to `relay_backoff_cap`. Order is kept by the claim rule (a dossier's next event still waits
    for the one before it)."""
    now = utcnow()
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at > now, *_chosen(ids, destination, dossier_ids)
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all()
    return {state: int(n) for state, n in rows}
