"""Prometheus metrics. Delivery state is read from the database at scrape time (the outbox and the exchange
record are shared by every process, so one API process reports the whole cluster) — the counters of append-only
tables incrementally, the rows added since the last scrape (`Tally`); request latency is measured in-process."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.exchange import INBOUND
from hub.domain.dates import utcnow
from hub.services.dossiers import overdue_where
from hub.store.db import WalCheckpointer
from hub.store.models import (
    AccessLogEntry,
    Dossier,
    EdocNotice,
    Exchange,
    JobRun,
    OperatorAction,
    OutboxMessage,
    Payment,
    PaymentCallback,
)
from hub.store.space import DiskSpace
from hub.sync import jobs
from hub.sync.maintenance import on_since as maintenance_on_since
from hub.sync.outbox import DEAD, DELIVERED, IN_FLIGHT, PENDING, SET_ASIDE
from hub.sync.workers import WorkerSeen

DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# prometheus_client exports, beside every counter and histogram series, a `_created` gauge (when the series began)
# that the text format Prometheus scrapes has no use for: hub_http_request_duration_seconds alone, one series a
# method, route and status, would double the series stored. The counters read from the database never had one.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (the library has no annotation on it)


SETTLE_SECONDS = 60.0  # longer than any transaction that appends to an append-only table takes to commit
# counts of history — every payment ever made, every outbox row delivered or set aside since the last purge (tens
# of millions in a busy province's half year: an index-only count of 3 million took 0.2 s) — are taken again only
# this long after: the gauges are for trends and alerts over minutes, and a scrape every 15 s need not pay for them
HISTORY_COUNTS_SECONDS = 60.0


class Tally:
    """Running totals of an append-only table grouped by some of its columns, for a counter: each scrape reads the
    rows added since the ones it has counted (a primary-key range), not the whole table — the exchange record
    holds millions of rows, the access log and the payment callbacks are never purged (a full GROUP BY of 3
    million exchanges took 0.9 s of the database's time at every scrape). Purging old rows no longer makes a
    counter go down.

    A row's id is drawn when it is inserted, and a transaction that drew a lower id may commit after one that drew
    a higher: ids are taken as counted for good only once the largest id seen at a scrape is SETTLE_SECONDS old;
    the rows above that mark are counted afresh at each scrape. A process's first scrape counts the whole table,
    and counts it again once SETTLE_SECONDS have passed — a row whose transaction was still open at the first count
    is in the second —, keeping for each total the larger of the two (a purge meanwhile does not make a counter go
    down). (A largest id below the mark — a table emptied to its last row, whose ids SQLite then hands out again,
    or an older copy restored — starts the count over: a counter reset. A row deleted within SETTLE_SECONDS of
    being written is not counted; purges take rows days old.)"""

    def __init__(self, key: Any, labels: Sequence[Any], sums: Sequence[Any], settle: float = SETTLE_SECONDS) -> None:
        self._key, self._labels, self._sums, self._settle = key, list(labels), list(sums), settle
        self._settled: dict[tuple[Any, ...], list[float]] = {}
        self._mark: int | None = None  # rows with ids up to this are in _settled
        self._seen: deque[tuple[float, int]] = deque()  # (monotonic time, largest id then)
        self._recount_at: float | None = None  # when the first count is settled and is taken again
        self._lock = threading.Lock()

    def read(self, session: Session) -> dict[tuple[Any, ...], list[float]]:
        """(label values) -> [count, *sums], every row of the table counted once."""
        now = time.monotonic()
        top = int(session.scalar(select(func.max(self._key))) or 0)
        with self._lock:
            if self._mark is not None and top < self._mark:
                # ids went back: the table was emptied (SQLite then hands its ids out again) or an older copy
                # restored — what was counted no longer says what is there: count again (a counter reset)
                self._settled, self._mark = {}, None
                self._seen.clear()
            if self._mark is None:
                self._add(self._settled, session, 0, top)
                self._mark = top
                self._recount_at = now + self._settle
            else:
                self._seen.append((now, top))
                settled = None
                while self._seen and self._seen[0][0] <= now - self._settle:
                    settled = self._seen.popleft()[1]
                if settled is not None and settled > self._mark:
                    self._add(self._settled, session, self._mark, settled)
                    self._mark = settled
                if self._recount_at is not None and now >= self._recount_at:
                    # every id up to the mark is settled now, those of the first count included
                    again: dict[tuple[Any, ...], list[float]] = {}
                    self._add(again, session, 0, self._mark)
                    for labels, values in again.items():
                        had = self._settled.get(labels, [0.0] * len(values))
                        self._settled[labels] = [max(a, b) for a, b in zip(had, values, strict=True)]
                    self._recount_at = None
            totals = {k: list(v) for k, v in self._settled.items()}
            mark = self._mark
        self._add(totals, session, mark, None)
        return totals

    def _add(self, into: dict[tuple[Any, ...], list[float]], session: Session, above: int, upto: int | None) -> None:
        where = [self._key > above] + ([self._key <= upto] if upto is not None else [])
        query = select(*self._labels, func.count(), *(func.sum(c) for c in self._sums)).where(*where)
        for row in session.execute(query.group_by(*self._labels)):
            labels, values = tuple(row[: len(self._labels)]), [float(v or 0) for v in row[len(self._labels) :]]
            into[labels] = [a + b for a, b in zip(into.get(labels, [0.0] * len(values)), values, strict=True)]


class HistoryCounts:
    """Counts of history (HISTORY_COUNTS_SECONDS): the outbox's delivered rows by destination, payments by status —
    asked of the database again only once that long has passed since they were last asked, whoever asks (the
    metrics' scrapes, the console's overview)."""

    def __init__(self) -> None:
        self._counted: dict[str, tuple[float, list[tuple[str, str, int]]]] = {}  # name: (when counted, counts)
        self._lock = threading.Lock()

    def get(self, session: Session, name: str, query: Any) -> list[tuple[str, str, int]]:
        """(label, label, count) rows of `query`, known as `name`."""
        with self._lock:
            now = time.monotonic()
            counted = self._counted.get(name)
            if counted is None or now - counted[0] >= HISTORY_COUNTS_SECONDS:
                counted = (now, [(str(a), str(b), int(n)) for a, b, n in session.execute(query)])
                self._counted[name] = counted
            return counted[1]

    def outbox(self, session: Session, state: str) -> list[tuple[str, str, int]]:
        """`outbox_in(state)`'s rows, at most every HISTORY_COUNTS_SECONDS."""
        return self.get(session, f"outbox:{state}", outbox_in(state))


def outbox_in(state: str) -> Any:
    """(state, destination, count) of the outbox's rows in `state`: one index-only scan of
    ix_outbox_state_destination."""
    return (
        select(OutboxMessage.state, OutboxMessage.destination, func.count())
        .where(OutboxMessage.state == state)
        .group_by(OutboxMessage.state, OutboxMessage.destination)
    )


class StoreCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], history: HistoryCounts | None = None) -> None:
        self.sessions = sessions
        self.history = history or HistoryCounts()
        buckets = [case((Exchange.duration_ms <= b, 1), else_=0) for b in DURATION_BUCKETS_MS]
        self.exchanges = Tally(
            Exchange.id, [Exchange.peer, Exchange.operation, Exchange.outcome], [Exchange.duration_ms, *buckets]
        )
        self.reads = Tally(AccessLogEntry.id, [AccessLogEntry.outcome, AccessLogEntry.procedure], [])
        self.callbacks = Tally(
            PaymentCallback.id, [PaymentCallback.platform, PaymentCallback.verdict, PaymentCallback.answer_code], []
        )
        self.notices = Tally(EdocNotice.id, [EdocNotice.verdict, EdocNotice.status], [])
        self.actions = Tally(OperatorAction.id, [OperatorAction.action], [])

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "hub_outbox_messages",
            f"Outbox rows by state and destination (delivered and set aside counted at most every "
            f"{HISTORY_COUNTS_SECONDS:.0f} s)",
            labels=["state", "destination"],
        )
        oldest = GaugeMetricFamily(
            "hub_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered (pending or in flight) row",
            labels=["destination"],
        )
        exchanges = CounterMetricFamily(
            "hub_exchanges",
            "Exchanges by peer, operation and outcome: hub's calls (ok; handled: a refusal its call answered itself — "
            "a session renewed, a dossier sent the other way; retryable; permanent) and a peer's pushes (accepted; "
            "rejected)",
            labels=["peer", "operation", "outcome"],
        )
        latency = GaugeMetricFamily(
            "hub_exchange_duration_ms_avg", "Average outbound exchange duration", labels=["peer", "operation"]
        )
        maintenance = GaugeMetricFamily(
            "hub_maintenance_on_seconds",
            "Seconds maintenance mode has been on (0: off) — no worker dispatches meanwhile, the outbox fills",
        )
        now = utcnow()
        with self.sessions() as s:
            # one index-only scan per state (ix_outbox_state_destination), as `hub peers status` does; the states
            # that are history (delivered, set aside) at most every HISTORY_COUNTS_SECONDS
            for state in (PENDING, IN_FLIGHT, DEAD, DELIVERED, SET_ASIDE):
                history = state in (DELIVERED, SET_ASIDE)
                rows: Any = self.history.outbox(s, state) if history else s.execute(outbox_in(state))
                for _, dest, n in rows:
                    depth.add_metric([state, dest], float(n))
            for dest, first in s.execute(
                select(OutboxMessage.destination, func.min(OutboxMessage.created_at))
                .where(OutboxMessage.state.in_((PENDING, IN_FLIGHT)))
                .group_by(OutboxMessage.destination)
            ):
                if first is not None:
                    created = first if first.tzinfo else first.replace(tzinfo=now.tzinfo)
                    oldest.add_metric([dest], max(0.0, (now - created).total_seconds()))
            if (since := maintenance_on_since(s)) is not None:
                since = since if since.tzinfo else since.replace(tzinfo=now.tzinfo)
                maintenance.add_metric([], max(0.0, (now - since).total_seconds()))
            else:
                maintenance.add_metric([], 0.0)
            by_peer: dict[str, list[float]] = {}
            for (peer, op, outcome), sums in sorted(self.exchanges.read(s).items()):
                exchanges.add_metric([peer, op, outcome], sums[0])
                if outcome == "ok":
                    latency.add_metric([peer, op], sums[1] / sums[0] if sums[0] else 0.0)
                if outcome in INBOUND:  # how long hub took to answer a push: not the peer's latency
                    continue
                acc = by_peer.setdefault(peer, [0.0] * len(sums))
                by_peer[peer] = [a + b for a, b in zip(acc, sums, strict=True)]
            reads = CounterMetricFamily(
                "hub_personal_data_reads",
                "Reads of personal data (pre-fill) by outcome, from the access log",
                labels=["outcome", "procedure"],
            )
            for (outcome, procedure), counted in sorted(self.reads.read(s).items()):
                reads.add_metric([outcome, procedure], counted[0])
            payments = GaugeMetricFamily(
                "hub_payments",
                f"Payments by platform and status (counted at most every {HISTORY_COUNTS_SECONDS:.0f} s)",
                labels=["platform", "status"],
            )
            by = (Payment.platform, Payment.status)
            for platform, status, n in self.history.get(s, "payments", select(*by, func.count()).group_by(*by)):
                payments.add_metric([platform, status], float(n))
            paid = GaugeMetricFamily(
                "hub_payments_paid",
                "Paid payments by platform and how hub learned it: the platform's callback, or asking the platform "
                "(`query`: its callback never came, or not in time) — only grows (counted at most every "
                f"{HISTORY_COUNTS_SECONDS:.0f} s)",
                labels=["platform", "settled_by"],
            )
            learned = (Payment.platform, Payment.settled_by)
            paid_query = select(*learned, func.count()).where(Payment.status == "paid").group_by(*learned)
            for platform, settled_by, n in self.history.get(s, "payments_paid", paid_query):
                paid.add_metric([platform, settled_by], float(n))
            callbacks = CounterMetricFamily(
                "hub_payment_callbacks",
                "Payment platform callbacks by verdict and answer code",
                labels=["platform", "verdict", "code"],
            )
            for (platform, verdict, code), counted in sorted(self.callbacks.read(s).items()):
                callbacks.add_metric([platform, verdict, code], counted[0])
            notices = CounterMetricFamily(
                "hub_edoc_status_notices",
                "Status notices from the receivers of documents hub sent, by hub's verdict and the status they state",
                labels=["verdict", "status"],
            )
            for (verdict, status), counted in sorted(self.notices.read(s).items(), key=str):
                notices.add_metric([verdict, status or ""], counted[0])
            operator_actions = CounterMetricFamily(
                "hub_operator_actions",
                "What operators did (replay, retry, set_aside, maintenance_on, …) and their console sign-ins, refused "
                "ones included (sign_in_failed), from the record of operators' actions",
                labels=["action"],
            )
            for (action,), counted in sorted(self.actions.read(s).items()):
                operator_actions.add_metric([action], counted[0])
            drift = GaugeMetricFamily(
                "hub_payment_reconciliation_drift",
                "Lines of the last reconciled day's statement that differ from hub's ledger, by platform and kind",
                labels=["platform", "result"],
            )
            last = jobs.last_run(s, "reconcile_payments", ok_only=True)
            for key, n in sorted((last.detail if last is not None else {}).items()):
                platform, _, result = key.partition(".")
                if result and result != "matched" and isinstance(n, int):
                    drift.add_metric([platform, result], float(n))
            attempts = GaugeMetricFamily(
                "hub_outbox_attempts",
                "Delivery attempts spent by outbox rows not delivered yet, by state and destination",
                labels=["state", "destination"],
            )
            for state, dest, total in s.execute(
                select(OutboxMessage.state, OutboxMessage.destination, func.sum(OutboxMessage.attempts))
                .where(OutboxMessage.state != DELIVERED)
                .group_by(OutboxMessage.state, OutboxMessage.destination)
            ):
                attempts.add_metric([state, dest], float(total or 0))
            overdue = GaugeMetricFamily(
                "hub_dossiers_overdue",
                "Dossiers past their appointment (NgayHenTra) whose result is not ready, by agency",
                labels=["agency"],
            )
            for agency, n in s.execute(
                select(Dossier.agency, func.count()).where(*overdue_where(now)).group_by(Dossier.agency)
            ):
                overdue.add_metric([agency], float(n))
            durations = HistogramMetricFamily(
                "hub_exchange_duration_ms", "Outbound exchange duration (ms) by peer", labels=["peer"]
            )
            for peer, sums in sorted(by_peer.items()):
                buckets = [(str(b), c) for b, c in zip(DURATION_BUCKETS_MS, sums[2:], strict=True)]
                durations.add_metric([peer], [*buckets, ("+Inf", sums[0])], sums[1])
        yield from (
            depth, oldest, maintenance, exchanges, latency, reads, payments, paid, callbacks, notices,
            operator_actions, drift, attempts, overdue, durations,
        )  # fmt: skip


