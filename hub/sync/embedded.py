"""The embedded worker: one thread in the hub process running the same drain function as the Celery task."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import OperationalError

from hub.logs import Outage
from hub.sync.relay import Relay

log = logging.getLogger("hub.worker")


class Presence:
    """Which processes deliver from this SQLite database now, known from a lock file beside it: each such process
    holds a shared `flock` on it for as long as it lives, and the kernel lets go of it when the process dies,
    kill -9 included. A process that starts and gets the lock exclusively is the only one: whatever the outbox
    holds in flight was claimed by a process that is gone, and can go back in line at once instead of after its
    lease (HUB_RELAY_LEASE_SECONDS) — so a hub restarted after a crash resumes delivering straight away.

    SQLite only: its processes share one machine. On PostgreSQL workers on other machines hold leases, and those
    run out as they do."""

    def __init__(self, database: Path) -> None:
        self._fd = os.open(f"{database}.workers.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def alone(self) -> bool:
        """Take the lock exclusively if no other process holds it; then `join` (or `close`) must follow."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def join(self) -> None:
        """Hold the lock shared from now on, beside any other delivering process."""
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def close(self) -> None:
        os.close(self._fd)  # lets go of the lock


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
        self.last_drain: float | None = None  # time.monotonic() when a drain last started

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

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
        database = Outage(log, "embedded worker: database")  # said once a minute, not on every tick
        while not self._stop.is_set():
            claimed = 0
            self.last_drain = time.monotonic()
            try:
                claimed = self.relay.drain()
                database.ok()
            except OperationalError as exc:  # down, restarting, unreachable: try again on the next tick
                database.failed(exc.orig)
            except Exception:
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
