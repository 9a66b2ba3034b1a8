# ruff: noqa: E501 - SQL reads better unwrapped
"""Console benchmark: page render times of the operator console on PostgreSQL holding 100,000 status events (and
as many outbox rows and exchange records) with 1,000 dead letters, beside GET /healthz of the same server in the
same run; then the query plans of the pages' main queries.

    .venv/bin/python bench/console.py [--events 100000] [--dead 1000] [--requests 60]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, pg_database, wait_http

SEED = """
INSERT INTO dossiers (code, agency, procedure_code, status, last_seq, subject_hmac, data, due_at, created_at, updated_at)
SELECT '000.00.17.H56-' || to_char(date '2026-01-01' + (g / 9000), 'YYMMDD') || '-' || lpad(((g % 9000) + 1)::text, 4, '0'),
       '000.00.17.H56', '1.001193', 4, 10, md5(g::text) || md5((g + 1)::text),
       jsonb_build_object('MaHoSo', 'x', 'SoGiayToChuHoSo', lpad(g::text, 12, '0'), 'ChuHoSo', 'Nguyễn Văn ' || g),
       now() + interval '3 days', now() - interval '1 day', now() - (g || ' seconds')::interval
FROM generate_series(0, {dossiers} - 1) g;

INSERT INTO status_events (event_id, dossier_id, seq, kind, status, previous_status, payload, client, correlation_id, created_at)
SELECT md5(d.id::text || '-' || s), d.id, s, 'dossier.progress', 4, 4, '{}'::jsonb, 'bench', md5(d.id::text), now() - ((10 - s) || ' minutes')::interval
FROM dossiers d CROSS JOIN generate_series(1, 10) s;

INSERT INTO outbox (event_id, dossier_id, seq, destination, operation, payload, idempotency_key, correlation_id, state,
                    attempts, next_attempt_at, last_error_code, last_error, created_at, delivered_at)
SELECT e.event_id, e.dossier_id, e.seq, 'national_portal', 'CapNhatTienDoHoSoMC', '{}'::jsonb, e.event_id || ':np',
       e.correlation_id,
       CASE WHEN e.id % {every} = 0 THEN 'dead' ELSE 'delivered' END,
       1, now(),
       CASE WHEN e.id % {every} = 0 THEN 'portal_invalid_transition' END,
       CASE WHEN e.id % {every} = 0 THEN 'error_code 4: Trạng thái không hợp lệ' END,
       e.created_at, CASE WHEN e.id % {every} = 0 THEN NULL ELSE e.created_at END
FROM status_events e;

INSERT INTO exchanges (at, peer, operation, correlation_id, outbox_id, request_digest, response_digest, duration_ms, outcome, error_code)
SELECT now() - ((o.id % 21600) || ' seconds')::interval, 'national_portal', o.operation, o.correlation_id, o.id,
       md5(o.id::text) || md5(o.id::text), md5(o.id::text) || md5(o.id::text), 5 + (o.id % 50),
       CASE WHEN o.state = 'dead' THEN 'permanent' ELSE 'ok' END,
       o.last_error_code