class JobsCollector(Collector):
    """When each scheduled job last ran to its end without an error, beside how often it is scheduled: a job that
    fails at every run (the portal refusing hub's credentials to the poll, the platform's statement unreadable) or
    that no worker runs any more shows as an age growing past a few intervals (alert HubScheduledJobStale). A job
    that has run but never succeeded is as old as its first run; one never run, as the first run of any job. One
    index seek a job (ix_job_runs_name_started)."""

    def __init__(self, sessions: sessionmaker[Session], intervals: dict[str, float]) -> None:
        self.sessions = sessions
        self.intervals = intervals

    def collect(self) -> Iterator[Any]:
        every = GaugeMetricFamily(
            "hub_scheduled_job_interval_seconds",
            "How often each scheduled job runs (0: not scheduled)",
            labels=["task"],
        )
        age = GaugeMetricFamily(
            "hub_scheduled_job_last_success_age_seconds",
            "Seconds since each scheduled job last ran without an error (since its first run, if it never did)",
            labels=["task"],
        )
        now = utcnow()
        with self.sessions() as s:
            scheduler_since = jobs.first_run(s)
            for task, interval in self.intervals.items():
                every.add_metric([task], interval)
                succeeded = jobs.last_run(s, task, ok_only=True)
                last = succeeded.finished_at if succeeded is not None else None
                if last is None:
                    last = s.scalar(select(func.min(JobRun.started_at)).where(JobRun.name == task))
                if last is None:  # never run while others have: as old as the schedule (jobs.first_run)
                    last = scheduler_since
                if last is not None:
                    at = last if last.tzinfo else last.replace(tzinfo=now.tzinfo)
                    age.add_metric([task], max(0.0, (now - at).total_seconds()))
        yield every
        yield age


