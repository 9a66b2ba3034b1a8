"""Shared set-up for the benchmarks: processes on loopback, a private Redis, a fresh PostgreSQL database."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

PG_ADMIN = os.environ.get("HUB_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port for a server started in another process (below the ephemeral range: see the tests')."""
    from tests.conftest import listen_port

    return listen_port()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as out:
            self.p = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far (Linux /proc; 0.0 where there is none)."""
        try:
            fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)  # the main process shuts its children down itself
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


@contextmanager
def sandbox_peers(tmp: Path, **env: str) -> Iterator[dict[str, int]]:
    """`hub sandbox` in a process of its own (the national portal, a one-stop system, the population database),
    `env` added to its settings; yields the ports (national, onestop, population, and a free one for hub), the
    register answering."""
    ports = {name: free_port() for name in ("national", "onestop", "population", "hub")}
    sandbox_env, _ = hub_env(tmp / "sandbox", **env)
    sandbox = Proc(
        [str(BIN / "hub"), "sandbox", "--national-port", str(ports["national"]), "--one-stop-port",
         str(ports["onestop"]), "--population-port", str(ports["population"])],
        sandbox_env,
        tmp / "sandbox.log",
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{ports['population']}/ws/congdan")
        yield ports
    finally:
        sandbox.stop()


@contextmanager
def pg_database() -> Iterator[str]:
    name = f"hub_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def hub_pg_database(tmp: Path, fill: str = "") -> Iterator[str]:
    """A PostgreSQL database of its own at hub's schema (`hub db upgrade`), then `fill`'s statements run in it."""
    from hub.store import db

    with pg_database() as url:
        env, _ = hub_env(tmp, HUB_DATABASE_URL=url)
        subprocess.run([str(BIN / "hub"), "db", "upgrade"], env=env, check=True, capture_output=True)
        if fill.strip():
            engine = db.make_engine(url)
            with engine.begin() as conn:
                for statement in fill.split(";"):
                    if statement.strip():
                        conn.exec_driver_sql(statement)
            engine.dispose()
        yield url


def p50_max(seconds: list[float], digits: int = 2) -> str:
    """'p50 … ms, max … ms' of durations in seconds."""
    return f"p50 {statistics.median(seconds) * 1000:.{digits}f} ms, max {max(seconds) * 1000:.{digits}f} ms"


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    p = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        p.kill()
        p.wait()


def hub_env(tmp: Path, **values: str) -> tuple[dict[str, str], str]:
    api_key = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        {
            "HUB_VAR_DIR": str(tmp),
            "HUB_SECRET_KEY": secrets.token_urlsafe(32),
            "HUB_CLIENTS": json.dumps([{"name": "bench", "api_key": api_key, "agencies": ["*"]}]),
            "HUB_NATIONAL_PORTAL_PASSWORD": secrets.token_urlsafe(16),
        }
    )
    for peer in ("NATIONAL", "ONESTOP", "POPULATION", "PKI", "PAYMENT", "SMTP", "SMS", "EDOC"):
        env[f"HUB_SANDBOX_{peer}_PORT"] = str(free_port())  # never the fixed defaults a running hub may hold
    env.update(values)
    return env, api_key


def loadgen(port: int, mode: str, api_key: str, **opts: Any) -> dict[str, Any]:
    args = [
        str(BIN / "python"),
        str(ROOT / "bench" / "loadgen.py"),
        "--port",
        str(port),
        "--mode",
        mode,
        f"--api-key={api_key}",  # one argument: a random key may start with "-"
    ]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if any(not str(status).startswith("2") for status in result["statuses"]):  # a rate of refusals is no figure
        raise RuntimeError(f"{mode} on :{port}: answers other than 2xx {result['statuses']}")
    return result


def seed_runtime(tmp: Path, db_url: str, secret_key: str, api_key: str) -> Any:
    """hub's own services on the benchmark's database (at hub's schema), no worker, one client system `bench` for
    every agency: for seeding dossiers as the API would write them. The caller closes it."""
    from pydantic import SecretStr

    from hub.runtime import Runtime
    from hub.settings import ClientSystem, Settings

    settings = Settings(
        var_dir=tmp,
        database_url=db_url,
        secret_key=SecretStr(secret_key),
        clients=[ClientSystem(name="bench", api_key=SecretStr(api_key), agencies=["*"])],
        national_portal_password=SecretStr("unused"),
        national_portal_url="http://127.0.0.1:9",
        worker_enabled=False,
    )
    if db_url:
        from hub.store import db

        db.upgrade(db_url)
    return Runtime(settings, role="api", start_worker=False)


def awaiting_payment(seed: Any, d: dict[str, Any]) -> None:
    """Dossier `d` filed and walked to status 6 (payment requested) through hub's own services (`seed_runtime`)."""
    from hub.services.schemas import DossierIn, ProgressIn
    from tests.helpers import step

    client = seed.settings.clients[0]
    seed.dossiers.sync_dossier(client, DossierIn.model_validate(d), idempotency_key=None, correlation_id="seed")
    for status in (4, 6):
        seed.dossiers.add_progress(
            client, d["MaHoSo"], ProgressIn.model_validate(step(d["MaHoSo"], status)),
            idempotency_key=None, correlation_id="seed",
        )  # fmt: skip