FROM outbox o;
ANALYZE;
"""

PLANS = {
    "overview: outbox by state and destination": "SELECT state, destination, count(*) FROM outbox GROUP BY state, destination",
    "overview: oldest undelivered": "SELECT destination, min(created_at) FROM outbox WHERE state IN ('pending', 'in_flight') GROUP BY destination",
    "overview: one hour of exchanges": "SELECT outcome, count(*) FROM exchanges WHERE at >= now() - interval '1 hour' AND at < now() GROUP BY outcome",
    "dead letters: count": "SELECT count(*) FROM outbox WHERE state = 'dead'",
    "dead letters: first page": "SELECT o.id, d.code FROM outbox o JOIN dossiers d ON d.id = o.dossier_id WHERE o.state = 'dead' ORDER BY o.id LIMIT 200",
    "timeline: events of a dossier": "SELECT * FROM status_events WHERE dossier_id = 5001 ORDER BY seq",
    "timeline: deliveries of a dossier": "SELECT * FROM outbox WHERE dossier_id = 5001",
    "search: by MaHoSo prefix": "SELECT * FROM dossiers WHERE code LIKE '000.00.17.H56-260101%' ORDER BY updated_at DESC LIMIT 50",
    "list: latest changed": "SELECT * FROM dossiers ORDER BY updated_at DESC, id DESC LIMIT 51",
    "list: with undelivered": "SELECT * FROM dossiers WHERE id IN (SELECT dossier_id FROM outbox WHERE state IN ('pending', 'in_flight', 'dead')) ORDER BY updated_at DESC, id DESC LIMIT 51",
    "list: status 3": "SELECT * FROM dossiers WHERE status = 3 ORDER BY updated_at DESC, id DESC LIMIT 51",
}  # fmt: skip


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    client.get(path)  # warm up
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, (path, r.status_code)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--dead", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    dossiers = args.events // 10
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(pg_database())
        env, _ = hub_env(
            tmp, HUB_DATABASE_URL=url, HUB_WORKER_ENABLED="false", HUB_NATIONAL_PORTAL_URL="http://127.0.0.1:9"
        )
        subprocess.run([str(BIN / "hub"), "db", "upgrade"], env=env, check=True, capture_output=True)
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed = SEED.replace("{dossiers}", str(dossiers)).replace("{every}", str(max(1, args.events // args.dead)))
            conn.execute(seed)  # type: ignore[call-overload]
            counts = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state").fetchall()
        seeded = time.perf_counter() - started
        env["BENCH_PASSWORD"] = "bench-password-123"
        subprocess.run(
            [str(BIN / "hub"), "operators", "add", "bench", "--role", "operator", "--password-env", "BENCH_PASSWORD"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        api = Proc([str(BIN / "hub"), "serve", "--port", str(port), "--no-sandbox"], env, tmp / "hub.log")
        stack.callback(api.stop)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        client = httpx.Client(base_url=base, timeout=60)
        stack.callback(client.close)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/ops/login").text)
        assert token is not None
        client.post("/ops/login", data={"csrf": token.group(1), "username": "bench", "password": "bench-password-123"})
        code = "000.00.17.H56-260101-5001"  # dossier id 5001 (g = 5000)
        pages = {
            "GET /healthz (baseline)": "/healthz",
            "overview /ops": "/ops",
            "dead letters /ops/dead (200 of them)": "/ops/dead",
            "search /ops/dossiers?q=<prefix>": "/ops/dossiers?q=000.00.17.H56-260101",
            "list /ops/dossiers (latest 50)": "/ops/dossiers",
            "list, page 2": "/ops/dossiers?after=" + "{after}",
            "list open ones": "/ops/dossiers?state=open",
            "list with undelivered": "/ops/dossiers?state=undelivered",
            "list status 3 (none)": "/ops/dossiers?state=3",
            "list overdue": "/ops/dossiers?state=overdue",
            f"list as CSV, all {dossiers:,}": "/ops/dossiers.csv",
            "timeline /ops/dossiers/<code>": f"/ops/dossiers/{code}",
            "sync jobs /ops/jobs": "/ops/jobs",
        }
        cursor = re.search(r'after=([^"&]+)" id="next-page"', client.get("/ops/dossiers").text)
        assert cursor is not None
        pages = {name: path.replace("{after}", cursor.group(1)) for name, path in pages.items()}
        results = {name: timed(client, path, args.requests) for name, path in pages.items()}
        with psycopg.connect(dsn, autocommit=True) as conn:
            plans = {
                name: [row[0] for row in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql).fetchall()]  # type: ignore[arg-type]
                for name, sql in PLANS.items()
            }

    print(f"seeded {args.events:,} events / outbox rows / exchanges, {dossiers:,} dossiers in {seeded:.1f} s: {counts}")
    base_p50 = statistics.median(results["GET /healthz (baseline)"])
    print(f"{'page':40} {'p50 ms':>8} {'p99 ms':>8} {'p50 / healthz':>14}")
    for name, lat in results.items():
        p50 = statistics.median(lat)
        p99 = sorted(lat)[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"{name:40} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} {p50 / base_p50:>14.1f}")
    print("\nquery plans (EXPLAIN ANALYZE):")
    for name, lines in plans.items():
        print(f"-- {name}")
        for line in lines:
            print(f"   {line}")


if __name__ == "__main__":
    main()
