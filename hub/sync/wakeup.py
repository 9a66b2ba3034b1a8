"""Wake-ups for distributed mode: after a commit, ask a Celery worker to drain. Coalesced in a background
thread so a burst of requests sends few messages and a broker outage never blocks or fails a request (the
workers' own ticker drains anyway: the outbox, not Redis, is the source of truth)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

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
