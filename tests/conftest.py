"""Shared fixtures: real PostgreSQL databases, real sandbox servers on loopback, hub served by real uvicorn."""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from hub.api.app import create_app
from hub.runtime import Runtime
from hub.sandbox import national_portal, one_stop, payment_dvc, pki, population
from hub.sandbox.common import ServerThread
from hub.settings import ClientSystem, Settings
from hub.store import db
from tests.pki_helpers import Token, Trust

PG_ADMIN = os.environ.get("HUB_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
PG_BASE = PG_ADMIN.rsplit("/", 1)[0]
PORTAL_USER = "hub-test"
AGENCY = "000.00.17.H56"
OTHER_AGENCY = "000.00.12.H29"
PURPOSE = "civil_status_registration"


def listen_port() -> int:
    """A loopback port for a server a test starts in another process. Taken below the kernel's ephemeral range
    (ip_local_port_range starts at 32768): a port bound at 0 and let go could be taken by any process's outgoing
    connection before the server binds it ("address already in use" — seen in CI); one down here, only by
    another listener."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32700)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def create_pg_database() -> str:
    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_BASE.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    db.upgrade(url)
    return url


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def truncate_all(url: str) -> None:
    """Every table the code declares (a new one cannot be forgotten here), emptied, its ids started over.

    By DELETE with the triggers off (`session_replication_role = replica`: the append-only records' own triggers
    and the foreign keys' alike; the test user is a superuser), not TRUNCATE: a test leaves a few rows, and a
    TRUNCATE of every table gives each table and index a new file — 0.1–0.3 s a test hub, ~15 ms this way."""
    from hub.store.models import Base

    tables = [t.name for t in Base.metadata.sorted_tables]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        sequences = _serial_sequences(url, conn, tuple(tables))
        conn.execute("SET session_replication_role = replica")
        with conn.transaction():
            for name in tables:
                conn.execute(f"DELETE FROM {name}")  # noqa: S608 (the model's own table names)
            conn.execute("SELECT setval(s, 1, false) FROM unnest(%s::text[]) AS s", (list(sequences),))


_SEQUENCES: dict[str, tuple[str, ...]] = {}


def _serial_sequences(url: str, conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> tuple[str, ...]:
    """The sequences behind the tables' serial ids, looked up once a database (a third of a reset's time, and the
    schema does not change under a test session)."""
    if url not in _SEQUENCES:
        found = conn.execute(
            "SELECT s FROM (SELECT pg_get_serial_sequence(quote_ident(table_name), column_name) AS s"
            " FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ANY(%s))"
            " AS serial WHERE s IS NOT NULL",
            (list(tables),),
        )
        _SEQUENCES[url] = tuple(row[0] for row in found)
    return _SEQUENCES[url]


@dataclass
class Creds:
    portal_password: str
    api_key: str
    other_key: str  # a client allowed only OTHER_AGENCY
    secret_key: str
    portal_key: str  # the national portal pushing dossiers down


@pytest.fixture(scope="session")
def creds() -> Creds:
    return Creds(
        secrets.token_urlsafe(16),
        secrets.token_urlsafe(24),
        secrets.token_urlsafe(24),
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(24),
    )


@pytest.fixture(scope="session")
def portal_server(creds: Creds) -> Iterator[ServerThread]:
    server = ServerThread(national_portal.create_app({PORTAL_USER: creds.portal_password})).start()
    yield server
    server.stop()


@pytest.fixture
def portal(portal_server: ServerThread) -> Iterator[httpx.Client]:
    """Control client of the national portal sandbox, reset before each test."""
    with httpx.Client(base_url=portal_server.url, timeout=10) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


PAY_PARTNER = "HUB-TEST"
PAY_SECRET = secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def pay_server() -> Iterator[ServerThread]:
    """The DVC payment-platform sandbox, with our partner code and secret."""
    server = ServerThread(payment_dvc.create_app({PAY_PARTNER: PAY_SECRET})).start()
    yield server
    server.stop()


@pytest.fixture
def platform(pay_server: ServerThread) -> Iterator[httpx.Client]:
    """Control client of the payment-platform sandbox, reset before each test."""
    with httpx.Client(base_url=pay_server.url, timeout=30) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


@pytest.fixture(scope="session")
def population_server() -> Iterator[ServerThread]:
    server = ServerThread(population.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def people(population_server: ServerThread) -> Iterator[httpx.Client]:
    """Control client of the population-database sandbox, reset before each test."""
    with httpx.Client(base_url=population_server.url, timeout=10) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


@pytest.fixture(scope="session")
def onestop_server() -> Iterator[ServerThread]:
    server = ServerThread(one_stop.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def onestop(onestop_server: ServerThread) -> Iterator[httpx.Client]:
    """Control client of the one-stop system sandbox, reset before each test."""
    with httpx.Client(base_url=onestop_server.url, timeout=10) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


def client_systems(creds: Creds) -> list[ClientSystem]:
    """The client systems of the test hubs: a one-stop system of HCMC (every procedure, the test purpose), one of
    another province (marriage registration only), and the national portal (pushes, audits)."""
    return [
        ClientSystem(
            name="onestop-hcm",
            api_key=SecretStr(creds.api_key),
            agencies=["000.00.17.*"],
            prefill_procedures=["*"],
            prefill_purposes=[PURPOSE],
        ),
        ClientSystem(
            name="onestop-other",
            api_key=SecretStr(creds.other_key),
            agencies=[OTHER_AGENCY],
            prefill_procedures=["1.004873"],
            prefill_purposes=["marriage_registration"],
        ),
        ClientSystem(
            name="dvcqg",
            api_key=SecretStr(creds.portal_key),
            agencies=["*"],
            roles=["national_portal", "auditor"],
        ),
    ]


def make_settings(tmp: Path, creds: Creds, portal_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "var_dir": tmp,
        "secret_key": SecretStr(creds.secret_key),
        "clients": client_systems(creds),
        "national_portal_url": portal_url,
        "national_portal_username": PORTAL_USER,
        "national_portal_password": SecretStr(creds.portal_password),
        "relay_backoff_base": 0.05,
        "relay_backoff_cap": 0.2,
        "relay_poll_interval": 0.05,
        # peers answer in milliseconds, but a test's peers share its process (and the machine's two cores) with
        # hub: 2 s let a loaded moment pass for a peer down once in CI (a payment INIT, 2026-12-06)
        "read_timeout": 5.0,
        "connect_timeout": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Hub:
    settings: Settings
    runtime: Runtime
    server: ServerThread
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def wait_idle(self, timeout: float = 30.0) -> dict[str, int]:
        """Wait until no outbox row is pending or in flight; return the state counts."""
        from hub.sync.outbox import counts

        deadline = time.monotonic() + timeout
        while True:
            with self.runtime.sessions() as s:
                c = counts(s)
            if not c.get("pending") and not c.get("in_flight"):
                return c
            if time.monotonic() > deadline:
                raise AssertionError(f"outbox not drained in {timeout}s: {c}")
            time.sleep(0.05)


HubFactory = Callable[..., Hub]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty embedded database at the schema's head, migrated once a test process: each test's hub starts on a
    copy of it rather than migrating a new file (~0.16 s a hub; a new file's migration has tests of its own)."""
    path = tmp_path_factory.mktemp("schema") / "hub.db"
    db.upgrade(f"sqlite:///{path.as_posix()}")
    assert not path.with_name(path.name + "-wal").exists()  # closed cleanly: the file alone is the database
    return path


@pytest.fixture(scope="session")
def _servers_stopping() -> Iterator[list[ServerThread]]:
    """Test hubs' servers told to exit and not waited for at each test's end (uvicorn takes ~0.15 s to wind down
    an idle server), waited for at the session's."""
    stopping: list[ServerThread] = []
    yield stopping
    for server in stopping:
        server.stop()  # told already: this waits for it


@pytest.fixture
def hub_factory(
    tmp_path: Path,
    creds: Creds,
    portal_server: ServerThread,
    backend: str,
    request: pytest.FixtureRequest,
    _servers_stopping: list[ServerThread],
) -> Iterator[HubFactory]:
    """Start hub (embedded worker unless start_worker=False) on the chosen backend, served by uvicorn."""
    made: list[Hub] = []

    def make(**overrides: Any) -> Hub:
        if backend == "postgresql":
            url = request.getfixturevalue("pg_url")
            truncate_all(url)
            overrides.setdefault("database_url", url)
        elif "database_url" not in overrides:
            own = Path(overrides.get("var_dir", tmp_path)) / "hub.db"
            if not own.exists():
                own.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(request.getfixturevalue("sqlite_at_head"), own)
        start_worker = overrides.pop("start_worker", True)
        settings = make_settings(tmp_path, creds, portal_server.url, **overrides)
        runtime = Runtime(settings, role="api", start_worker=start_worker)
        server = ServerThread(create_app(settings, runtime)).start()
        http = httpx.Client(base_url=server.url, headers={"X-API-Key": creds.api_key}, timeout=10)
        hub = Hub(settings, runtime, server, http)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.http.close()
        hub.server.stop(wait=False)
        _servers_stopping.append(hub.server)
        hub.runtime.close()


@pytest.fixture(scope="session")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trust]:
    state = pki.PkiState()
    server = ServerThread(pki.create_app(state)).start()
    state.pki = pki.TestPki(server.url)
    directory = state.pki.write(tmp_path_factory.mktemp("pki"))
    yield Trust(server, state, state.pki, directory)
    server.stop()


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory, trust: Trust) -> Token:
    """A SoftHSM token with keys made on it and their certificates from the sandbox PKI."""
    return trust.token(tmp_path_factory.mktemp("token"))


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (Playwright's own browser download cannot work here). It runs
    an event loop in the calling thread while open."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium must be installed (.ci/run installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


# The files that take longest, first: xdist (`--dist loadfile`) hands the files out in collection order, so a long
# file collected last (test_prefill, test_relay) kept one process busy after the other had finished. Longest first
# (~150 s for test_cli down to ~40 s), the rest after in their own order; within a file the order stays.
LONGEST_FIRST = (
    "test_cli.py", "test_prefill.py", "test_distributed.py", "test_relay.py", "test_fuzz.py", "test_console.py",
    "test_payments.py", "test_edocs.py", "test_api.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort
