"""Operator queries and repairs of outbox deliveries (used by the CLI and, later, the console)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, literal, select, text, union_all
from sqlalchemy.orm import Session

from hub.domain.dates import utcnow
from hub.services import actions
from hub.store.models import Dossier, JobRun, OutboxMessage
from hub.sync import outbox

if TYPE_CHECKING:
    from hub.metrics import HistoryCounts

log = logging.getLogger("hub.jobs")


# the scheduled jobs, by the names of their Runtime methods, their Celery tasks (hub.<name>) and their recorded runs
JOB_NAMES = (
    "poll_portal",
    "check_payments",
    "reconcile",
    "reconcile_payments",
    "poll_edoc_status",
    "anchor_audit_log",
    "remove_personal_data",
)

# counts in a job's result that say a peer did not answer (errors) or was not asked once found down (not_asked):
# the run did what it could but is recorded as an error, not a success (the portal down for an hour is a poll
# that failed twelve times, for the console, hub_scheduled_job_last_success_age_seconds and its alert)
UNANSWERED = ("errors", "not_asked")


def first_run(session: Session) -> datetime | None:
    """When the first scheduled job on this database started: the workers have run the schedule since then, so a
    scheduled job with no run of its own since is not being run (a job a release added that no worker knows yet, a
    job whose worker skips it) — stale once three of its intervals have gone by, as one that fails."""
    first: datetime | None = session.scalar(select(func.min(JobRun.started_at)))
    return first


def intervals(settings: Any) -> dict[str, float]:
    """Each scheduled job's interval in seconds (0: not scheduled), by its name (JOB_NAMES): what the embedded
    worker and the Celery workers' ticker run, and what the metrics judge a job's last success against."""
    return {
        "poll_portal": settings.portal_poll_interval,
        "check_payments": settings.payment_check_interval,
        "reconcile": settings.reconcile_interval,
        "reconcile_payments": settings.payment_reconcile_interval,
        "anchor_audit_log": settings.audit_anchor_interval,
        "poll_edoc_status": settings.edoc_status_interval,
        "remove_personal_data": settings.personal_data_retention_interval,
    }


STALE_AFTER = 3  # intervals without a success after which a scheduled job is stale (as the alert judges it)


def scheduled(session: Session, settings: Any) -> list[dict[str, Any]]:
    """Each scheduled job (JOB_NAMES) with its interval in seconds (0: not scheduled; the payments' statement is
    reconciled once a day from `daily_hour`), its last run — finished_at, outcome, detail — and, when that run
    failed, when it last succeeded: what the console's sync-jobs page and `hub jobs scheduled` show. `stale`: a
    scheduled job that has not succeeded for STALE_AFTER of its intervals (the alert HubScheduledJobStale's rule):
    failing, or not run at all — no worker running it, or maintenance mode."""
    every = intervals(settings)
    now = utcnow()
    found = []
    scheduler_since = first_run(session)
    for name in JOB_NAMES:
        run = last_run(session, name)
        failing = run is not None and run.outcome != "ok"
        ok = last_run(session, name, ok_only=True) if failing else run
        # never succeeded: since its first run; never run, while other jobs have: since the first run of any
        since = ok.finished_at if ok is not None else (run.started_at if run is not None else scheduler_since)
        stale = every[name] > 0 and since is not None and (now - since).total_seconds() > STALE_AFTER * every[name]
        found.append(
            {
                "name": name,
                "interval_s": every[name],
                "daily_hour": settings.payment_reconcile_hour if name == "reconcile_payments" else None,
                "finished_at": run.finished_at.isoformat(timespec="seconds") if run else None,
                "outcome": run.outcome if run else None,
                "detail": run.detail if run else None,
                "failing": failing,
                "last_ok_at": ok.finished_at.isoformat(timespec="seconds") if ok else None,
                "stale": stale,
            }
        )
    return found


def schedule_words(job: Mapping[str, Any], t: Mapping[str, str]) -> str:
    """How often a scheduled job (a row of `scheduled`) runs, in the console's words `t`: every N seconds, minutes,
    hours or days, daily from an hour, or not on a schedule (interval 0)."""
    seconds = float(job["interval_s"])
    if seconds <= 0:
        return t["not_scheduled"]
    if job.get("daily_hour") is not None:
        return t["daily_from"].format(hour=job["daily_hour"])
    whole = round(seconds)
    n: int | str = f"{seconds:g}"
    unit = "second"
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if whole >= size and whole % size == 0 and whole == seconds:
            n, unit = whole // size, name
            break
    if n == 1:
        return t["every_one"].format(unit=t["unit:" + unit])
    return t["every"].format(n=n, unit=t["units:" + unit])


def _row(m: OutboxMessage, code: str) -> dict[str, Any]:
    return {
        "id": m.id,
        "MaHoSo": code,
        "seq": m.seq,
        "event_id": m.event_id,
        "destination": m.destination,
        "operation": m.operation,
        "state": m.state,
        "attempts": m.attempts,
        "next_attempt_at": m.next_attempt_at.isoformat(),
        "created_at": m.created_at.isoformat(),
        "delivered_at": m.delivered_at.isoformat() if m.delivered_at else None,
        "last_error_code": m.last_error_code,
        "last_error": m.last_error,
        "correlation_id": m.correlation_id,
        **(outbox.set_aside_note(m) if m.state == outbox.SET_ASIDE else {}),
    }


def list_jobs(
    session: Session, *, state: str | None = None, dossier: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    q = select(OutboxMessage, Dossier.code).join(Dossier, Dossier.id == OutboxMessage.dossier_id)
    if state:
        q = q.where(OutboxMessage.state == state)
    if dossier:
        q = q.where(Dossier.code == dossier)
    q = q.order_by(OutboxMessage.id.desc()).limit(limit)
    return [_row(m, code) for m, code in session.execute(q).all()]


def totals(session: Session) -> dict[str, int]:
    return outbox.counts(session)


MAX_ID = 2**63 - 1  # the largest key a BIGINT (or SQLite INTEGER) holds


def show_job(session: Session, job_id: int) -> dict[str, Any] | None:
    if not 0 < job_id <= MAX_ID:
        return None
    found = session.execute(
        select(OutboxMessage, Dossier.code)
        .join(Dossier, Dossier.id == OutboxMessage.dossier_id)
        .where(OutboxMessage.id == job_id)
    ).first()
    if found is None:
        return None
    m, code = found
    return {
        **_row(m, code),
        "payload": m.payload,
        "peer_reply": m.peer_reply,
        "idempotency_key": m.idempotency_key,
    }


def _chosen(
    session: Session, ids: Sequence[int] | None, dossier: str | None, state: str
) -> tuple[list[int] | None, list[int] | None, list[int]]:
    """(the ids that can name a row, the dossier's ids, the ids given that are not in `state`)."""
    elsewhere: list[int] = []
    possible: list[int] | None = None
    if ids:
        possible = [i for i in ids if 0 < i <= MAX_ID]  # one past a 64-bit key names no row (and no driver takes it)
        found = dict(
            session.execute(select(OutboxMessage.id, OutboxMessage.state).where(OutboxMessage.id.in_(possible))).all()
        )
        elsewhere = [i for i in ids if found.get(i) != state]
    dossier_ids = list(session.scalars(select(Dossier.id).where(Dossier.code == dossier))) if dossier else None
    return possible, dossier_ids, elsewhere


def _target(ids: Sequence[int] | None, **named: Any) -> dict[str, Any]:
    """What an operator's action named, as its record keeps it (the rows' ids, a MaHoSo, a peer, "all")."""
    return {**({"ids": list(ids)} if ids else {}), **{k: v for k, v in named.items() if v}}


def replay(
    session: Session,
    *,
    by: str,
    ids: Sequence[int] | None = None,
    dossier: str | None = None,
    all_dead: bool = False,
) -> dict[str, Any]:
    """Replay dead letters. Ids that are not dead letters are reported, not touched. Recorded as `by`'s action."""
    target = _target(ids, dossier=dossier, all_dead=all_dead)
    ids, dossier_ids, not_dead = _chosen(session, ids, dossier, outbox.DEAD)
    n = outbox.replay(session, ids=ids or None, dossier_ids=dossier_ids) if ids or dossier_ids or all_dead else 0
    actions.record(session, by, "replay", target, {"replayed": n, "not_dead": not_dead})
    return {"replayed": n, "not_dead": not_dead}


MAX_REASON = 500


def clean_reason(reason: str) -> str:
    """An operator's reason for setting dead letters aside, as it is kept (runs of white space made one space);
    ValueError when there is none or it is longer than MAX_REASON characters."""
    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("a reason is required to set a dead letter aside")
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason is longer than {MAX_REASON} characters")
    return reason


def set_aside(
    session: Session, *, ids: Sequence[int] | None = None, dossier: str | None = None, by: str, reason: str
) -> dict[str, Any]:
    """Set dead letters aside: an operator decided they are not to be delivered (the portal already has what they
    say, or they are wrong and a corrected message follows) — who, when and why are kept with them, and their
    dossier's later messages flow again, in order. `reason` is required. Ids that are not dead letters are
    reported, not touched."""
    reason = clean_reason(reason)
    target = _target(ids, dossier=dossier, reason=reason)
    ids, dossier_ids, not_dead = _chosen(session, ids, dossier, outbox.DEAD)
    n = (
        outbox.set_aside(session, ids=ids or None, dossier_ids=dossier_ids, by=by, reason=reason)
        if ids or dossier_ids
        else 0
    )
    actions.record(session, by, "set_aside", target, {"set_aside": n, "not_dead": not_dead})
    if n:
        log.warning(
            "dead letters set aside",
            extra={"rows": n, "ids": ids, "MaHoSo": dossier, "by": by, "reason": reason},
        )
    return {"set_aside": n, "not_dead": not_dead}


def retry(
    session: Session,
    *,
    by: str,
    ids: Sequence[int] | None = None,
    dossier: str | None = None,
    destination: str | None = None,
    all_waiting: bool = False,
) -> dict[str, Any]:
    """Deliver messages waiting out their backoff now. Ids that are not waiting (delivered, dead, in flight) are
    reported, not touched. Recorded as `by`'s action."""
    target = _target(ids, dossier=dossier, destination=destination, all_waiting=all_waiting)
    ids, dossier_ids, not_waiting = _chosen(session, ids, dossier, outbox.PENDING)
    n = 0
    if ids or dossier_ids or destination or all_waiting:
        n = outbox.retry_now(session, ids=ids or None, destination=destination, dossier_ids=dossier_ids)
    actions.record(session, by, "retry", target, {"retried": n, "not_waiting": not_waiting})
    return {"retried": n, "not_waiting": not_waiting}


def _purgeable(older_than_days: float) -> Any:
    from datetime import timedelta

    cutoff = utcnow() - timedelta(days=older_than_days)
    return (OutboxMessage.state == outbox.DELIVERED) & (OutboxMessage.created_at < cutoff)


def purgeable(session: Session, *, older_than_days: float) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.count()).select_from(OutboxMessage).where(_purgeable(older_than_days))) or 0)


