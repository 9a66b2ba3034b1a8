"""Wake-ups for distributed mode: after a commit, ask a Celery worker to drain. Coalesced in a background
thread so a burst of requests sends few messages and a broker outage never blocks or fails a request (the
workers' own ticker drains anyway: the outbox, not Redis, is the source of truth).

`Doorbell`: at most one drain request waits in the broker at a time. Under load the API commits far more often
than a worker can start a drain; without it every coalesced wake-up was a Celery message (publishing one cost
the API ~14% of its CPU in the ingest benchmark) and most of them made a worker claim an outbox it had just
emptied."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hub.wakeup")


class CoalescingWaker:
    def __init__(self, send: Callable[[], None], min_interval: float = 0.005) -> None:
        self._send = send
        self._min_interval = min_interval
        self._event = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="hub-wakeup", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        self._stop = True
        self._event.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._event.wait()
            if self._stop:
                return
            self._event.clear()
            try:
                self._send()
            except Exception as exc:  # noqa: BLE001 - broker down: the workers' ticker will pick the rows up
                log.warning("wake-up not sent: %s", exc)
                time.sleep(0.5)
            time.sleep(self._min_interval)


DRAIN_REQUESTED = "hub:drain:requested"


class Doorbell:
    """The API rings after its commits; a worker answers as its drain task starts, before it claims. A commit
    made before the answer is seen by that claim; one made after it rings again and sends a new request — so no
    committed row waits for the ticker, yet one request at a time sits in the queue. The mark expires after `ttl`
    seconds, so a request lost with the broker only delays the next one."""

    def __init__(self, redis: Any, send: Callable[[], None] | None, *, ttl: float = 10.0) -> None:
        """`send`: how to request a drain (None where this process only answers: a worker)."""
        self._redis = redis
        self._send = send
        self._ttl_ms = int(ttl * 1000)

    @property
    def redis(self) -> Any:
        """The Redis client it rings with (the workers' roster is read through it too)."""
        return self._redis

    def ring(self) -> None:
        if self._send is None:
            raise RuntimeError("this doorbell only answers")
        if self._redis.set(DRAIN_REQUESTED, b"1", nx=True, px=self._ttl_ms):
            try:
                self._send()
            except Exception:
                self._redis.delete(DRAIN_REQUESTED)  # not sent: the next commit must ring again
                raise

    def answer(self, worker: str | None = None) -> None:
        """`worker`: also mark, in the same round trip, that a drain started on it (hub.sync.workers)."""
        if worker is None:
            self._redis.delete(DRAIN_REQUESTED)
            return
        from hub.sync.workers import mark_drained

        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(DRAIN_REQUESTED)
        mark_drained(pipe, worker)
        pipe.execute()
