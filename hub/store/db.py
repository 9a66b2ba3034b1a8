"""Engine and session factory for SQLite (embedded) and PostgreSQL (distributed), and schema migration."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


IDLE_PING_SECONDS = 5.0
SqliteSync = Literal["full", "normal"]  # PRAGMA synchronous of hub's SQLite connections


# A commit that finds this many pages in SQLite's write-ahead log copies them into the database file itself (and
# syncs it) before it returns: at SQLite's default of 1,000 pages one pre-fill commit in ~200 took 10 ms instead
# of 0.4. A process that runs a WalCheckpointer copies the log back in a background thread long before it gets
# here, and raises the limit to this (the backstop, should its checkpointer fall behind); others keep SQLite's.
WAL_AUTOCHECKPOINT_PAGES = 40_000
# The log's size at which the checkpointer starts it over (RESTART), holding writers back meanwhile: a few ms
# each time. An access-log entry writes ~5 pages (the row and two indexes' leaves), so under a steady 900 warm
# pre-fills a second the log gains ~4,800 pages a second: at 2,000 pages that was a RESTART every half second
# and 2% of the time with writers held back (warm in-hub p999 10–11 ms, p99 1.3); at 16,000 (~64 MB of log)
# one every 3–4 s (p999 1.5–2.2 ms, p99 1.0–1.1; same run length, same machine).
WAL_RESTART_PAGES = 16_000
# What of the log's file is kept once it has been started over: a burst the checkpointer could not keep up with
# (a backlog delivered after an outage) may have grown it to the backstop's ~160 MB, which SQLite would otherwise
# keep on disk for good — room a nearly full volume needs back
WAL_SIZE_LIMIT_BYTES = WAL_RESTART_PAGES * 4096
CHECKPOINT_EVERY_SECONDS = 0.25


def make_engine(
    url: str,
    *,
    pool_size: int = 20,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
    wal_autocheckpoint: int = 1000,
    sqlite_synchronous: SqliteSync = "full",
) -> Engine:
    """`pool_size` connections stay open: at least the requests and deliveries a process runs at once (the API's
    threadpool, the relay's concurrency), or the overflow is opened and closed on every use — a new PostgreSQL
    backend per request. A PostgreSQL connection idle longer than `idle_ping_seconds` is pinged before use.
    `wal_autocheckpoint`: SQLite's, in pages (WAL_AUTOCHECKPOINT_PAGES where a WalCheckpointer runs).
    `sqlite_synchronous`: "full", each commit on disk before it returns; "normal", a power cut (not a killed
    process) may take the last commits back (ADR 0019)."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)
        _sqlite_serialized_writes(engine, wal_autocheckpoint, sqlite_synchronous)
        return engine
    # hide_parameters: a database error's message (logged, answered as a problem's code only) never carries the
    # values it was sent — a dossier's JSON with the owner's name and ID number, a consent's subject
    engine = create_engine(url, pool_size=pool_size, max_overflow=10, hide_parameters=True)
    _ping_when_idle(engine, idle_ping_seconds)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's `pool_pre_ping` costs a round trip on every checkout — one more per transaction, under load
    the dearest part of a short one. A connection back in the pool within the last few seconds was working then;
    only one idle longer (where a database restart or a firewall's idle cut hides) is pinged, and replaced if
    dead. A connection that dies while in use fails its statement; the pool then drops every connection opened
    before (SQLAlchemy invalidates the pool on a disconnect), and the API answers 503 `database_unavailable`."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("connection failed its ping") from exc
        if not alive:
            raise DisconnectionError("connection failed its ping")  # the pool opens another


def _sqlite_settings(dbapi_connection: Any, wal_autocheckpoint: int, *, busy_ms: int, synchronous: SqliteSync) -> None:
    dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL (the default): a commit is on disk before it returns, as a PostgreSQL commit is — a 202 or an
    # access-log entry committed before the answer survives a power cut, not only a killed process (ADR 0019)
    cur.execute("PRAGMA synchronous=FULL" if synchronous == "full" else "PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
    cur.execute(f"PRAGMA journal_size_limit={int(WAL_SIZE_LIMIT_BYTES)}")
    cur.close()


WRITE_WAIT_MS = 30_000  # how long a writer waits for SQLite's write lock before its request fails (503)
BEGIN_SLICE_MS = 20  # one wait for the write lock at BEGIN IMMEDIATE: SQLite's busy handler's dense first polls


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(exc)


def begin_immediate(execute: Callable[[str], Any]) -> None:
    """BEGIN IMMEDIATE on a SQLite connection (`execute`: its cursor's or its own), waiting up to WRITE_WAIT_MS for
    the write lock in waits of BEGIN_SLICE_MS, one after another. SQLite's busy handler sleeps 1, 2, 5, 10 … ms
    between its polls for the lock, then 100 ms at a time: a writer of one process that has waited a while sleeps
    through 100 ms at once while another process's writers take the lock again and again (callbacks applied by two
    `hub serve` processes on one database: p99 464 ms, against 70 ms in one). Each short wait starts the handler's
    polls over at a millisecond."""
    execute(f"PRAGMA busy_timeout={BEGIN_SLICE_MS}")
    deadline = time.monotonic() + WRITE_WAIT_MS / 1000
    try:
        while True:
            try:
                execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
    except BaseException:
        with suppress(sqlite3.Error):  # the first error is the one to tell (a broken connection fails this too)
            execute(f"PRAGMA busy_timeout={WRITE_WAIT_MS}")
        raise
    execute(f"PRAGMA busy_timeout={WRITE_WAIT_MS}")


def _sqlite_serialized_writes(engine: Engine, wal_autocheckpoint: int, synchronous: SqliteSync) -> None:
    """WAL + BEGIN IMMEDIATE: writers queue on the lock (`begin_immediate`) instead of failing on upgrade."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_settings(dbapi_connection, wal_autocheckpoint, busy_ms=WRITE_WAIT_MS, synchronous=synchronous)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # a reader (see `reading`) takes no write lock: it never waits for a writer, nor makes one wait
        if conn.get_execution_options().get("hub_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            begin_immediate(conn.connection.driver_connection.execute)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0] if "///" in url else ""
    return Path(path) if path and path != ":memory:" else None


ATTEMPT_SECONDS = 0.02  # a RESTART attempt's busy timeout: its first polls for the write lock are the dense ones


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database file from a thread of its own, a few times a second,
    so that no request's commit does it (SQLite's autocheckpoint runs inside the commit that crosses its limit).

    A PASSIVE checkpoint waits for no reader or writer, and none waits for it; but under a steady stream of
    writes it never catches up with the log's end, and only a checkpoint that does lets the next writer start
    the log over. So once the log holds more than `restart_pages`, a RESTART checkpoint follows the passive one:
    it holds writers back while it copies the few pages written since and waits for readers to leave the log —
    in attempts of ATTEMPT_SECONDS, for at most `wait` seconds in all. One that cannot finish (a long read: an
    audit verification, an export) is tried again only after a pause that doubles from half a second up to a
    minute, so a long reader does not make writers wait again and again. A process that writes (the API, the
    embedded worker) runs one; others rely on the autocheckpoint."""

    def __init__(
        self,
        url: str,
        *,
        every: float = CHECKPOINT_EVERY_SECONDS,
        restart_pages: int = WAL_RESTART_PAGES,
        wait: float = 0.2,
    ) -> None:
        path = sqlite_path(url)
        if path is None:
            raise ValueError("a WAL checkpointer needs a SQLite database file")
        self._path = path
        self._every = every
        self._restart_pages = restart_pages
        self._wait = wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-wal-checkpoint", daemon=True)
        self._restart_after = 0.0  # monotonic time before which no RESTART is tried (after one came back busy)
        self._busy_pause = 0.5
        # for /metrics: the log's size at the last round, and how the rounds that tried to start it over ended
        self.log_pages = 0
        self.restarts = {"ok": 0, "busy": 0}

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One round: copy back what the log holds; start it over once it has grown past `restart_pages`."""
        _busy, log_pages = self._pragma(conn, "PASSIVE")
        self.log_pages = log_pages
        if log_pages <= self._restart_pages or time.monotonic() < self._restart_after:
            return
        # Short attempts, one after another, for up to `wait`: SQLite's busy handler polls for the write lock
        # ever more sparsely (25–100 ms apart after the first few), and writers committing back to back — each
        # holding the lock through its fsync — win it between polls; dense polls find the gap between two
        # commits. An attempt that gets the lock but meets a reader holds writers back for one attempt only.
        deadline = time.monotonic() + self._wait
        while True:
            busy, _ = self._pragma(conn, "RESTART")
            if not busy:
                self._busy_pause = 0.5
                self.restarts["ok"] += 1
                self.log_pages = 0
                return
            if time.monotonic() >= deadline:
                break
        self.restarts["busy"] += 1
        self._restart_after = time.monotonic() + self._busy_pause
        self._busy_pause = min(self._busy_pause * 2, 60.0)

    @staticmethod
    def _pragma(conn: sqlite3.Connection, mode: str) -> tuple[bool, int]:
        """(whether a reader or writer kept it from finishing, the pages the log held)."""
        # fetchall: a statement left unfinished keeps a read snapshot open, and no writer could start the log over
        ((busy, log_pages, _copied),) = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        return bool(busy), int(log_pages)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self._every):
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, timeout=min(self._wait, ATTEMPT_SECONDS), isolation_level=None)
                self.checkpoint(conn)
            except sqlite3.Error as exc:  # a locked or vanished file: the autocheckpoint still bounds the log
                log.debug("WAL checkpoint skipped: %s", exc)
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()


@contextmanager
def reading(engine: Engine, *, snapshot: bool = False) -> Iterator[Connection]:
    """A connection for reads that need no transaction of their own (a cache look-up, a consent check). On
    PostgreSQL in autocommit: one round trip per statement, where a transaction would add a BEGIN and a ROLLBACK
    (the two cost as much as the read). On SQLite a plain deferred BEGIN instead of the writers' BEGIN IMMEDIATE.

    `snapshot`: the statements must see one moment — a dossier with its events and their deliveries read in
    three statements, each in autocommit its own snapshot, could show status 5 beside a history that ends at 4
    when a commit lands between them. On PostgreSQL a read-only REPEATABLE READ transaction then (never waits,
    never makes a writer wait); SQLite's deferred BEGIN already holds one snapshot from the first read."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            if snapshot:
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            conn.execution_options(hub_read_only=True)
        yield conn


class RawTransaction:
    """A transaction on one pooled DBAPI connection, for a hot write path whose statements are prebuilt: no
    SQLAlchemy work per statement (a prebuilt Core statement still costs ~0.1 ms of Python to execute, an ORM
    session's begin and commit another ~0.2 ms — more than SQLite's own work on a small insert and commit).
    Statements are SQL strings in the dialect's own parameter style (`compiled` makes them from Core
    statements); parameters go to the driver as they are, so values must already be in the driver's form
    (`bind_processors`)."""

    def __init__(self, engine: Engine, cursor: Any) -> None:
        self.dialect = engine.dialect
        self._cursor = cursor

    def execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement; returns the cursor (fetch from it before the next statement)."""
        self._cursor.execute(sql, params)
        return self._cursor

    def executemany(self, sql: str, rows: list[Any]) -> None:
        self._cursor.executemany(sql, rows)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A Core statement compiled once for a dialect: its SQL and how to lay out its parameters."""

    sql: str
    positional: tuple[str, ...] | None  # parameter names in order, for a positional paramstyle (SQLite's qmark)
    defaults: dict[str, Any]  # the statement's own values (a LIMIT's, say)

    def params(self, values: dict[str, Any] | None = None) -> Any:
        merged = {**self.defaults, **values} if values else self.defaults
        return merged if self.positional is None else tuple(merged[name] for name in self.positional)


def compiled(statement: Any, dialect: Any, keys: list[str] | None = None) -> Compiled:
    c = statement.compile(dialect=dialect, column_keys=keys)
    defaults = {k: v for k, v in c.params.items() if v is not None}
    return Compiled(c.string, tuple(c.positiontup) if c.positional and c.positiontup else None, defaults)


def bind_processors(table: Any, dialect: Any) -> dict[str, Callable[[Any], Any]]:
    """Per column of `table`, what turns a Python value into the driver's (types with none are left out): what
    SQLAlchemy applies to each parameter, so that rows written through a RawTransaction read back the same."""
    out: dict[str, Callable[[Any], Any]] = {}
    for column in table.columns:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            out[column.key] = process
    return out


@dataclass(frozen=True, slots=True)
class Prebuilt:
    """A Core statement on one table compiled for a dialect, with its columns' bind processors: rows of Python
    values in, the driver's parameters out."""

    statement: Compiled
    process: dict[str, Callable[[Any], Any]]

    def params(self, values: dict[str, Any]) -> Any:
        process = self.process
        return self.statement.params({k: process[k](v) if k in process else v for k, v in values.items()})

    def executemany(self, tx: RawTransaction, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            tx.executemany(self.statement.sql, [self.params(r) for r in rows])


# keyed by the statement's id, and holding the statement: while its entry lives, no other object takes that id
_PREBUILT: dict[tuple[int, str, tuple[str, ...]], tuple[Any, Prebuilt]] = {}


def prebuilt(statement: Any, table: Any, dialect: Any, keys: Sequence[str]) -> Prebuilt:
    """`statement` (an insert or upsert into `table`, with values for `keys`) compiled once per dialect. A
    statement that needs a value no key gives — a column's Python-side default, which SQLAlchemy would compute
    per row — is refused here rather than failing on its first row."""
    cache_key = (id(statement), dialect.name, tuple(keys))
    found = _PREBUILT.get(cache_key)
    if found is not None:
        return found[1]
    # no RETURNING of the new key: nothing reads it (and executemany drops it)
    inline = statement.inline() if hasattr(statement, "inline") else statement
    built = compiled(inline, dialect, list(keys))
    needed = set(built.positional or inline.compile(dialect=dialect, column_keys=list(keys)).params)
    missing = needed - set(keys) - set(built.defaults)
    if missing:
        raise ValueError(f"prebuilt statement needs values no key gives: {sorted(missing)}")
    process = {k: v for k, v in bind_processors(table, dialect).items() if k in keys}
    _PREBUILT[cache_key] = (statement, Prebuilt(built, process))
    return _PREBUILT[cache_key][1]


@contextmanager
def raw_transaction(engine: Engine) -> Iterator[RawTransaction]:
    """Commit what the block does on one pooled DBAPI connection, or roll it back. The pool's checkout events run
    (the idle ping); on SQLite the writers' BEGIN IMMEDIATE is emitted here, as the engine's `begin` event does for
    sessions. A driver error leaves as SQLAlchemy's (DBAPIError.instance, as if through a session, so the API's
    handlers answer 503 `database_unavailable` alike); a lost connection is dropped from the pool."""
    dialect = engine.dialect
    dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
    conn = engine.raw_connection()
    cursor = None
    try:
        cursor = conn.cursor()
        if dialect.name == "sqlite":
            begin_immediate(cursor.execute)
        yield RawTransaction(engine, cursor)
        conn.commit()
    except dbapi_error as exc:
        lost = dialect.is_disconnect(exc, conn.dbapi_connection, cursor)  # type: ignore[arg-type]
        if lost:  # as SQLAlchemy does on a disconnect: every connection opened before this one is replaced too
            engine.pool._invalidate(conn, exc)
        else:
            _quiet_rollback(conn, dbapi_error)
        raise DBAPIError.instance(None, None, exc, dbapi_error, connection_invalidated=lost, dialect=dialect) from exc
    except BaseException:
        _quiet_rollback(conn, dbapi_error)
        raise
    finally:
        if cursor is not None:
            with suppress(Exception):
                cursor.close()
        conn.close()  # back to the pool (or gone, if invalidated)


class InlineWriter:
    """Small SQLite writes done by the calling thread itself — the API's event loop — when SQLite's write lock is
    free at that instant, else refused at once (the caller then queues the write for its group-commit thread).

    An access-log entry costs SQLite ~0.15 ms, and its log's fsync about as much again (synchronous=FULL, ADR
    0019); handing it to a thread and back costs as much again, plus the wait for the GIL and two wake-ups,
    which is most of a warm pre-fill's tail. The lock is asked for without waiting (busy timeout 0), so the loop
    never blocks on another writer; callers use it only while their group commit is idle, so under load writes
    still share commits.
    One connection of its own, used by one thread at a time."""

    def __init__(self, engine: Engine, wal_autocheckpoint: int, sqlite_synchronous: SqliteSync = "full") -> None:
        path = sqlite_path(str(engine.url))
        if path is None:
            raise ValueError("inline writes need a SQLite database file")
        self._path = path
        self._engine = engine
        self._wal_autocheckpoint = wal_autocheckpoint
        self._synchronous: SqliteSync = sqlite_synchronous
        self._conn: sqlite3.Connection | None = None

    def try_write(self, write: Callable[[RawTransaction], object]) -> bool:
        """Run `write` in a transaction of its own and commit it, if the write lock is free now; False if it was
        not (nothing done). A database error leaves as SQLAlchemy's, as from `raw_transaction`."""
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
            _sqlite_settings(conn, self._wal_autocheckpoint, busy_ms=0, synchronous=self._synchronous)
        cursor = conn.cursor()
        try:
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return False
                raise
            try:
                write(RawTransaction(self._engine, cursor))
                cursor.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    cursor.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.close()  # a fresh connection next time
            raise DBAPIError.instance(None, None, exc, sqlite3.Error, dialect=self._engine.dialect) from exc
        finally:
            with suppress(sqlite3.Error):
                cursor.close()
        return True

    def close(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


def _quiet_rollback(conn: Any, dbapi_error: type[Exception]) -> None:
    try:
        conn.rollback()
    except dbapi_error as exc:  # the connection is in doubt: the pool must not hand it out again
        log.debug("rollback failed: %s", exc)
        conn.invalidate(exc)


@contextmanager
def reading_session(sessions: sessionmaker[Session], *, snapshot: bool = False) -> Iterator[Session]:
    """An ORM session over `reading`'s connection: for views that only read (a dossier with its history)."""
    with reading(sessions.kw["bind"], snapshot=snapshot) as conn, Session(bind=conn) as session:
        yield session


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def unavailable(exc: BaseException) -> bool:
    """Whether an error is the database not answering (stopped, restarting, unreachable, refusing connections) —
    an outage to report in a line, where any other error is a fault to report with its traceback."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc, OperationalError))


UPGRADE_LOCK = 0x4855_424D_4947  # "HUBMIG": serializes schema upgrades on PostgreSQL (as audit.ADVISORY_LOCK_ID)


def migrations_engine(url: str) -> Engine:
    """The engine alembic migrates with. On SQLite, Python's driver runs DDL outside any transaction (it opens one
    only before an INSERT, UPDATE or DELETE), so a migration killed half-way (a crash, a power cut, a full disk)
    left its first tables or triggers in place and its revision not written: the next start failed on "already
    exists" — or, in a table that alembic rebuilds (copy, drop the old, rename the copy), with the table gone. Here
    the driver leaves transactions to us and every migration of the run goes into one BEGIN IMMEDIATE … COMMIT, as on
    PostgreSQL (`transactional_ddl`, env.py): a killed upgrade leaves the schema as it found it, and a second process
    upgrading at the same moment waits for the first, then finds nothing left to do. On PostgreSQL the run's
    transaction first takes an advisory lock (held to its end) for the same wait: replicas that each run `hub db
    upgrade` as they start (an orchestrator's init step) no longer fail on each other's tables."""
    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "begin")
        def _on_pg_begin(conn: Any) -> None:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")

    elif url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # no implicit transactions: ours, below, hold the DDL too

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            begin_immediate(conn.connection.driver_connection.execute)

    return engine


def code_head() -> str:
    """The revision of the code's newest migration, read from the migrations' file names (`0001_…`, `0002_…`: one
    line of history, each file's revision its number; a test holds this to alembic's own head) — without
    importing alembic, a third of a second of every command's start-up."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def stored_revision(engine: Engine) -> str | None:
    """The database's schema revision (alembic's `alembic_version` table), None on a database without one."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    with engine.connect() as conn:
        try:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        except (OperationalError, ProgrammingError) as exc:
            if "alembic_version" not in str(exc.orig):  # the database itself failed, not the table's absence
                raise
            return None  # no such table: a new database
    return str(rows[0]) if len(rows) == 1 else None


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply migrations up to `revision` (`hub db upgrade`); returns the revisions before and after. One log line
    when the schema changed (alembic's own lines, a dozen on a new database, are kept below INFO). A database
    already at the code's head is only read (alembic is not even loaded)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool)
    try:
        before = stored_revision(engine)
        if revision == "head" and before is not None and before == code_head():
            return before, before
        from alembic import command

        command.upgrade(alembic_config(url), revision)
        after = stored_revision(engine)
    finally:
        engine.dispose()
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)
    return before, after


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        rev: str | None = MigrationContext.configure(conn).get_current_revision()
        return rev


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    head: str | None = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    return head


def backup_sqlite(url: str, out: Path) -> dict[str, Any]:
    """A consistent copy of a SQLite database taken while hub runs (`VACUUM INTO`: one read snapshot, which in WAL
    mode holds no writer back; the copy is compacted), written beside `out` and renamed into place once checked
    with `PRAGMA integrity_check`. Returns what was copied."""
    source = sqlite_path(url)
    if source is None:
        raise ValueError("not a SQLite database file")
    if out.exists():
        raise FileExistsError(f"{out} exists; backups are never overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    conn = sqlite3.connect(source, timeout=30, isolation_level=None)
    try:
        conn.execute("VACUUM INTO ?", (str(partial),))
    finally:
        conn.close()
    copy = sqlite3.connect(partial, isolation_level=None)
    try:
        ((check,),) = copy.execute("PRAGMA integrity_check").fetchall()
        counts = {
            table: int(copy.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608 - fixed names
            for table in ("dossiers", "status_events", "outbox", "exchanges", "access_log")
        }
    finally:
        copy.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the copy failed its integrity check: {check}")
    os.replace(partial, out)
    return {"file": str(out), "bytes": out.stat().st_size, "seconds": round(time.monotonic() - started, 2), **counts}
