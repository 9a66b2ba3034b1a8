"""Celery application for distributed mode: `celery -A hub.sync.celery_app worker` (what `hub worker` runs).

Tasks carry no data: the outbox in the database is the source of truth, a task only says "drain now"."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from sqlalchemy.exc import OperationalError

from hub.logs import Outage
from hub.settings import Settings, load_settings
from hub.sync.broker import TRANSPORT

log = logging.getLogger("hub.celery")
DRAIN = "hub.drain"


def make_celery(settings: Settings) -> Celery:
    app = Celery("hub", broker=settings.broker_url or "redis://127.0.0.1:6379/0")
    app.conf.update(
        broker_transport=TRANSPORT,  # kombu's Redis transport, surviving a broker that drops twice in a row
        task_acks_late=False,  # a task carries no data: a lost one is asked for again by the ticker (ADR 0022)
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={
            "visibility_timeout": 3600,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
        },
        task_default_queue="hub",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.conf.hub_settings = settings
    return app


settings = load_settings()
app = make_celery(settings)
_runtime: Any = None
_runtime_lock = threading.Lock()


def runtime() -> Any:
    """The worker process's runtime (engine, adapters, relay), made once after fork."""
    global _runtime  # noqa: PLW0603 - one per worker process, made lazily after fork
    with _runtime_lock:
        if _runtime is None:
            from hub.runtime import Runtime

            _runtime = Runtime(settings, role="worker")
        return _runtime


@worker_init.connect
def _preload(**_: Any) -> None:
    """Import hub's wiring once in the worker's main process, before it forks its pool: the pool processes
    inherit the imported modules instead of each importing them again."""
    import hub.runtime  # noqa: F401


@worker_process_init.connect
def _build_runtime_early(**_: Any) -> None:
    """Build this pool process's runtime as soon as it is forked, in the background, so the first drain after a
    worker (re)starts does not pay for importing and wiring hub (0.8 s measured here, far more than a batch takes).
    In a thread: Celery gives a new process a few seconds to say it is up, and a database or WSDL that is slow to
    answer must not make it kill the process; a task that comes first waits on the same lock."""

    def build() -> None:
        try:
            runtime()
        except Exception as exc:  # noqa: BLE001 - the first task builds it again and reports what fails
            log.warning("worker process runtime not built at start (the first task tries again): %s", exc)

    threading.Thread(target=build, name="hub-runtime-init", daemon=True).start()


_database = Outage(log, "drain: database")  # this pool process's view of it, said once a minute


@app.task(name=DRAIN, bind=True)
def drain(self: Any) -> int:
    rt = runtime()
    try:
        rt.doorbell.answer(self.request.hostname)  # before the claim: what is committed from now on rings again
    except Exception as exc:  # noqa: BLE001 - Redis unreachable: the mark expires, the drain goes on
        log.warning("drain request mark not cleared: %s", exc)
    try:
        step: tuple[int, bool] = rt.relay.drain_step()
    except OperationalError as exc:  # the database down or restarting: the next tick tries again
        _database.failed(exc.orig)
        return 0
    _database.ok()
    claimed, more = step
    if more:
        self.app.send_task(DRAIN)  # more is due: keep going, and let other workers share it
    return claimed


@app.task(name="hub.poll_portal")
def poll_portal_task() -> dict[str, int]:
    """The polling fallback of the down-flow (idempotent: a dossier known unchanged creates nothing)."""
    counts: dict[str, int] = runtime().poll_portal()
    return counts


@app.task(name="hub.check_payments")
def check_payments_task() -> dict[str, int]:
    """Settle pending payments whose callback is late or lost, by asking the platform (idempotent)."""
    counts: dict[str, int] = runtime().check_payments()
    return counts


@app.task(name="hub.reconcile")
def reconcile_task() -> dict[str, Any]:
    """Compare open dossiers with the portal and repair what is safe (re-enqueues are idempotent)."""
    result: dict[str, Any] = runtime().reconcile()
    return result


@app.task(name="hub.reconcile_payments")
def reconcile_payments_task() -> dict[str, Any]:
    """The previous day's statement of each payment platform against hub's ledger, once a day (read-only)."""
    result: dict[str, Any] = runtime().reconcile_payments()
    return result


