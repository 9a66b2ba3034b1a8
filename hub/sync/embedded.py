"""The embedded worker: one thread in the hub process running the same drain function as the Celery task."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from hub.logs import Outage
from hub.sync.relay import Relay
from hub.sync.workers import WorkerSeen

log = logging.getLogger("hub.worker")
SWEEP_AFTER = 3600.0  # seconds: a note this old is of a process long gone, and is removed by whoever reads it


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


class JobsLock:
    """Which `hub serve` process on this SQLite database runs the scheduled jobs (polling, reconciliation, payment
    checks…): the one holding an exclusive `flock` on a lock file beside it, taken when free and kept for the
    process's life — the kernel lets go of it when the process dies, kill -9 included, and another takes it at its
    next round. With `--workers N` they ran N times an interval, each asking the portal about every open dossier.
    A file system without flock: every process runs them, as before."""

    def __init__(self, database: Path) -> None:
        self._path = f"{database}.jobs.lock"
        self._fd: int | None = None
        self._held = False
        self._closed = False  # closed: never taken again (a jobs thread still running must not reopen it)

    def held(self) -> bool:
        """Whether this process runs the scheduled jobs now (taking the lock if it is free)."""
        if self._closed:
            return False
        if self._held:
            return True
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            log.warning("cannot lock %s (every process runs the scheduled jobs): %s", self._path, exc)
            self._held = True
            return True
        self._held = True
        return True

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)  # lets go of the lock
            self._fd, self._held = None, False


class PgJobsLock:
    """JobsLock for embedded workers on PostgreSQL (no broker: `hub serve --workers N` on one or more machines): a
    session-level advisory lock held by a connection of its own, for the process's life. PostgreSQL lets go of it
    when that connection ends (the process dies, the database restarts); the connection is checked at each round
    and, gone, the lock is tried again — so at most one process runs the jobs, and one always does."""

    KEY = 0x4855_424A_4F42  # "HUBJOB"
    TRY = f"SELECT pg_try_advisory_lock({KEY})"

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self._engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._conn: Any = None
        self._held = False
        self._closed = False  # closed: never taken again (a jobs thread still running must not open a new session)
        self._outage = Outage(log, "embedded worker: the scheduled jobs' lock")  # once a minute, not each round

    def held(self) -> bool:
        from sqlalchemy import text

        if self._closed:
            return False
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            if self._held:
                self._conn.execute(text("SELECT 1"))  # still the session that holds it
            else:
                self._held = bool(self._conn.execute(text(self.TRY)).scalar())
        except Exception as exc:  # noqa: BLE001 - the connection (and the lock with it) is gone: next round
            self._outage.failed(exc.__class__.__name__)
            self._drop()
            return False
        self._outage.ok()
        return self._held

    @classmethod
    def holders(cls, url: str) -> list[dict[str, Any]]:
        """The sessions holding the lock on this database now (an advisory lock is per database: hubs on other
        databases of the same server hold theirs) — `hub workers` on PostgreSQL without a broker: one while a
        `hub serve` delivers from this database — its session's pid, the address it connects from (when the role
        may see it) and since when."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT l.pid, host(a.client_addr) AS address, a.backend_start FROM pg_locks l "
                        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                        "AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.objsubid = 1"
                    ),
                    {"high": cls.KEY >> 32, "low": cls.KEY & 0xFFFF_FFFF},
                ).mappings()
                return [
                    {"pid": r["pid"], "address": r["address"],
                     "since": r["backend_start"].isoformat(timespec="seconds") if r["backend_start"] else None}
                    for r in rows
                ]  # fmt: skip
        finally:
            engine.dispose()

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        self._conn, self._held = None, False

    def close(self) -> None:
        self._closed = True
        if self._held and self._conn is not None:
            from sqlalchemy import text

            with suppress(Exception):  # let go now, not once PostgreSQL has ended the session: the next process
                self._conn.execute(text(f"SELECT pg_advisory_unlock({self.KEY})"))  # takes it at its next round
        self._drop()  # the session ends: PostgreSQL lets go of the lock (if it is still held)
        self._engine.dispose()


