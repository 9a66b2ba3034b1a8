"""Engine and session factory for SQLite (embedded) and PostgreSQL (distributed), and schema migration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


IDLE_PING_SECONDS = 5.0


def make_engine(url: str, *, pool_size: int = 20, idle_ping_seconds: float = IDLE_PING_SECONDS) -> Engine:
    """`pool_size` connections stay open: at least the requests and deliveries a process runs at once (the API's
    threadpool, the relay's concurrency), or the overflow is opened and closed on every use — a new PostgreSQL
    backend per request. A PostgreSQL connection idle longer than `idle_ping_seconds` is pinged before use."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_serialized_writes(engine)
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=10)
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


def _sqlite_serialized_writes(engine: Engine) -> None:
    """WAL + BEGIN IMMEDIATE: writers queue on the lock (busy timeout) instead of failing on upgrade."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # a reader (see `reading`) takes no write lock: it never waits for a writer, nor makes one wait
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("hub_read_only") else "BEGIN IMMEDIATE")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads that need no transaction of their own (a cache look-up, a consent check). On
    PostgreSQL in autocommit: one round trip per statement, where a transaction would add a BEGIN and a ROLLBACK
    (the two cost as much as the read). On SQLite a plain deferred BEGIN instead of the writers' BEGIN IMMEDIATE."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            conn.execution_options(hub_read_only=True)
        yield conn


@contextmanager
def reading_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """An ORM session over `reading`'s connection: for views that only read (a dossier with its history)."""
    with reading(sessions.kw["bind"]) as conn, Session(bind=conn) as session:
        yield session


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (`hub db upgrade`)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        rev: str | None = MigrationContext.configure(conn).get_current_revision()
        return rev


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    head: str | None = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    return head
