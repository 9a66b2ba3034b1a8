"""The embedded worker: one thread in the hub process running the same drain function as the Celery task."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hub.sync.relay import Relay

log = logging.getLogger("hub.worker")


class EmbeddedWorker:
    def __init__(
        self, relay: Relay, poll_interval: float = 1.0, periodic: list[tuple[float, Callable[[], object]]] | None = None
    ) -> None:
        self.relay = relay
        self.poll_interval = poll_interval
        self.periodic = [(every, job, [time.monotonic() + every]) for every, job in (periodic or []) if every > 0]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-embedded-worker", daemon=True)

    def start(self) -> EmbeddedWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            claimed = 0
            try:
                claimed = self.relay.drain()
            except Exception:  # the database may be briefly unavailable; try again on the next tick
                log.exception("embedded worker: drain failed")
            for every, job, due in self.periodic:  # scheduled jobs (portal polling), in this same thread
                if time.monotonic() >= due[0]:
                    due[0] = time.monotonic() + every
                    try:
                        job()
                    except Exception:
                        log.exception("embedded worker: scheduled job failed")
            if claimed == 0:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
