"""Relay benchmark: N status events end to end (API → outbox → worker → national-portal sandbox acknowledgement),
beside the drain rate of a no-op Celery task on the same broker in the same run; the same in embedded mode;
and the ingest endpoint beside a bare FastAPI POST of the same body.

Both sides of the relay's ratio are throughput at saturation: the no-op drain has its whole queue waiting, and the
end-to-end run offers hub enough load (the one-stop system's 64 connections, each walking its dossiers' events in
order, one request at a time). With 16 connections the figure was the client's round trips, not hub's capacity —
the same code measured 399–474 events/s at 16, 522 at 32, 629–653 at 64 and 660 at 128 (2026-12-06).

    .venv/bin/python bench/relay.py [--events 5000] [--connections 64] [--api-workers 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, loadgen, pg_database, redis_server, wait_http


def noop_drain_rate(env: dict[str, str], broker: str, n: int, tmp: Path) -> float:
    """Publish n no-op tasks, then time one `hub worker` (same pool and concurrency) draining them."""
    from hub.settings import load_settings
    from hub.sync.celery_app import make_celery

    celery = make_celery(load_settings(broker_url=broker, var_dir=tmp))
    with celery.connection_for_write() as conn:
        producer = celery.amqp.Producer(conn)
        for _ in range(n):
            celery.send_task("hub.noop", producer=producer)
    r = redis.Redis.from_url(broker)
    worker = Proc([str(BIN / "hub"), "worker", "--concurrency", "2"], env, tmp / "noop-worker.log")
    try:
        while r.llen("hub") >= n:  # wait for the worker to start consuming
            time.sleep(0.005)
        started = time.perf_counter()
        while r.llen("hub") > 0 or r.hlen("unacked") > 0:
            time.sleep(0.005)
        return n / (time.perf_counter() - started)
    finally:
        worker.stop()


def delivered(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM outbox WHERE state = 'delivered'")).scalar_one())
    finally:
        engine.dispose()


def end_to_end(
    env: dict[str, str],
    api_key: str,
    db_url: str,
    dossiers: int,
    tmp: Path,
    workers: int,
    api_workers: int = 1,
    connections: int = 64,
) -> dict[str, Any]:
    port = free_port()
    serve = [str(BIN / "hub"), "serve", "--no-sandbox", "--port", str(port), "--workers", str(api_workers)]
    procs = [Proc(serve, env, tmp / "serve.log")]
    procs += [
        Proc([str(BIN / "hub"), "worker", "--concurrency", "2"], env, tmp / f"worker{i}.log") for i in range(workers)
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2 if workers else 0.2)  # workers connected
        total = dossiers * 10
        engine = create_engine(db_url)
        started = time.perf_counter()
        load = loadgen(port, "walk", api_key, dossiers=dossiers, connections=connections)
        with engine.connect() as c:
            while True:
                n = int(c.execute(text("SELECT count(*) FROM outbox WHERE state = 'delivered'")).scalar_one())
                c.rollback()
                if n >= total:
                    break
                time.sleep(0.02)
        seconds = time.perf_counter() - started
        engine.dispose()
        return {"events": total, "seconds": seconds, "events_per_s": total / seconds, "ingest": load}
    finally:
        for p in procs:
            p.stop()


BATCH = 100  # dossiers per batch request


def ingest_vs_bare(env: dict[str, str], api_key: str, n: int, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    hub_port, bare_port = free_port(), free_port()
    hub = Proc(
        [str(BIN / "hub"), "serve", "--no-sandbox", "--port", str(hub_port)],
        {**env, "HUB_WORKER_ENABLED": "false"},
        tmp / "ingest.log",
    )
    bare = Proc(
        [
            str(BIN / "uvicorn"),
            "bench.bare_app:app",
            "--port",
            str(bare_port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env,
        tmp / "bare.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{hub_port}/healthz")
        wait_http(f"http://127.0.0.1:{bare_port}/docs")
        loadgen(bare_port, "bare", api_key, requests=500, prefix=9)  # warm-up
        loadgen(hub_port, "ingest", api_key, requests=500, prefix=9)
        used = bare.cpu_seconds()
        b = loadgen(bare_port, "bare", api_key, requests=n, prefix=1)
        b["cpu_ms"] = (bare.cpu_seconds() - used) * 1000 / n
        used = hub.cpu_seconds()
        h = loadgen(hub_port, "ingest", api_key, requests=n, prefix=1)
        h["cpu_ms"] = (hub.cpu_seconds() - used) * 1000 / n  # where the ratio comes from: CPU per request
        # the same dossiers a hundred at a time (POST /v1/dossiers/batch) beside the bare app parsing those batches
        batches = max(10, n // BATCH)
        bb = loadgen(bare_port, "bare-batch", api_key, requests=batches, batch=BATCH, prefix=2, connections=4)
        used = hub.cpu_seconds()
        hb = loadgen(hub_port, "batch", api_key, requests=batches, batch=BATCH, prefix=2, connections=4)
        hb["cpu_ms"] = (hub.cpu_seconds() - used) * 1000 / (batches * BATCH)  # per dossier
        h["batch"], b["batch"] = hb, bb
        return h, b
    finally:
        hub.stop()
        bare.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--api-workers", type=int, default=1, help="uvicorn workers of `hub serve` in the distributed run")
    ap.add_argument(
        "--connections", type=int, default=64, help="the one-stop system's connections to hub (end to end runs)"
    )
    args = ap.parse_args()
    dossiers = max(1, args.events // 10)
    rows: list[tuple[str, float, str, float, str]] = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        sandbox_port = free_port()
        with redis_server(tmp) as broker, pg_database() as db_url:
            env, api_key = hub_env(
                tmp,
                HUB_DATABASE_URL=db_url,
                HUB_BROKER_URL=broker,
                HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{sandbox_port}",
            )
            sandbox = Proc(
                [
                    str(BIN / "hub"),
                    "sandbox",
                    "--national-port",
                    str(sandbox_port),
                    "--one-stop-port",
                    str(free_port()),
                ],
                env,
                tmp / "sandbox.log",
            )
            try:
                wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/faults")
                subprocess.run([str(BIN / "hub"), "db", "upgrade"], env=env, check=True, capture_output=True)
                noop = noop_drain_rate(env, broker, args.events, tmp)
                print(f"no-op Celery drain: {noop:.0f} tasks/s", flush=True)
                dist = end_to_end(
                    env,
                    api_key,
                    db_url,
                    dossiers,
                    tmp,
                    workers=1,
                    api_workers=args.api_workers,
                    connections=args.connections,
                )
                rows.append(
                    (
                        f"distributed relay (PostgreSQL + Celery/Redis, 1 worker × 2 procs, API × {args.api_workers}, "
                        f"{args.connections} conns)",
                        dist["events_per_s"],
                        "no-op Celery task drain",
                        noop,
                        "events/s",
                    )
                )
                print(f"distributed: {dist['events_per_s']:.0f} events/s vs no-op drain {noop:.0f}/s", flush=True)
                httpx.post(f"http://127.0.0.1:{sandbox_port}/_sandbox/reset").raise_for_status()
                emb_env = {**env, "HUB_BROKER_URL": "", "HUB_DATABASE_URL": f"sqlite:///{tmp}/embedded.db"}
                subprocess.run([str(BIN / "hub"), "db", "upgrade"], env=emb_env, check=True, capture_output=True)
                emb = end_to_end(
                    emb_env,
                    api_key,
                    f"sqlite:///{tmp}/embedded.db",
                    dossiers,
                    tmp,
                    workers=0,
                    connections=args.connections,
                )
                rows.append(
                    (
                        f"embedded relay (SQLite + in-process worker, {args.connections} conns)",
                        emb["events_per_s"],
                        "no-op Celery task drain",
                        noop,
                        "events/s",
                    )
                )
                with pg_database() as ingest_db:
                    subprocess.run(
                        [str(BIN / "hub"), "db", "upgrade"],
                        env={**env, "HUB_DATABASE_URL": ingest_db},
                        check=True,
                        capture_output=True,
                    )
                    h, b = ingest_vs_bare({**env, "HUB_DATABASE_URL": ingest_db}, api_key, args.events, tmp)
                rows.append(
                    (
                        "ingest POST /v1/dossiers (PostgreSQL)",
                        h["rps"],
                        "bare FastAPI POST, same body",
                        b["rps"],
                        "req/s",
                    )
                )
                rows.append(
                    (
                        f"ingest POST /v1/dossiers/batch, {BATCH} a request (PostgreSQL)",
                        h["batch"]["rps"] * BATCH,
                        "bare FastAPI POST, same batches",
                        b["batch"]["rps"] * BATCH,
                        "dossiers/s",
                    )
                )
            finally:
                sandbox.stop()
    print(f"\nrelay benchmark — {args.events} events, 2-core machine, same-run baselines")
    print(f"{'measure':<84} {'figure':>10} {'baseline':>10} {'ratio':>6}")
    for name, fig, base_name, base, unit in rows:
        print(f"{name:<84} {fig:>10.0f} {base:>10.0f} {fig / base:>6.2f}  ({unit}; baseline: {base_name})")
    print(
        f"\ningest latency p50 {h['p50_ms']:.1f} ms p99 {h['p99_ms']:.1f} ms; bare p50 {b['p50_ms']:.1f} ms "
        f"p99 {b['p99_ms']:.1f} ms; statuses hub {h['statuses']} bare {b['statuses']}"
    )
    print(f"CPU per request: hub {h['cpu_ms']:.2f} ms, bare {b['cpu_ms']:.2f} ms (one process each)")
    print(
        f"batches: hub {h['batch']['rps'] * BATCH:.0f} dossiers/s ({h['batch']['cpu_ms']:.2f} ms of CPU a dossier, "
        f"statuses {h['batch']['statuses']}) against {h['rps']:.0f} one at a time"
    )
    print(f"distributed: ingest {dist['ingest']['rps']:.0f} req/s; embedded: ingest {emb['ingest']['rps']:.0f} req/s")


if __name__ == "__main__":
    main()
