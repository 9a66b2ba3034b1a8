"""Claiming due outbox rows under the per-dossier order rule, and recording the outcome of deliveries.

Order rule: a row is deliverable only when every earlier row (lower seq) of the same dossier to the same
destination is delivered. A dead letter therefore holds back the dossier's later events until it is replayed;
other dossiers flow freely. Claims are leases: a worker that dies leaves rows whose lease expires and are
claimed again (delivery is idempotent at the peer by the row's idempotency key).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from hub.domain.dates import utcnow
from hub.store.models import Exchange, OutboxMessage

PENDING, IN_FLIGHT, DELIVERED, DEAD = "pending", "in_flight", "delivered", "dead"


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


def _deliverable(now: datetime) -> Any:
    earlier = aliased(OutboxMessage)
    blocked = exists().where(
        earlier.dossier_id == OutboxMessage.dossier_id,
        earlier.destination == OutboxMessage.destination,
        earlier.seq < OutboxMessage.seq,
        earlier.state != DELIVERED,
    )
    due = or_(
        and_(OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.state == IN_FLIGHT, OutboxMessage.lease_until < now),
    )
    return and_(due, ~blocked)


def claim(
    session: Session, limit: int, lease_seconds: float, destinations: Sequence[str] | None = None
) -> list[Claimed]:
    """Lease up to `limit` deliverable rows (SKIP LOCKED on PostgreSQL; SQLite serializes writers)."""
    now = utcnow()
    cond = _deliverable(now)
    if destinations:
        cond = and_(cond, OutboxMessage.destination.in_(destinations))
    rows = session.scalars(
        select(OutboxMessage)
        .where(cond)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=OutboxMessage)
    ).all()
    claimed = []
    lease_until = now + timedelta(seconds=lease_seconds)
    for row in rows:
        row.state = IN_FLIGHT
        row.lease_until = lease_until
        row.claim_token = str(uuid.uuid4())
        claimed.append(
            Claimed(
                row.id,
                row.claim_token,
                row.destination,
                row.operation,
                row.payload,
                row.idempotency_key,
                row.correlation_id,
                row.attempts,
                row.created_at,
            )
        )
    return claimed


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed row. kind: delivered | retry | dead | released (not tried)."""

    claimed: Claimed
    kind: str
    error_code: str | None = None
    error: str | None = None
    reply: Any = None
    retry_at: datetime | None = None


RECORD_OUTCOME = update(OutboxMessage.__table__).where(  # type: ignore[arg-type]
    OutboxMessage.__table__.c.id == bindparam("b_id"), OutboxMessage.__table__.c.claim_token == bindparam("b_token")
)


INSERT_EXCHANGE = insert(Exchange.metadata.tables[Exchange.__tablename__])  # Core: no ORM bulk-insert machinery


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


def replay(
    session: Session,
    ids: Sequence[int] | None = None,
    *,
    destination: str | None = None,
    dossier_ids: Sequence[int] | None = None,
) -> int:
    """Put dead letters back in line (attempts reset, due now). Order is kept by the claim rule."""
    cond = [OutboxMessage.state == DEAD]
    if ids is not None:
        cond.append(OutboxMessage.id.in_(ids))
    if destination is not None:
        cond.append(OutboxMessage.destination == destination)
    if dossier_ids is not None:
        cond.append(OutboxMessage.dossier_id.in_(dossier_ids))
    result = session.execute(
        update(OutboxMessage)
        .where(*cond)
        .values(state=PENDING, attempts=0, next_attempt_at=utcnow(), claim_token=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all()
    return {state: int(n) for state, n in rows}