def purge(session: Session, *, older_than_days: float, batch: int | None = None) -> dict[str, int]:
    """Delete delivered outbox rows older than the given age (at most `batch` per call: short transactions on a
    busy table). Status events and the exchange record are kept: they are the history. Dead letters are never
    purged: removing one would let the events behind it overtake it; they are replayed instead."""
    from sqlalchemy import delete

    cond = _purgeable(older_than_days)
    if batch is not None:
        ids = select(OutboxMessage.id).where(cond).order_by(OutboxMessage.id).limit(batch).scalar_subquery()
        cond = OutboxMessage.id.in_(ids)
    result = session.execute(delete(OutboxMessage).where(cond).execution_options(synchronize_session=False))
    return {"purged": int(result.rowcount)}  # type: ignore[attr-defined]


def purge_history(session: Session, *, older_than_days: float, batch: int = 5000) -> dict[str, int]:
    """Delete exchange records, scheduled-job runs and the answers remembered for Idempotency-Keys older than the
    given age (at most `batch` exchanges and keys per call). Records of exchanges about messages still waiting or
    dead are kept: an operator needs them. The access log of personal data and the payment callbacks are never
    purged here: they are legal records."""
    from datetime import timedelta

    from sqlalchemy import delete

    from hub.store.models import Exchange, IdempotencyRecord, JobRun

    cutoff = utcnow() - timedelta(days=older_than_days)

    def oldest(key: Any, *where: Any) -> int:
        """Delete the `batch` oldest rows (by `key`, their primary key) that match; how many went."""
        ids = [int(i) for i in session.scalars(select(key).where(*where).order_by(key).limit(batch))]
        if not ids:
            return 0
        gone = session.execute(delete(key.table).where(key.in_(ids)).execution_options(synchronize_session=False))
        return int(gone.rowcount)  # type: ignore[attr-defined]

    waiting = select(OutboxMessage.id).where(OutboxMessage.state != outbox.DELIVERED)
    exchanges = oldest(
        Exchange.id, Exchange.at < cutoff, (Exchange.outbox_id.is_(None)) | (Exchange.outbox_id.not_in(waiting))
    )
    runs = session.execute(
        delete(JobRun).where(JobRun.finished_at < cutoff).execution_options(synchronize_session=False)
    )
    # answers remembered for clients' Idempotency-Keys: a client re-sends within minutes or hours, not months;
    # each holds the whole answer, one per request
    forgotten = oldest(IdempotencyRecord.id, IdempotencyRecord.created_at < cutoff)
    return {"exchanges": exchanges, "job_runs": int(runs.rowcount), "idempotency_keys": forgotten}  # type: ignore[attr-defined]


