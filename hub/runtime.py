"""Wiring: from Settings build the engine, adapters, relay and dispatcher for one process.

Roles: "api" (hub serve: ingest, and the embedded worker when no broker is configured), "worker" (Celery),
"cli" (one-shot commands)."""

from __future__ import annotations

import logging
import os
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub.adapters.errors import PeerRejected
from hub.adapters.exchange import ExchangeHook, ExchangeRecord
from hub.adapters.national_portal import NationalPortalClient
from hub.adapters.one_stop import OneStopClient
from hub.adapters.population.base import PEER as POPULATION
from hub.domain.calendar import WorkingCalendar
from hub.domain.errors import DomainError
from hub.domain.identifiers import dossier_code
from hub.services import routes
from hub.services.dossiers import DOCUMENT_EXCHANGE, NATIONAL_PORTAL, ONE_STOP, DossierService
from hub.services.quota import LocalQuota, Quota, RedisQuota
from hub.services.retention import redact_all
from hub.settings import Settings
from hub.store import db
from hub.store.space import MIB, DiskSpace
from hub.sync import outbox
from hub.sync.embedded import EmbeddedWorker, FileRoster, JobsLock, PgJobsLock, Presence
from hub.sync.jobs import JOB_NAMES, UNANSWERED, intervals
from hub.sync.outbox import Claimed
from hub.sync.rates import FilePaces, PeerRates
from hub.sync.relay import Relay
from hub.sync.retry import RetryPolicy
from hub.sync.workers import Roster, WorkerSeen, beat_ttl

log = logging.getLogger("hub.runtime")