@app.task(name="hub.poll_edoc_status")
def poll_edoc_status_task() -> dict[str, int]:
    counts: dict[str, int] = runtime().poll_edoc_status()
    return counts


@app.task(name="hub.anchor_audit_log")
def anchor_audit_log_task() -> dict[str, int]:
    """Note the access log's head outside the database (in this worker's anchor file and log)."""
    counts: dict[str, int] = runtime().anchor_audit_log()
    return counts


@app.task(name="hub.remove_personal_data")
def remove_personal_data_task() -> dict[str, int]:
    """Closed dossiers past the retention period lose their personal data (off unless configured)."""
    counts: dict[str, int] = runtime().remove_personal_data()
    return counts


@app.task(name="hub.noop")
def noop() -> None:
    """Used by the benchmark as the broker's baseline."""


_ticker_stop = threading.Event()
stuck = threading.Event()  # the ticker found this worker's consumer stuck and stopped the worker (`hub worker`: 75)
COLD_AFTER_S = 60.0  # a warm shutdown that has not ended by then (the wedged consumer in it) is made a cold one


@worker_ready.connect
def _start_ticker(sender: Any = None, **_: Any) -> None:
    """Every poll interval, ask for a drain: retries come due and wake-ups may be lost with Redis."""

    import os
    import signal
    import socket

    import redis
    from celery.worker import state as worker_state

    from hub.sync import schedule
    from hub.sync.workers import ConsumerWatch, Roster, beat_ttl

    name = str(getattr(sender, "hostname", None) or f"celery@{socket.gethostname()}")
    processes = int(getattr(getattr(sender, "controller", None), "concurrency", None) or 1)
    from hub.sync.jobs import intervals

    jobs = [(f"hub.{job}", every) for job, every in intervals(settings).items()]

    def tick() -> None:
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
        roster = Roster(client, ttl=beat_ttl(settings.relay_poll_interval))
        _leave.append(lambda: roster.leave(name))
        due = {job: time.monotonic() + every for job, every in jobs}
        broker = Outage(log, "ticker: broker")  # said once a minute while Redis is down, not on every tick
        watch = ConsumerWatch(settings.worker_stuck_seconds, time.monotonic())
        while not _ticker_stop.wait(settings.relay_poll_interval):
            try:
                drained = roster.beat(name, host=socket.gethostname(), pid=os.getpid(), processes=processes)
                busy = len(worker_state.active_requests) >= processes
                if watch.beat(drained, busy=busy, now=time.monotonic()):
                    stop_stuck(drained)
                    return
                app.send_task(DRAIN)
                for job, every in jobs:
                    if every > 0 and time.monotonic() >= due[job]:
                        due[job] = time.monotonic() + every
                        if schedule.claim(client, job, every):  # one worker of the cluster per interval
                            app.send_task(job)
                broker.ok()
            except Exception as exc:  # noqa: BLE001 - broker down: try again on the next tick
                broker.failed(exc)
                watch.broker_down(time.monotonic())

    def stop_stuck(drained: float | None) -> None:
        log.critical(
            "consumer stuck: no drain started on this worker although asked every poll interval; stopping it for "
            "its supervisor to start it again (its leased deliveries go back in line)",
            extra={"worker": name, "last_drain_age_s": drained, "limit_s": settings.worker_stuck_seconds},
        )
        stuck.set()
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown: running tasks end first
        cold = threading.Timer(COLD_AFTER_S, os.kill, (os.getpid(), signal.SIGQUIT))
        cold.daemon = True
        cold.start()

    threading.Thread(target=tick, name="hub-ticker", daemon=True).start()


_leave: list[Any] = []  # how this worker drops out of the roster when it stops


@worker_shutdown.connect
def _stop_ticker(**_: Any) -> None:
    _ticker_stop.set()
    for leave in _leave:
        try:
            leave()
        except Exception as exc:  # noqa: BLE001 - Redis down: the beat expires by itself
            log.warning("worker not taken off the roster: %s", exc)


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    if _runtime is not None:
        _runtime.close()