class WalCollector(Collector):
    """This process's SQLite write-ahead log (embedded mode): how long it is, and how its restarts went. A log
    that keeps growing towards the autocheckpoint backstop (WAL_AUTOCHECKPOINT_PAGES) means the checkpointer
    cannot start it over — a long reader, or writers that never leave it a gap — and commits will pay for it."""

    def __init__(self, checkpointer: WalCheckpointer) -> None:
        self.checkpointer = checkpointer

    def collect(self) -> Iterator[Any]:
        pages = GaugeMetricFamily("hub_sqlite_wal_pages", "Pages in SQLite's write-ahead log at the last check")
        pages.add_metric([], float(self.checkpointer.log_pages))
        restarts = CounterMetricFamily(
            "hub_sqlite_wal_restarts",
            "Rounds that tried to start the write-ahead log over, by outcome",
            labels=["outcome"],
        )
        for outcome, n in self.checkpointer.restarts.items():
            restarts.add_metric([outcome], float(n))
        yield pages
        yield restarts


class DiskCollector(Collector):
    """Room on the database's disk: free bytes on the SQLite file's volume (PostgreSQL's disk is its own
    monitoring's), and writes this process had refused for want of it."""

    def __init__(self, disk: DiskSpace) -> None:
        self.disk = disk

    def collect(self) -> Iterator[Any]:
        free = self.disk.free_bytes()
        if free is not None:
            gauge = GaugeMetricFamily("hub_database_disk_free_bytes", "Free space on the SQLite database's volume")
            gauge.add_metric([], float(free))
            yield gauge
        refused = CounterMetricFamily(
            "hub_database_out_of_space_errors", "Requests whose writes the database refused: its disk was full"
        )
        refused.add_metric([], float(self.disk.errors))
        yield refused