class FileRoster:
    """The embedded workers delivering from one SQLite database — one per `hub serve` process, so N with
    `--workers N` — each noting its sign of life once a second in a small file beside the database
    (`hub.db.workers.d/<pid>.json`), as distributed workers do in Redis: one whose note is older than the
    time-to-live (killed, frozen) drops out of the list; notes of processes long gone are swept by readers.

    A note is written over itself, at a fixed size padded with blanks: after its first write it never takes more
    room on the disk — it must not compete with the database for the last bytes of a full volume (ADR 0023)."""

    NOTE_BYTES = 512

    def __init__(self, database: Path, *, ttl: float) -> None:
        self.dir = Path(f"{database}.workers.d")
        self.ttl = ttl
        self._fd: int | None = None
        self._size = self.NOTE_BYTES

    def beat(self, *, name: str, host: str, pid: int, last_drain: float | None) -> None:
        """Note this worker alive now (`last_drain`: the wall-clock time a drain last started)."""
        note = {"name": name, "host": host, "pid": pid, "beat": time.time(), "last_drain": last_drain}
        data = json.dumps(note).encode()
        self._size = max(self._size, len(data))
        if self._fd is None:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(self.dir / f"{pid}.json", os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._fd, data.ljust(self._size), 0)  # JSON allows the trailing blanks

    def leave(self, pid: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with suppress(OSError):
            (self.dir / f"{pid}.json").unlink()

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        """A note; read again once if caught half-written (it is written over itself)."""
        try:
            note: dict[str, Any] = json.loads(path.read_bytes())
        except ValueError:
            note = json.loads(path.read_bytes())
        return note

    def seen(self) -> list[WorkerSeen]:
        now = time.time()
        found: list[WorkerSeen] = []
        try:
            notes = list(self.dir.glob("*.json"))
        except OSError:
            return found
        for path in notes:
            try:
                note = self._read(path)
                age = now - float(note["beat"])
                last = note.get("last_drain")
                seen = WorkerSeen(
                    str(note["name"]),
                    str(note["host"]),
                    int(note["pid"]),
                    1,
                    round(max(0.0, age), 1),
                    None if last is None else round(max(0.0, now - float(last)), 1),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # gone meanwhile, or not a note
            if age > SWEEP_AFTER:
                with suppress(OSError):
                    path.unlink()
            if age <= self.ttl:
                found.append(seen)
        return sorted(found, key=lambda w: w.pid)


class EmbeddedWorker:
    def __init__(
        self,
        relay: Relay,
        poll_interval: float = 1.0,
        periodic: list[tuple[float, Callable[[], object]]] | None = None,
        roster: FileRoster | None = None,
        jobs_lock: JobsLock | PgJobsLock | None = None,
    ) -> None:
        self.relay = relay
        self.jobs_lock = jobs_lock  # None: this process runs the scheduled jobs
        self.poll_interval = poll_interval
        self.periodic = [(every, job, [time.monotonic() + every]) for every, job in (periodic or []) if every > 0]
        # every job by its name, those off their schedule (interval 0) too: an operator may run any of them now
        self.jobs: dict[str, Callable[[], object]] = {getattr(job, "__name__", ""): job for _, job in periodic or []}
        self._asked: list[str] = []  # jobs an operator asked to run now, in the order asked
        self._asked_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-embedded-worker", daemon=True)
        # the scheduled jobs in a thread of their own: a reconciliation asking a slow portal about every open dossier
        # (minutes), a poll taking in a large listing, do not hold deliveries back meanwhile
        self._jobs_wake = threading.Event()
        self._jobs_thread = threading.Thread(target=self._run_jobs, name="hub-embedded-jobs", daemon=True)
        self.last_drain: float | None = None  # time.monotonic() when a drain last started
        self.host = socket.gethostname()
        self.name = f"embedded@{self.host}"
        self.roster = roster
        # its sign of life from a thread of its own: a long drain (a slow peer) is not a dead worker
        self._beat = threading.Thread(target=self._beating, name="hub-embedded-beat", daemon=True)

    def seen(self) -> WorkerSeen:
        """This worker as a roster lists it."""
        last = self.last_drain
        drained = None if last is None else round(time.monotonic() - last, 1)
        return WorkerSeen(self.name, self.host, os.getpid(), 1, 0.0, drained)

    def _beating(self) -> None:
        roster, failing = self.roster, False
        if roster is None:
            return
        while self._thread.is_alive() and not self._stop.is_set():
            last = self.last_drain
            try:
                roster.beat(
                    name=self.name,
                    host=self.host,
                    pid=os.getpid(),
                    last_drain=None if last is None else time.time() - (time.monotonic() - last),
                )
                failing = False
            except OSError as exc:
                if not failing:  # once, not every second
                    log.warning("embedded worker: cannot note its sign of life beside the database: %s", exc)
                failing = True
            self._stop.wait(1.0)  # well inside the time-to-live (5 s at least)
        roster.leave(os.getpid())

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> EmbeddedWorker:
        self._thread.start()
        if self.jobs:
            self._jobs_thread.start()
        if self.roster is not None:
            self._beat.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def run_soon(self, name: str) -> bool:
        """Run job `name` in this worker's jobs thread after the job running there, if any — as on its schedule,
        never beside its own scheduled run — once however often asked meanwhile. False if this worker has no such
        job."""
        if name not in self.jobs:
            return False
        with self._asked_lock:
            if name not in self._asked:
                self._asked.append(name)
        self._jobs_wake.set()
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._jobs_wake.set()
        self._thread.join(timeout=30)
        if self._jobs_thread.is_alive():
            self._jobs_thread.join(timeout=30)
        if self.jobs_lock is not None:
            self.jobs_lock.close()
        if self._beat.is_alive():
            self._beat.join(timeout=5)

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
            if claimed == 0:
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def _run_jobs(self) -> None:
        """The scheduled jobs (portal polling, reconciliation…) when due, and those an operator asked for, one at a
        time, beside the deliveries."""
        while not self._stop.is_set():
            ours = self.jobs_lock is None or self.jobs_lock.held()  # another process on this database runs them
            for every, job, due in self.periodic if ours else ():
                if self._stop.is_set():
                    return
                if time.monotonic() >= due[0]:
                    due[0] = time.monotonic() + every
                    try:
                        job()
                    except Exception:
                        log.exception("embedded worker: scheduled job failed")
            with self._asked_lock:
                asked, self._asked = self._asked, []
            for name in asked:  # asked by an operator: run now
                try:
                    self.jobs[name]()
                except Exception:
                    log.exception("embedded worker: job run on request failed")
            self._jobs_wake.wait(self.poll_interval)
            self._jobs_wake.clear()