class Runtime:
    def __init__(self, settings: Settings, *, role: str = "api", start_worker: bool | None = None) -> None:
        self.settings = settings
        self.role = role
        url = settings.effective_database_url
        # one connection per request the API runs at once (its threadpool is limited to db_pool_size), plus the
        # relay's deliveries and the scheduled jobs when the worker runs in this process
        pool = settings.db_pool_size + (settings.relay_concurrency + 4 if role in ("api", "worker") else 0)
        # SQLite: the write-ahead log is copied back off the request path (a commit that does it takes 10 ms)
        background = db.sqlite_path(url) is not None
        self.engine: Engine = db.make_engine(
            url,
            pool_size=pool,
            wal_autocheckpoint=db.WAL_AUTOCHECKPOINT_PAGES if background else 1000,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        self._checkpointer = db.WalCheckpointer(url).start() if background else None
        self._inline = (
            db.InlineWriter(self.engine, db.WAL_AUTOCHECKPOINT_PAGES, settings.sqlite_synchronous)
            if background
            else None
        )
        if url.startswith("sqlite") and role != "worker":
            db.upgrade(url)  # embedded mode: the file is ours, keep it at head
        self.sessions = db.make_sessionmaker(self.engine)
        self.disk = DiskSpace(db.sqlite_path(url), settings.disk_reserve_mb * MIB)
        from hub.adapters.tls import context_for

        # hub's HTTPS to its peers: certifi's CAs, the province's own (HUB_TLS_CA_FILE), its client certificate;
        # a peer on a network of its own has its own (HUB_TLS_PEERS); with none of these, one context for them all
        def tls(peer: str) -> ssl.SSLContext:
            return context_for(settings, peer)

        password = settings.national_portal_password
        self.portal = NationalPortalClient(
            settings.effective_national_portal_url,
            username=settings.national_portal_username,
            password=password.get_secret_value() if password else "",
            dstcode=settings.national_portal_dstcode,
            auth_path=settings.national_portal_auth_path,
            service_path=settings.national_portal_service_path,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=max(settings.relay_concurrency, 4),
            tls=tls("national_portal"),
        )
        self.one_stop = OneStopClient(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=max(settings.relay_concurrency, 4),
            tls=tls("one_stop"),
        )
        from hub.adapters.document_exchange import DocumentExchangeClient

        exchange_key = settings.document_exchange_api_key
        self.document_exchange = DocumentExchangeClient(
            settings.effective_document_exchange_url,
            api_key=exchange_key.get_secret_value() if exchange_key else "",
            connect_timeout=settings.connect_timeout,
            read_timeout=max(settings.read_timeout, 30.0),  # envelopes carry attachments
            tls=tls("document_exchange"),
        )
        from hub.sync.maintenance import Maintenance

        self.maintenance = Maintenance(self.sessions)
        # how fast each client may read personal data (token buckets), and messages may go to each peer (paces):
        # shared through Redis by every process in distributed mode
        self.quota: Quota = LocalQuota() if settings.embedded else RedisQuota(settings.broker_url)
        rates: PeerRates | None = None
        self._paces: FilePaces | None = None
        if settings.peer_rate_limits:
            limits, on_file = settings.peer_rate_limits, db.sqlite_path(url) if settings.embedded else None
            if on_file is not None:  # embedded: one pace for the `hub serve` processes on this database
                self._paces = FilePaces(on_file.with_name(on_file.name + ".paces"))
                rates = PeerRates(limits, self._paces)
            elif settings.embedded:  # on PostgreSQL with no broker: each process its own pace, at its share
                rates = PeerRates(limits, self.quota, share=lambda: len(self.workers()))
            else:
                rates = PeerRates(limits, self.quota)  # in Redis, for the cluster
        self.relay = Relay(
            self.sessions,
            {
                NATIONAL_PORTAL: self._deliver_to_portal,
                ONE_STOP: self._deliver_to_one_stop,
                "email": self._deliver_email,
                "sms": self._deliver_sms,
                DOCUMENT_EXCHANGE: self._deliver_document,
            },
            policy=RetryPolicy(
                settings.relay_backoff_base,
                settings.relay_backoff_cap,
                settings.relay_max_attempts,
                settings.relay_give_up_after_hours * 3600,
            ),
            batch_size=settings.relay_batch_size,
            concurrency=settings.relay_concurrency,
            # each one-stop system of the routing table is a peer of its own: one down pauses only its deliveries
            peers={ONE_STOP: one_stop_system},
            systems={ONE_STOP: lambda: routes.Routes(self.sessions).systems()},
            lease_seconds=settings.relay_lease_seconds,
            paused=self.maintenance.on,
            rates=rates,
        )
        self.worker: EmbeddedWorker | None = None
        self._celery: Any = None  # distributed mode, the API's: how it sends workers tasks
        self._presence: Presence | None = None
        self._waker: Any = None
        self.doorbell: Any = None  # distributed mode: one drain request waiting at a time
        self._roster: FileRoster | None = None  # embedded: every process's worker on this SQLite database
        if settings.embedded:
            path = db.sqlite_path(url)
            if path is not None:
                self._roster = FileRoster(path, ttl=beat_ttl(settings.relay_poll_interval))
            run = settings.worker_enabled if start_worker is None else start_worker
            if run and role == "api":
                self._presence = self._take_over(url)
                self.worker = EmbeddedWorker(
                    self.relay,
                    settings.relay_poll_interval,
                    [(every, getattr(self, job)) for job, every in intervals(settings).items()],
                    roster=self._roster,
                    jobs_lock=JobsLock(path) if path is not None else PgJobsLock(url),
                )
        else:
            import redis

            from hub.sync.wakeup import Doorbell

            # the API rings (sends drain requests through its own Celery app); a worker only answers, inside the
            # worker's Celery app — a second app made there would become Celery's "current" one
            celery = self._celery = _celery_for(settings) if role == "api" else None
            self.doorbell = Doorbell(
                redis.Redis.from_url(
                    settings.broker_url,
                    socket_timeout=settings.read_timeout,
                    socket_connect_timeout=settings.connect_timeout,
                ),
                (lambda: celery.send_task("hub.drain")) if celery is not None else None,
            )
            if role == "api":
                from hub.sync.wakeup import CoalescingWaker

                self._waker = CoalescingWaker(self.doorbell.ring)
        secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else b""
        from hub.adapters.notify import EmailSender, SmsClient

        self.email = (
            EmailSender(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.smtp_sender,
                timeout=settings.read_timeout,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username or None,
                password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                tls=settings.tls_context_for("email"),  # unset: STARTTLS checks against the system's CAs
            )
            if settings.smtp_host
            else None
        )
        self.sms = (
            SmsClient(
                settings.sms_gateway_url,
                api_key=settings.sms_api_key.get_secret_value() if settings.sms_api_key else "",
                brandname=settings.sms_brandname,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                tls=tls("sms"),
            )
            if settings.sms_gateway_url
            else None
        )
        channels = tuple(name for name, on in (("email", self.email), ("sms", self.sms)) if on is not None)
        self.dossiers = DossierService(
            self.sessions,
            secret_key=secret,
            on_commit=self.wake,
            notify_channels=channels,
            calendar=WorkingCalendar(settings.calendar_days_off, settings.calendar_working_days),
        )
        from hub.metrics import HistoryCounts, make_registry

        # counts of history (delivered rows: millions) taken at most once a minute, by the metrics and the console
        self.history_counts = HistoryCounts()
        from hub.services.catalogue import Catalogue

        self.catalogue = Catalogue(self.sessions)
        self.routes = routes.Routes(self.sessions)
        from datetime import timedelta

        from hub.adapters.population import PopulationClient
        from hub.adapters.population.client import Credentials

        # peers' Retry-After told to one process holds for every process of the cluster (distributed mode)
        from hub.adapters.waits import RedisWaits
        from hub.sandbox.contracts import population_wsdl  # not the population sandbox: it brings FastAPI and more
        from hub.services.population_cache import PopulationCache
        from hub.services.prefill import PrefillService

        self.shared_waits: RedisWaits | None = None if settings.embedded else RedisWaits(settings.broker_url)
        self.population = PopulationClient(
            settings.effective_population_url,
            wsdl=settings.population_wsdl or population_wsdl(),
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            shared_waits=self.shared_waits,
            tls=tls("population"),
            integration=settings.population_integration_code,
            credentials=Credentials(
                settings.population_username,
                settings.population_secret.get_secret_value(),
                settings.population_service_url or settings.effective_population_url,
                millis=settings.population_timestamp_unit == "ms",
            )
            if settings.population_username and settings.population_secret
            else None,
            headers={
                **({"X-Road-Client": settings.population_x_road_client} if settings.population_x_road_client else {}),
                **({"ApiKey": settings.population_api_key.get_secret_value()} if settings.population_api_key else {}),
            },
        )
        from hub.adapters.identity import CitizenTokens

        issuer = settings.effective_citizen_idp_issuer
        self.citizen_tokens: CitizenTokens | None = (
            CitizenTokens(
                issuer,
                settings.citizen_idp_jwks_url or f"{issuer}/jwks.json",
                settings.citizen_idp_audience,
                settings.citizen_id_claim,
                timeout=settings.connect_timeout + settings.read_timeout,
                on_exchange=self.record_exchange,
                tls=tls("identity_provider"),
            )
            if issuer
            else None
        )
        from hub.adapters.payment import DvcPaymentClient
        from hub.services.payments import PaymentService
        from hub.signing.service import SignatureService

        payment_secret = settings.payment_dvc_secret.get_secret_value() if settings.payment_dvc_secret else ""
        self.payment_platforms: dict[str, Any] = {}
        if payment_secret and (settings.payment_dvc_url or settings.mode == "dev"):
            self.payment_platforms["dvc"] = DvcPaymentClient(
                settings.effective_payment_dvc_url,
                partner=settings.payment_dvc_partner,
                secret=payment_secret,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                tls=tls("payment_dvc"),
            )
        if settings.payment_vnpay_pay_url and settings.payment_vnpay_secret is not None:
            from hub.adapters.payment.vnpay import VnpayClient

            self.payment_platforms["vnpay"] = VnpayClient(
                settings.payment_vnpay_pay_url,
                settings.payment_vnpay_api_url or settings.payment_vnpay_pay_url,
                merchant=settings.payment_vnpay_merchant,
                secret=settings.payment_vnpay_secret.get_secret_value(),
                return_url=f"{settings.effective_public_url}/v1/payments/return/vnpay",
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                tls=tls("payment_vnpay"),
            )
        self.payments = PaymentService(
            self.sessions,
            self.payment_platforms,
            self.dossiers,
            platform_for=settings.payment_platform_for,
            callback_url=lambda name: f"{settings.effective_public_url}/v1/payments/callbacks/{name}",
            callback_max_age=timedelta(hours=settings.payment_callback_max_age_hours),
            query_after=timedelta(seconds=settings.payment_query_after_seconds),
            expire_after=timedelta(hours=settings.payment_expire_after_hours),
            on_commit=self.wake,
            shared_waits=self.shared_waits,
        )

        self.signatures = SignatureService(settings, on_exchange=self.record_exchange)
        from hub.services.edocs import EdocStatus

        self.edoc_status = EdocStatus(
            self.sessions, self.document_exchange, self.signatures.verify, on_exchange=self.record_exchange
        )
        from hub.adapters.bulkheads import Bulkheads

        # the API's waits on each peer, on threads of that peer's own (ADR 0046)
        self.bulkheads = Bulkheads(settings.peer_concurrency, settings.peer_queue_seconds)
        self.prefill = PrefillService(
            self.sessions,
            self.population,
            secret_key=secret,
            validity=timedelta(hours=settings.prefill_validity_hours),
            cache=PopulationCache(self.sessions, secret, timedelta(seconds=settings.population_cache_seconds)),
            quota=self.quota,
            inline=self._inline,
            previous_keys=settings.secret_keys[1:],
            bulkheads=self.bulkheads,
            # the register's quota at the data-exchange platform, if one is set (ADR 0049)
            pace=(lambda: rates.admit(POPULATION, POPULATION)) if rates and POPULATION in rates.limits else None,
        )
        from hub.services.citizens import CitizenDossiers

        self.citizen_dossiers = CitizenDossiers(
            self.sessions, secret_keys=settings.secret_keys, calendar=self.dossiers.calendar, quota=self.quota
        )
        if self.worker is not None:
            self.worker.start()  # after every service it may call exists

        (
            self.registry,
            self.request_seconds,
            self.signature_verifications,
            self.signature_seconds,
            self.prefill_seconds,
            self.dvcqg_replies,
        ) = make_registry(
            self.sessions,
            self._checkpointer,
            self.workers if role == "api" else None,
            self.disk,
            self.signatures.key_state if role == "api" else None,
            intervals(self.settings),
            self.bulkheads.state if role == "api" else None,
            self.history_counts,
            self.settings.peer_rate_limits,
        )

    def workers(self) -> list[WorkerSeen]:
        """The workers delivering now: in embedded mode the worker thread of every `hub serve` process on this
        SQLite database (`--workers N`: N), from their notes beside it — this process's own as it is now —, the
        roster in Redis otherwise (raises what Redis raises)."""
        if self.settings.embedded:
            worker = self.worker
            own = [worker.seen()] if worker is not None and worker.alive else []
            if self._roster is None:
                return own
            others = [w for w in self._roster.seen() if w.pid != os.getpid()]
            return sorted(own + others, key=lambda w: w.pid)
        return Roster(self.doorbell.redis, ttl=beat_ttl(self.settings.relay_poll_interval)).seen()

    def readiness(self) -> dict[str, Any]:
        """Database and broker reachable and room on the database's disk (they decide readiness); each peer's last
        exchange (informative)."""
        from sqlalchemy import text

        from hub.sync.jobs import latest_exchanges

        checks: dict[str, str] = {}
        peers: dict[str, Any] = {}
        try:
            with self.sessions() as s:
                s.execute(text("SELECT 1"))
                for peer, latest in latest_exchanges(s).items():  # index seeks: a probe every few seconds
                    peers[peer] = {f"last_{outcome}": at.isoformat() for outcome, (at, _) in latest.items()}
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; report its kind
            checks["database"] = f"error: {exc.__class__.__name__}"
        checks["disk"] = self.disk.check()
        if not self.settings.embedded:
            try:
                import redis

                redis.Redis.from_url(self.settings.broker_url, socket_timeout=1, socket_connect_timeout=1).ping()
                checks["broker"] = "ok"
            except Exception as exc:  # noqa: BLE001 - as above
                checks["broker"] = f"error: {exc.__class__.__name__}"
        ok = all(v == "ok" for v in checks.values())
        maintenance = self.maintenance.on() if checks.get("database") == "ok" else None
        workers: list[dict[str, Any]] | None = None  # informative, as the peers: the API is ready without them
        if checks.get("broker", "ok") == "ok":
            try:
                workers = [w.as_dict() for w in self.workers()]
            except Exception as exc:  # noqa: BLE001 - not known now; readiness is decided above
                log.warning("workers not listed: %s", exc)
        return {
            "status": "ok" if ok else "unavailable",
            "checks": checks,
            "peers": peers,
            "workers": workers,
            "maintenance": maintenance,
        }

    def record_exchange(self, record: ExchangeRecord) -> None:
        """An exchange made outside the relay and the pre-fill's journal — what a peer pushed in, an issuer's key
        set, an OCSP or CRL fetch, a time-stamp — written at once in a transaction of its own (never while one is
        open: these are made before a request's transaction, after its answer, or with none). A failure to write
        is logged, not raised: the exchange itself succeeded or failed on its own account."""
        self.record_exchanges([record])

    def record_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        """`record_exchange` for many at once (a reconciliation's look-ups, a batch at a time): one transaction."""
        if not records:
            return
        try:
            with self.sessions.begin() as s:
                self._record_exchanges(s, records)
        except Exception as exc:
            first, away = records[0], db.unavailable(exc)
            log.log(
                logging.WARNING if away else logging.ERROR,
                "%d exchange(s) with %s not recorded: %s", len(records), first.peer, exc.__class__.__name__,
                exc_info=not away,  # the database away: a line, not a traceback per exchange
                extra={"correlation_id": first.correlation_id},
            )  # fmt: skip

    @staticmethod
    def _record_exchanges(session: Session, records: Sequence[ExchangeRecord]) -> None:
        """Exchanges made outside the relay (pre-fill look-ups) go to the same append-only record."""
        from hub.sync.outbox import exchange_row, write_exchanges

        write_exchanges(session, [exchange_row(rec) for rec in records])

    def _deliver_email(self, c: Claimed, hook: ExchangeHook) -> Any:
        from hub.adapters.errors import PeerRejected as Refused

        if self.email is None:
            raise Refused("email", "email is not configured (HUB_SMTP_HOST)", code="channel_not_configured")
        if (stale := self._no_longer_asked(c)) is not None:
            return stale
        return self._timed(
            "email", c, hook,
            lambda: self.email.send(c.payload["to"], c.payload["subject"], c.payload["body"],  # type: ignore[union-attr]
                                    message_key=c.idempotency_key),
        )  # fmt: skip

    def _deliver_sms(self, c: Claimed, hook: ExchangeHook) -> Any:
        from hub.adapters.errors import PeerRejected as Refused

        if self.sms is None:
            raise Refused("sms", "SMS is not configured (HUB_SMS_GATEWAY_URL)", code="channel_not_configured")
        if (stale := self._no_longer_asked(c)) is not None:
            return stale
        return self._timed(
            "sms", c, hook,
            lambda: self.sms.send(c.payload["to"], c.payload["message"], message_key=c.idempotency_key,  # type: ignore[union-attr]
                                  correlation_id=c.correlation_id),
        )  # fmt: skip

    def _no_longer_asked(self, c: Claimed) -> dict[str, Any] | None:
        """A notice asking the citizen for papers or a fee that the dossier no longer waits for is not sent: done
        with, its reply saying why (hub.services.notifications.ASKING). None: send it."""
        from hub.services.notifications import moved_on

        status = moved_on(self.sessions, c.id, c.operation)
        if status is None:
            return None
        log.info(
            "citizen notice not sent: the dossier moved on",
            extra={"outbox_id": c.id, "operation": c.operation, "status": status, "correlation_id": c.correlation_id},
        )
        return {
            "not_sent": "moved_on",
            "detail": f"not sent: the dossier left the status this notice asks for (now {status}) before it could go",
        }

    @staticmethod
    def _timed(peer: str, c: Claimed, hook: ExchangeHook, send: Callable[[], Any]) -> Any:
        """Run a send and report it as an exchange (digests only: the citizen's contact never leaves the outbox)."""
        import hashlib
        import json

        from hub.adapters.errors import PeerError

        started = time.perf_counter()
        request_digest = hashlib.sha256(json.dumps(c.payload, sort_keys=True).encode()).hexdigest()
        try:
            reply = send()
        except PeerError as exc:
            hook(ExchangeRecord(peer, c.operation, c.correlation_id, request_digest, None,
                                (time.perf_counter() - started) * 1000,
                                "retryable" if exc.retryable else "permanent", exc.code))  # fmt: skip
            raise
        hook(ExchangeRecord(peer, c.operation, c.correlation_id, request_digest, None,
                            (time.perf_counter() - started) * 1000, "ok", None))  # fmt: skip
        return reply if isinstance(reply, dict) else {"message_id": str(reply)}

    def _deliver_document(self, c: Claimed, hook: ExchangeHook) -> Any:
        """A signed edXML envelope, sent as it was signed when it was filed (retries send the same bytes)."""
        return self.document_exchange.send(
            c.payload["envelope"].encode(),
            idempotency_key=c.idempotency_key,
            correlation_id=c.correlation_id,
            on_exchange=hook,
        )

    def _deliver_to_portal(self, c: Claimed, hook: ExchangeHook) -> Any:
        return self.portal.call(
            c.operation,
            c.payload,
            idempotency_key=c.idempotency_key,
            correlation_id=c.correlation_id,
            on_exchange=hook,
        )

    def _deliver_to_one_stop(self, c: Claimed, hook: ExchangeHook) -> Any:
        body = c.payload["body"]
        endpoint = c.payload.get("endpoint")
        if endpoint is None:  # unroutable when filed: a route may have been added since (replay)
            code = body.get("MaHoSo") or body["data"]["MaHoSo"]
            with self.sessions() as s:
                endpoint = routes.resolve(s, dossier_code(code).agency)
            if endpoint is None:
                raise PeerRejected(ONE_STOP, f"no route for the agency of {code}", code="unroutable_agency")
        return self.one_stop.deliver(
            endpoint,
            c.operation,
            body,
            idempotency_key=c.idempotency_key,
            correlation_id=c.correlation_id,
            on_exchange=hook,
        )

    def _job(self, name: str, work: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Run a scheduled job and record its run (the console's sync-jobs page shows the last one)."""
        from hub.domain.dates import utcnow
        from hub.store.models import JobRun

        if self.maintenance.on():
            return {"skipped_maintenance": 1}

        started = utcnow()
        try:
            result = work()
        except Exception as exc:
            self._record_run(JobRun(name=name, started_at=started, finished_at=utcnow(), outcome="error",
                                    detail={"error": f"{exc.__class__.__name__}: {exc}"[:500]}))  # fmt: skip
            raise
        missed = {k: n for k in UNANSWERED if isinstance(n := result.get(k), int) and n > 0}
        detail: dict[str, Any] = result  # done as far as it could but not a success if a peer did not answer: the
        if missed:  # console, the metrics and the alert say so
            detail = {**result, "error": "a peer did not answer: " + ", ".join(f"{k} {n}" for k, n in missed.items())}
        self._record_run(JobRun(name=name, started_at=started, finished_at=utcnow(),
                                outcome="error" if missed else "ok", detail=detail))  # fmt: skip
        return result

    def _record_run(self, run: Any) -> None:
        try:
            with self.sessions.begin() as s:
                s.add(run)
        except Exception as exc:
            log.warning("could not record a job run: %s", exc.__class__.__name__, exc_info=not db.unavailable(exc))

    def portal_pace(self) -> Callable[[], None] | None:
        """The national portal's pace (HUB_PEER_RATE_LIMITS) for what else asks it in bulk, or None if it has none."""
        rates = self.relay.rates
        if rates is None or NATIONAL_PORTAL not in rates.limits:
            return None
        return lambda: rates.wait_turn(NATIONAL_PORTAL, NATIONAL_PORTAL)

    def reconcile(self, *, repair: bool = True, on_progress: Any = None) -> dict[str, Any]:
        """Compare open dossiers with the portal and repair what is safe (also a scheduled job)."""
        from hub.sync.reconcile import reconcile, unknown_to_hub

        def work() -> dict[str, Any]:
            pace = self.portal_pace()  # its look-ups and its listing of each route's filings: one rate
            result = reconcile(
                self.sessions,
                self.portal,
                repair=repair,
                on_progress=on_progress,
                concurrency=self.settings.reconcile_concurrency,
                on_exchanges=self.record_exchanges,
                returned_days=self.settings.reconcile_days,
                pace=pace,
            )

            def unlisted(_: Exception) -> None:
                result.errors += 1

            result.drift += unknown_to_hub(
                self.sessions, self.portal, [r["agency_pattern"] for r in self.routes.all()],
                on_exchange=self.record_exchange, days=self.settings.reconcile_days, on_error=unlisted,
                pace=pace,
            )  # fmt: skip
            if result.as_dict()["repaired_events"]:
                self.wake()
            return result.as_dict()

        return self._job("reconcile", work)

    def reconcile_payments(self, day: date | None = None) -> dict[str, Any]:
        """Each platform's statement of a day (Vietnam time) against hub's paid payments. Scheduled: the previous
        day, once, from HUB_PAYMENT_RECONCILE_HOUR on; the drift counts go in the job's run (the console's
        sync-jobs page), the metrics (`hub_payment_reconciliation_drift`) and the log, the rows themselves to
        `hub payments reconcile --date`. A platform that does not give its statement fails the run, which is
        tried again at the next interval."""
        from hub.domain.dates import VN_TZ, utcnow
        from hub.sync import jobs

        if day is None:
            local = utcnow().astimezone(VN_TZ)
            if local.hour < self.settings.payment_reconcile_hour:
                return {}
            day = local.date() - timedelta(days=1)
            with self.sessions() as s:
                last = jobs.last_run(s, "reconcile_payments", ok_only=True)
            if last is not None and last.detail.get("day") == day.isoformat():
                return {}  # done for that day
        when = day

        def work() -> dict[str, Any]:
            counts: dict[str, Any] = {"day": when.isoformat()}
            failed = []
            for name in sorted(self.payment_platforms):
                try:
                    result = self.payments.reconcile(name, when, correlation_id=f"payments-reconcile-{when}")
                except DomainError as exc:
                    failed.append(f"{name}: {exc.detail}")
                    continue
                counts |= {f"{name}.{kind}": n for kind, n in result["summary"].items()}
                drift = {kind: n for kind, n in result["summary"].items() if kind != "matched" and n}
                if drift:
                    log.warning(
                        "a payment platform's statement differs from hub's ledger",
                        extra={"platform": name, "day": when.isoformat(), **drift},
                    )
            if failed:
                raise RuntimeError("; ".join(failed))
            return counts

        return self._job("reconcile_payments", work)

    def check_payments(self) -> dict[str, int]:
        return self._job(
            "check_payments",
            lambda: self.payments.check_pending(correlation_id=f"payments-check-{uuid.uuid4().hex[:12]}"),
        )

    def poll_edoc_status(self) -> dict[str, int]:
        """Take the receivers' status notices about the documents hub sent (a scheduled job; `hub edocs poll`).
        Nothing to ask when no document exchange platform is configured (production)."""
        if self.settings.mode == "production" and not self.settings.document_exchange_url:
            return {}
        return self._job(
            "poll_edoc_status",
            lambda: self.edoc_status.poll(correlation_id=f"edoc-status-{uuid.uuid4().hex[:12]}"),
        )

    def anchor_audit_log(self) -> dict[str, int]:
        """Note the access log's head outside the database (a scheduled job; `hub audit verify` checks the notes)."""
        from hub.services import audit

        def work() -> dict[str, int]:
            with db.reading_session(self.sessions) as s:
                noted = audit.anchor(s, self.settings.effective_audit_anchor_file)
            if noted is None:
                return {"anchored": 0}
            # the same note in the log, which production ships to a log server out of the database's reach
            log.info("access log head noted", extra={"audit_head_id": noted["id"], "audit_head": noted["chain_hash"]})
            return {"anchored": 1, "head_id": noted["id"]}

        return self._job("anchor_audit_log", work)

    def remove_personal_data(self) -> dict[str, int]:
        """Closed dossiers past HUB_PERSONAL_DATA_RETENTION_DAYS lose their personal data (a scheduled job, off at
        0; `hub dossiers redact` runs it by hand), in transactions of 500 dossiers."""
        days = self.settings.personal_data_retention_days
        if not days:
            return {}
        return self._job("remove_personal_data", lambda: redact_all(self.sessions, days))

    def poll_portal(self, since: datetime | None = None) -> dict[str, int]:
        """Ask the portal for dossiers filed for the routed agencies (a scheduled job; `hub poll`): since `since`
        (UTC), or as far back as hub.sync.polling says."""
        from hub.sync.polling import poll_portal

        def work() -> dict[str, int]:
            counts = poll_portal(self, since=since)
            if counts["new_events"]:
                self.wake()
            return counts

        return self._job("poll_portal", work)

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()
        elif self._waker is not None:
            self._waker.wake()

    def run_job_soon(self, name: str) -> bool:
        """Have a worker run scheduled job `name` now, as its schedule would (an operator's "run now"; its run is
        recorded as any other): embedded, in this process's worker thread after its current round, never beside
        its own scheduled run; distributed, as the job's Celery task, for the first worker free. False when
        nothing here can take it (the embedded worker off, a worker process, the broker unreachable)."""
        if name not in JOB_NAMES:
            raise ValueError(f"unknown job {name!r}")
        if self.worker is not None:
            return self.worker.run_soon(name)
        if self._celery is None:
            return False
        from kombu.exceptions import KombuError
        from redis.exceptions import RedisError

        try:
            self._celery.send_task(f"hub.{name}")
        except (KombuError, RedisError, OSError) as exc:  # the broker down: the operator is told
            log.warning("could not send job %s to the workers: %s", name, exc)
            return False
        return True

    def _take_over(self, url: str) -> Presence | None:
        """SQLite: if no other process delivers from this database, what is in flight was left by one that died
        (kill -9, power cut): back in line now rather than after its lease — and so are the payments whose creation
        it was asking the platform for (their INIT claims), which the client's retry then makes at once."""
        path = db.sqlite_path(url)
        if path is None:
            return None
        try:
            presence = Presence(path)
        except OSError as exc:  # a read-only directory: leases run out as on PostgreSQL
            log.warning("cannot keep the delivery lock file beside the database: %s", exc)
            return None
        try:
            if presence.alone():
                from hub.services.payments import release_payment_claims

                with self.sessions.begin() as s:
                    released = outbox.release_all(s)
                    claims = release_payment_claims(s)
                if released:
                    log.warning(
                        "deliveries left in flight by a process that stopped are back in line",
                        extra={"rows": released},
                    )
                if claims:
                    log.warning(
                        "payments a process that stopped was creating at their platform can be asked for again",
                        extra={"payments": claims},
                    )
            presence.join()
        except OSError as exc:  # a file system without flock (some network mounts): leases run out instead
            presence.close()
            log.warning("cannot lock the delivery lock file beside the database: %s", exc)
            return None
        except BaseException:
            presence.close()
            raise
        return presence

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self._presence is not None:
            self._presence.close()
        if self._waker is not None:
            self._waker.stop()
        self.relay.close()
        self.portal.close()
        self.one_stop.close()
        self.document_exchange.close()
        self.population.close()
        if self.sms is not None:
            self.sms.close()
        self.signatures.close()
        for platform in self.payment_platforms.values():
            platform.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._inline is not None:
            self._inline.close()
        self.quota.close()
        if self._paces is not None:
            self._paces.close()
        if self.shared_waits is not None:
            self.shared_waits.close()
        self.engine.dispose()


def one_stop_system(c: Claimed) -> str:
    """Which one-stop system a message goes to (the endpoint its route gave when it was filed; one filed
    unroutable is resolved when delivered, and told apart by nothing but its destination)."""
    endpoint = c.payload.get("endpoint")
    return f"{ONE_STOP} {endpoint}" if isinstance(endpoint, str) else ONE_STOP


def _celery_for(settings: Settings) -> Any:
    from hub.sync.celery_app import make_celery

    return make_celery(settings)