class WorkersCollector(Collector):
    """The workers delivering now (hub.sync.workers): none alive, or one whose last drain grows old while the
    ticker asks for one every poll interval, is an outage of the relay however healthy the API looks."""

    def __init__(self, workers: Callable[[], list[WorkerSeen]]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Any]:
        try:
            seen = self.workers()
        except Exception:  # noqa: BLE001 - Redis down: no figure rather than a wrong one (the scrape goes on)
            return
        alive = GaugeMetricFamily("hub_workers_alive", "Workers whose last sign of life has not expired")
        alive.add_metric([], float(len(seen)))
        yield alive
        drained = GaugeMetricFamily(
            "hub_worker_last_drain_age_seconds", "Seconds since a drain last started on each worker", labels=["worker"]
        )
        for w in seen:
            if w.last_drain_age_s is not None:
                drained.add_metric([w.name], w.last_drain_age_s)
        yield drained


class SigningCollector(Collector):
    """hub's own signing key: whether it can sign (a token that refused the PIN or went away cannot), and how long
    its certificate has left — an expired agency certificate stops every document hub sends, without an error
    until the first one is refused."""

    def __init__(self, key_state: Callable[[], tuple[x509.Certificate | None, str | None] | None]) -> None:
        self.key_state = key_state  # SignatureService.key_state

    def collect(self) -> Iterator[Any]:
        usable = GaugeMetricFamily("hub_signing_key_usable", "1 when hub's signing key can sign, 0 when it cannot")
        expiry = GaugeMetricFamily(
            "hub_signing_certificate_expiry_seconds",
            "Seconds until hub's signing certificate expires (negative: expired)",
            labels=["subject"],
        )
        state = self.key_state()
        if state is not None:  # (no key configured: the families, without a sample)
            cert, _ = state
            usable.add_metric([], 0.0 if cert is None else 1.0)
            if cert is not None:
                left = cert.not_valid_after_utc - datetime.now(UTC)
                expiry.add_metric([cert.subject.rfc4514_string()], left.total_seconds())
        yield usable
        yield expiry


