"""Prometheus metrics. Delivery state is read from the database at scrape time (the outbox and the exchange
record are shared by every process, so one API process reports the whole cluster); request latency is
measured in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.store.db import WalCheckpointer
from hub.store.models import AccessLogEntry, Exchange, OutboxMessage, Payment, PaymentCallback
from hub.store.space import DiskSpace
from hub.sync.workers import WorkerSeen

DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class StoreCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "hub_outbox_messages", "Outbox rows by state and destination", labels=["state", "destination"]
        )
        oldest = GaugeMetricFamily(
            "hub_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered (pending or in flight) row",
            labels=["destination"],
        )
        exchanges = CounterMetricFamily(
            "hub_exchanges",
            "Outbound exchanges by peer, operation and outcome",
            labels=["peer", "operation", "outcome"],
        )
        latency = GaugeMetricFamily(
            "hub_exchange_duration_ms_avg", "Average outbound exchange duration", labels=["peer", "operation"]
        )
        now = utcnow()
        with self.sessions() as s:
            for state, dest, n in s.execute(
                select(OutboxMessage.state, OutboxMessage.destination, func.count()).group_by(
                    OutboxMessage.state, OutboxMessage.destination
                )
            ):
                depth.add_metric([state, dest], float(n))
            for dest, first in s.execute(
                select(OutboxMessage.destination, func.min(OutboxMessage.created_at))
                .where(OutboxMessage.state.in_(("pending", "in_flight")))
                .group_by(OutboxMessage.destination)
            ):
                if first is not None:
                    created = first if first.tzinfo else first.replace(tzinfo=now.tzinfo)
                    oldest.add_metric([dest], max(0.0, (now - created).total_seconds()))
            for peer, op, outcome, n, avg in s.execute(
                select(
                    Exchange.peer, Exchange.operation, Exchange.outcome, func.count(), func.avg(Exchange.duration_ms)
                ).group_by(Exchange.peer, Exchange.operation, Exchange.outcome)
            ):
                exchanges.add_metric([peer, op, outcome], float(n))
                if outcome == "ok":
                    latency.add_metric([peer, op], float(avg or 0.0))
            reads = CounterMetricFamily(
                "hub_personal_data_reads",
                "Reads of personal data (pre-fill) by outcome, from the access log",
                labels=["outcome", "procedure"],
            )
            for outcome, procedure, n in s.execute(
                select(AccessLogEntry.outcome, AccessLogEntry.procedure, func.count()).group_by(
                    AccessLogEntry.outcome, AccessLogEntry.procedure
                )
            ):
                reads.add_metric([outcome, procedure], float(n))
            payments = GaugeMetricFamily(
                "hub_payments", "Payments by platform and status", labels=["platform", "status"]
            )
            for platform, status, n in s.execute(
                select(Payment.platform, Payment.status, func.count()).group_by(Payment.platform, Payment.status)
            ):
                payments.add_metric([platform, status], float(n))
            callbacks = CounterMetricFamily(
                "hub_payment_callbacks",
                "Payment platform callbacks by verdict and answer code",
                labels=["platform", "verdict", "code"],
            )
            for platform, verdict, code, n in s.execute(
                select(
                    PaymentCallback.platform, PaymentCallback.verdict, PaymentCallback.answer_code, func.count()
                ).group_by(PaymentCallback.platform, PaymentCallback.verdict, PaymentCallback.answer_code)
            ):
                callbacks.add_metric([platform, verdict, code], float(n))
            attempts = GaugeMetricFamily(
                "hub_outbox_attempts",
                "Delivery attempts spent by outbox rows, by state and destination (retries show in pending/dead)",
                labels=["state", "destination"],
            )
            for state, dest, total in s.execute(
                select(OutboxMessage.state, OutboxMessage.destination, func.sum(OutboxMessage.attempts)).group_by(
                    OutboxMessage.state, OutboxMessage.destination
                )
            ):
                attempts.add_metric([state, dest], float(total or 0))
            durations = HistogramMetricFamily(
                "hub_exchange_duration_ms", "Outbound exchange duration (ms) by peer", labels=["peer"]
            )
            columns = [func.sum(case((Exchange.duration_ms <= b, 1), else_=0)) for b in DURATION_BUCKETS_MS]
            for peer, n, total, *cumulative in s.execute(
                select(Exchange.peer, func.count(), func.sum(Exchange.duration_ms), *columns).group_by(Exchange.peer)
            ):
                buckets = [(str(b), float(c or 0)) for b, c in zip(DURATION_BUCKETS_MS, cumulative, strict=True)]
                durations.add_metric([peer], [*buckets, ("+Inf", float(n))], float(total or 0.0))
        yield from (depth, oldest, exchanges, latency, reads, payments, callbacks, attempts, durations)


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


def make_registry(
    sessions: sessionmaker[Session],
    checkpointer: WalCheckpointer | None = None,
    workers: Callable[[], list[WorkerSeen]] | None = None,
    disk: DiskSpace | None = None,
) -> tuple[CollectorRegistry, Histogram, Counter, Histogram, Histogram]:
    registry = CollectorRegistry()
    registry.register(StoreCollector(sessions))
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
    return registry, requests, verifications, verify_seconds, prefill_seconds
