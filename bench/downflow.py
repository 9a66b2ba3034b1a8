"""Down-flow benchmark: dossiers pushed by the national portal, end to end (POST /v1/national/dossiers → outbox →
worker → the provincial one-stop sandbox's acknowledgement), beside the up-flow of the same number of dossiers in
the same run (POST /v1/dossiers → outbox → worker → national-portal sandbox); then a reconciliation of 10,000 open
dossiers with the portal (dossiers/s), beside the bare TraCuuHoSo look-up rate of the same portal sandbox.

    .venv/bin/python bench/downflow.py [--dossiers 2000] [--reconcile 10000]

hub runs as `hub serve` with its in-process worker on PostgreSQL; the sandboxes and the load generator are their
own processes, all on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, loadgen, pg_database, wait_http


def delivered(db_url: str, destination: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return int(
                c.execute(
                    text("SELECT count(*) FROM outbox WHERE state = 'delivered' AND destination = :d"),
                    {"d": destination},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def flow(port: int, api_key: str, db_url: str, mode: str, n: int, prefix: int, destination: str) -> dict[str, Any]:
    """Post n dossiers (16 connections) and wait until each has been acknowledged by its destination."""
    before = delivered(db_url, destination)
    started = time.perf_counter()
    load = loadgen(port, mode, api_key, requests=n, prefix=prefix, connections=16)
    if load["statuses"] != {"202": n}:
        raise RuntimeError(f"{mode}: unexpected answers {load['statuses']}")
    engine = create_engine(db_url)
    with engine.connect() as c:
        while True:
            done = int(
                c.execute(
                    text("SELECT count(*) FROM outbox WHERE state = 'delivered' AND destination = :d"),
                    {"d": destination},
                ).scalar_one()
            )
            c.rollback()
            if done - before >= n:
                break
            time.sleep(0.02)
    engine.dispose()
    seconds = time.perf_counter() - started
    return {"dossiers": n, "seconds": seconds, "per_s": n / seconds, "ingest_rps": load["rps"]}


def bare_look_ups(env: dict[str, str], codes: list[str], concurrency: int) -> float:
    """TraCuuHoSo for each code through hub's portal client, `concurrency` at a time: what the portal allows."""
    from hub.adapters.national_portal.client import NationalPortalClient

    client = NationalPortalClient(
        env["HUB_NATIONAL_PORTAL_URL"],
        username="hub-sandbox",
        password=env["HUB_NATIONAL_PORTAL_PASSWORD"],
        dstcode="000.00.17.H56",
    )
    try:
        client.look_up(codes[0], correlation_id="warm-up")
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda c: client.look_up(c, correlation_id="bench"), codes))
        return len(codes) / (time.perf_counter() - started)
    finally:
        client.close()


def reconcile_in_process(env: dict[str, str]) -> tuple[dict[str, Any], float]:
    for k, v in env.items():
        if k.startswith("HUB_"):
            os.environ[k] = v
    from hub.runtime import Runtime
    from hub.settings import load_settings

    rt = Runtime(load_settings(), role="cli", start_worker=False)
    try:
        started = time.perf_counter()
        result = rt.reconcile(repair=False)
        return result, time.perf_counter() - started
    finally:
        rt.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dossiers", type=int, default=2000, help="dossiers each way")
    ap.add_argument("--reconcile", type=int, default=10_000, help="open dossiers to reconcile")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t, pg_database() as db_url:
        tmp = Path(t)
        national, onestop = free_port(), free_port()
        clients = [{"name": "bench", "api_key": "", "agencies": ["*"], "roles": ["onestop", "national_portal"]}]
        env, api_key = hub_env(tmp, HUB_DATABASE_URL=db_url, HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{national}")
        clients[0]["api_key"] = api_key
        env["HUB_CLIENTS"] = json.dumps(clients)
        env["HUB_RECONCILE_INTERVAL"] = env["HUB_PORTAL_POLL_INTERVAL"] = env["HUB_PAYMENT_CHECK_INTERVAL"] = "0"
        sandbox = Proc(
            [str(BIN / "hub"), "sandbox", "--national-port", str(national), "--one-stop-port", str(onestop)],
            env,
            tmp / "sandbox.log",
        )
        hub = None
        try:
            wait_http(f"http://127.0.0.1:{national}/_sandbox/faults")
            wait_http(f"http://127.0.0.1:{onestop}/_sandbox/faults")
            for cmd in (["db", "upgrade"], ["routes", "add", "000.00.*", f"http://127.0.0.1:{onestop}"]):
                subprocess.run([str(BIN / "hub"), *cmd], env=env, check=True, capture_output=True)
            port = free_port()
            hub = Proc([str(BIN / "hub"), "serve", "--no-sandbox", "--port", str(port)], env, tmp / "hub.log")
            wait_http(f"http://127.0.0.1:{port}/healthz")
            flow(port, api_key, db_url, "ingest", 200, 9, "national_portal")  # warm-up
            up = flow(port, api_key, db_url, "ingest", args.dossiers, 1, "national_portal")
            print(f"up-flow:   {up['per_s']:.0f} dossiers/s end to end", flush=True)
            down = flow(port, api_key, db_url, "push", args.dossiers, 2, "one_stop")
            print(f"down-flow: {down['per_s']:.0f} dossiers/s end to end", flush=True)
            extra = max(0, args.reconcile - args.dossiers - 200)
            if extra:
                flow(port, api_key, db_url, "ingest", extra, 3, "national_portal")  # open dossiers to reconcile
            hub.stop()
            hub = None
            result, seconds = reconcile_in_process(env)
            engine = create_engine(db_url)
            with engine.connect() as c:
                codes = [
                    str(r[0])
                    for r in c.execute(
                        text(
                            "SELECT d.code FROM dossiers d JOIN outbox o ON o.dossier_id = d.id "
                            "WHERE o.destination = 'national_portal' ORDER BY d.id LIMIT 2000"
                        )
                    )
                ]
            engine.dispose()
            concurrency = 8
            bare = bare_look_ups(env, codes, concurrency)
        finally:
            if hub is not None:
                hub.stop()
            sandbox.stop()
    checked = result["checked"]
    rate = checked / seconds
    print(f"\ndown-flow benchmark — {args.dossiers} dossiers each way, PostgreSQL, embedded worker, 2-core machine")
    print(f"{'measure':<72} {'figure':>9} {'baseline':>9} {'ratio':>6}")
    rows = [
        ("down-flow end to end (push → outbox → one-stop sandbox ack), dossiers/s", down["per_s"], up["per_s"],
         "up-flow end to end, same run"),
        (f"reconciliation of {checked} open dossiers (in sync {result['in_sync']}), dossiers/s", rate, bare,
         f"bare TraCuuHoSo look-ups, {concurrency} in flight"),
    ]  # fmt: skip
    for name, fig, base, base_name in rows:
        print(f"{name:<72} {fig:>9.0f} {base:>9.0f} {fig / base:>6.2f}  (baseline: {base_name})")
    print(
        f"\nreconciliation took {seconds:.1f} s; drift {result['drift_by_kind'] or 'none'}, errors {result['errors']}; "
        f"ingest rates: up {up['ingest_rps']:.0f} req/s, down {down['ingest_rps']:.0f} req/s"
    )


if __name__ == "__main__":
    main()