class BulkheadsCollector(Collector):
    """The API's compartments per peer (ADR 0046): places, those in use, requests waiting for one, and those
    refused for want of one — a peer slow or not answering shows here before its timeouts do."""

    def __init__(self, state: Callable[[], dict[str, tuple[int, int, int, int]]]) -> None:
        self.state = state  # Bulkheads.state

    def collect(self) -> Iterator[Any]:
        places = GaugeMetricFamily("hub_peer_places", "Requests of this process that may wait on the peer at once",
                                   labels=["peer"])  # fmt: skip
        in_use = GaugeMetricFamily("hub_peer_places_in_use", "Requests waiting on the peer now", labels=["peer"])
        waiting = GaugeMetricFamily(
            "hub_peer_places_awaited", "Requests waiting for a place to wait on the peer", labels=["peer"]
        )
        refused = CounterMetricFamily(
            "hub_peer_busy_refusals", "Requests answered 503 peer_busy: no place to wait on the peer came free in time",
            labels=["peer"],
        )  # fmt: skip
        for peer, (size, used, queued, no) in self.state().items():
            places.add_metric([peer], size)
            in_use.add_metric([peer], used)
            waiting.add_metric([peer], queued)
            refused.add_metric([peer], no)
        yield from (places, in_use, waiting, refused)