KNOWN_PEERS = ("national_portal", "one_stop", "population", "payment_dvc", "document_exchange")


def peers_status(
    session: Session, history: HistoryCounts | None = None, rate_limits: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Per peer: backlog, dead letters, oldest undelivered age, last success and last failure, and the rate its
    deliveries are held to (`rate_limits`: HUB_PEER_RATE_LIMITS; a backlog that drains slowly may be that rate) with
    the seconds its backlog takes at it (`drain_s`).
    `history`: where the delivered rows (a month of a province's: millions, an index-only count of 0.25 s a million)
    are counted at most once a minute — the console's overview; `hub peers status` counts them now."""
    from sqlalchemy import func

    now = utcnow()
    peers: dict[str, dict[str, Any]] = {}

    def peer(name: str) -> dict[str, Any]:
        return peers.setdefault(
            name,
            {
                "peer": name,
                "pending": 0,
                "in_flight": 0,
                "dead": 0,
                "delivered": 0,
                "set_aside": 0,
                "oldest_undelivered_s": None,
                "last_ok": None,
                "last_failure": None,
                "last_error_code": None,
                "rate_limit": (rate_limits or {}).get(name),  # messages a second, None: not limited
                "drain_s": None,  # seconds the backlog takes at that rate (None: no limit, or no backlog)
            },
        )

    # one index-only scan per state on ix_outbox_state_destination (a GROUP BY over all states reads the table)
    for state in outbox.STATES:
        if state == outbox.DELIVERED and history is not None:
            for _, dest, n in history.outbox(session, state):
                peer(dest)[state] = int(n)
            continue
        for dest, n in session.execute(
            select(OutboxMessage.destination, func.count())
            .where(OutboxMessage.state == state)
            .group_by(OutboxMessage.destination)
        ):
            peer(dest)[state] = int(n)
    for dest, first in session.execute(
        select(OutboxMessage.destination, func.min(OutboxMessage.created_at))
        .where(OutboxMessage.state.in_((outbox.PENDING, outbox.IN_FLIGHT)))
        .group_by(OutboxMessage.destination)
    ):
        if first is not None:
            peer(dest)["oldest_undelivered_s"] = round((now - first).total_seconds(), 1)
    for p in peers.values():
        backlog = p["pending"] + p["in_flight"]
        if p["rate_limit"] and backlog:  # (each one-stop system its own rate: with several, sooner than this)
            p["drain_s"] = round(backlog / p["rate_limit"], 1)
    names = sorted(set(KNOWN_PEERS) | set(peers))
    exchanged = latest_exchanges(session, names)
    for name in names:
        latest = exchanged.get(name, {})
        if not latest and name not in peers:
            continue
        p = peer(name)
        if "ok" in latest:
            p["last_ok"] = latest["ok"][0].isoformat()
        failures = [v for k, v in latest.items() if k != "ok"]
        if failures:
            at, code = max(failures, key=lambda v: v[0])
            p["last_failure"], p["last_error_code"] = at.isoformat(), code
    return sorted(peers.values(), key=lambda p: p["peer"])


EXCHANGE_OUTCOMES = ("ok", "retryable", "permanent")
# the peers in the exchange record: a loose index scan, one seek a peer on ix_exchanges_peer_outcome_at (SELECT
# DISTINCT or GROUP BY reads every row — 0.3–0.5 s of a parallel sequential scan with a month's 2,000,000)
_PEERS_EXCHANGED = text(
    "WITH RECURSIVE p(peer) AS (SELECT min(peer) FROM exchanges UNION ALL "
    "SELECT (SELECT min(e.peer) FROM exchanges e WHERE e.peer > p.peer) FROM p WHERE p.peer IS NOT NULL) "
    "SELECT peer FROM p WHERE peer IS NOT NULL"
)


def latest_exchanges(
    session: Session, names: Iterable[str] | None = None
) -> dict[str, dict[str, tuple[datetime, str | None]]]:
    """Per peer (those of `names`, or every peer in the exchange record) and outcome: when its latest exchange was,
    and its error code — a short backward scan of ix_exchanges_peer_outcome_at each, whatever the record's size
    (/readyz, the console's peers, `hub peers`), in one statement. Each pair is its own SELECT with its values: a
    correlated subquery over the peers leaves the planner guessing, and it walked the whole time index instead."""
    from hub.store.models import Exchange

    peers = sorted(set(names) if names is not None else session.scalars(_PEERS_EXCHANGED))
    if not peers:
        return {}
    latest = [
        select(literal(peer).label("peer"), literal(outcome).label("outcome"), Exchange.at, Exchange.error_code)
        .where(Exchange.peer == peer, Exchange.outcome == outcome)
        .order_by(Exchange.at.desc())
        .limit(1)
        .subquery()
        .select()
        for peer in peers
        for outcome in EXCHANGE_OUTCOMES
    ]
    found: dict[str, dict[str, tuple[datetime, str | None]]] = {}
    for peer, outcome, at, error_code in session.execute(union_all(*latest)):
        found.setdefault(peer, {})[outcome] = (at, error_code)
    return found


def last_run(session: Session, name: str, *, ok_only: bool = False) -> JobRun | None:
    """The latest run of a scheduled job (ix_job_runs_name_started), or of its successful runs."""
    query = select(JobRun).where(JobRun.name == name)
    if ok_only:
        query = query.where(JobRun.outcome == "ok")
    return session.scalars(query.order_by(JobRun.started_at.desc()).limit(1)).first()
