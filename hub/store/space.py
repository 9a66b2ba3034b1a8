"""Room for the database to grow. A database whose disk is full refuses every write: hub answers 503
`storage_full` (nothing was recorded, the client sends it again later with the same key) and says so where an
operator looks — `/readyz` (`disk`), `/metrics`, `hub check` — instead of a generic "database unavailable".

On SQLite hub sees the free space of the database file's volume, and holds itself unready below a reserve
(`HUB_DISK_RESERVE_MB`): the write-ahead log and the checkpoint that copies it back need room of their own. A
PostgreSQL server's disk is its own monitoring's; there hub knows only that a write failed for want of it."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

DISK_FULL_SQLSTATE = "53100"  # PostgreSQL's disk_full
HELD_SECONDS = 30.0  # after a write failed for want of space, how long hub reports it (PostgreSQL; see `check`)
MIB = 1_048_576


def out_of_space(exc: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's, or the driver's own) is its disk being full: SQLite's SQLITE_FULL,
    PostgreSQL's disk_full (e.g. "could not extend file … No space left on device")."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return getattr(orig, "sqlstate", None) == DISK_FULL_SQLSTATE


class DiskSpace:
    """The database's room, for readiness and metrics. `database_file`: the SQLite file (None on PostgreSQL)."""

    def __init__(self, database_file: Path | None, reserve_bytes: int) -> None:
        self.database_file = database_file
        self.reserve_bytes = reserve_bytes
        self.errors = 0  # writes refused for want of space, in this process
        self._lock = threading.Lock()
        self._full_at: float | None = None  # time.monotonic() of the last refusal
        self._free_at_failure: int | None = None

    def free_bytes(self) -> int | None:
        """Free space on the SQLite file's volume (what an unprivileged process may use); None on PostgreSQL."""
        if self.database_file is None:
            return None
        try:
            return shutil.disk_usage(self.database_file.parent).free
        except OSError:
            return None

    def note_full(self) -> None:
        """A write was refused for want of space."""
        free = self.free_bytes()
        with self._lock:
            self.errors += 1
            self._full_at = time.monotonic()
            self._free_at_failure = free

    def check(self) -> str:
        """ "ok", or "full: …" saying why hub cannot take writes now."""
        free = self.free_bytes()
        if free is not None and free < self.reserve_bytes:
            reserve = self.reserve_bytes // MIB
            return f"full: {free / MIB:.1f} MiB free on the database's volume, below the reserve of {reserve} MiB"
        with self._lock:
            full_at, free_then = self._full_at, self._free_at_failure
        if full_at is None:
            return "ok"
        ago = time.monotonic() - full_at
        if free is not None and free_then is not None:
            # SQLite: until room has been made since the refusal (a file deleted, the volume grown)
            if free <= free_then + MIB:
                return f"full: a write was refused for want of disk space {ago:.0f} s ago; no room made since"
            return "ok"
        if ago < HELD_SECONDS:  # PostgreSQL: hub cannot see its disk; say what it last met, for a while
            return f"full: the database refused a write for want of disk space {ago:.0f} s ago"
        return "ok"