class RatesCollector(Collector):
    """The rate each destination's systems are held to (HUB_PEER_RATE_LIMITS, ADR 0049): beside its backlog, how
    long that takes to drain — a go-live's or an outage's backlog drains at this rate, however many workers run."""

    def __init__(self, limits: Mapping[str, float]) -> None:
        self.limits = dict(limits)

    def collect(self) -> Iterator[Any]:
        rate = GaugeMetricFamily(
            "hub_peer_rate_limit_per_second",
            "Messages a second deliveries to each system of the destination are held to (absent: no limit)",
            labels=["destination"],
        )
        for destination, limit in sorted(self.limits.items()):
            rate.add_metric([destination], limit)
        yield rate


def make_registry(
    sessions: sessionmaker[Session],
    checkpointer: WalCheckpointer | None = None,
    workers: Callable[[], list[WorkerSeen]] | None = None,
    disk: DiskSpace | None = None,
    signing: Callable[[], tuple[x509.Certificate | None, str | None] | None] | None = None,
    scheduled: dict[str, float] | None = None,
    bulkheads: Callable[[], dict[str, tuple[int, int, int, int]]] | None = None,
    history: HistoryCounts | None = None,
    rate_limits: Mapping[str, float] | None = None,
) -> tuple[CollectorRegistry, Histogram, Counter, Histogram, Histogram, Counter]:
    registry = CollectorRegistry()
    registry.register(StoreCollector(sessions, history))
    registry.register(RatesCollector(rate_limits or {}))
    if bulkheads is not None:
        registry.register(BulkheadsCollector(bulkheads))
    if scheduled is not None:
        registry.register(JobsCollector(sessions, scheduled))
    if signing is not None:
        registry.register(SigningCollector(signing))
    if workers is not None:
        registry.register(WorkersCollector(workers))
    if checkpointer is not None:
        registry.register(WalCollector(checkpointer))
    if disk is not None:
        registry.register(DiskCollector(disk))
    requests = Histogram(
        "hub_http_request_duration_seconds",
        "API request duration",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    verifications = Counter(
        "hub_signature_verifications", "XML signature verifications by indication", ["indication", "sub_indication"],
        registry=registry,
    )  # fmt: skip
    verify_seconds = Histogram(
        "hub_signature_verification_seconds", "XML signature verification duration", registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    )  # fmt: skip
    prefill_seconds = Histogram(
        "hub_prefill_seconds", "Pre-fill request duration (population look-ups included)", ["outcome"],
        registry=registry, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )  # fmt: skip
    dvcqg_replies = Counter(
        "hub_dvcqg_replies", "Replies to one-stop systems speaking the portal's protocol (/dvcqg), by service and "
        "error_code (00 taken; 03, 04, 05 an item refused; 01, 02 sign-in or session)", ["service", "error_code"],
        registry=registry,
    )  # fmt: skip
    return registry, requests, verifications, verify_seconds, prefill_seconds, dvcqg_replies
