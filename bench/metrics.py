"""Metrics scrape benchmark: what one Prometheus scrape of `/metrics` costs when the exchange record and the access
log hold a month of a busy province (millions of rows; the access log is never purged) and the payments a year of
it (a quarter as many: payments are never purged either), beside the same scrape
with an empty history, in the same run. hub reads the counters of append-only tables incrementally (a Tally per
table: the rows added since the last scrape), so the ratio stays near 1 after the process's first scrape, which
counts everything once. Also what `/readyz` reads of the exchange record (each peer's latest exchange), beside the
GROUP BY it ran before.

    .venv/bin/python bench/metrics.py [--rows 2000000] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest

from bench.common import hub_pg_database, p50_max
from hub.metrics import make_registry
from hub.store import db

FILL = """
INSERT INTO exchanges (at, peer, operation, correlation_id, outbox_id, request_digest, response_digest, duration_ms,
                       outcome, error_code)
SELECT now() - mod(g, 2592000) * interval '1 second',
       (ARRAY['national_portal','one_stop','population','sms','payment_dvc'])[1 + mod(g, 5)],
       (ARRAY['DongBoHoSoMC','CapNhatTienDoHoSoMC','TraCuuThongTinCongDan'])[1 + mod(g, 3)],
       md5(g::text), g, md5(g::text), md5(g::text), mod(g, 50)::float,
       CASE WHEN mod(g, 20) = 0 THEN 'retryable' ELSE 'ok' END, NULL
FROM generate_series(1, :rows) g;
ANALYZE exchanges;
INSERT INTO payments (reference, dossier_code, agency, client, platform, amount, currency, fees, status, pay_url,
                      transaction_id, created_at, updated_at)
SELECT 'HUB' || g, '000.00.17.H56-261204-' || lpad((1 + mod(g, 9999))::text, 4, '0'), '000.00.17.H56', 'onestop',
       CASE WHEN mod(g, 10) = 0 THEN 'vnpay' ELSE 'dvc' END, 8000, 'VND', '[]',
       CASE WHEN mod(g, 50) = 0 THEN 'pending' WHEN mod(g, 37) = 0 THEN 'expired' ELSE 'paid' END, 'http://pay',
       CASE WHEN mod(g, 50) = 0 OR mod(g, 37) = 0 THEN NULL ELSE 'GD' || g END,
       now() - mod(g, 31536000) * interval '1 second', now()
FROM generate_series(1, :rows / 4) g;
ANALYZE payments;
"""


def scrapes(url: str, n: int, *, grow: int) -> tuple[float, list[float]]:
    """(the first scrape's seconds, the next `n` scrapes' seconds); `grow` exchange rows added before each."""
    engine = db.make_engine(url)
    registry = make_registry(db.make_sessionmaker(engine))[0]
    add = (
        "INSERT INTO exchanges (at, peer, operation, correlation_id, request_digest, duration_ms, outcome) "
        "SELECT now(), 'national_portal', 'CapNhatTienDoHoSoMC', 'c', 'd', 3.0, 'ok' FROM generate_series(1, %(n)s)"
    )
    try:
        started = time.perf_counter()
        generate_latest(registry)
        first = time.perf_counter() - started
        took = []
        for _ in range(n):
            with engine.begin() as conn:
                conn.exec_driver_sql(add, {"n": grow})  # traffic between two scrapes
            started = time.perf_counter()
            generate_latest(registry)
            took.append(time.perf_counter() - started)
        return first, took
    finally:
        engine.dispose()


def recount(url: str) -> float:
    """What counting every payment by platform and status costs (hub does it at most once a minute)."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            started = time.perf_counter()
            conn.exec_driver_sql("SELECT platform, status, count(*) FROM payments GROUP BY platform, status").all()
            return time.perf_counter() - started
    finally:
        engine.dispose()


def peers_read(url: str, n: int) -> tuple[list[float], list[float]]:
    """What `/readyz` and the console's peers page read of the exchange record — each peer's latest exchange by
    outcome (hub.sync.jobs.latest_exchanges: index seeks) — beside the GROUP BY that /readyz ran before, `n` times
    each."""
    from sqlalchemy import text

    from hub.sync.jobs import latest_exchanges

    engine = db.make_engine(url)
    seeks, scans = [], []
    try:
        with db.make_sessionmaker(engine)() as session:
            for _ in range(n):
                started = time.perf_counter()
                latest_exchanges(session)
                seeks.append(time.perf_counter() - started)
                started = time.perf_counter()
                session.execute(text("SELECT peer, outcome, max(at) FROM exchanges GROUP BY peer, outcome")).all()
                scans.append(time.perf_counter() - started)
        return seeks, scans
    finally:
        engine.dispose()


def measure(rows: int, n: int, tmp: Path) -> tuple[float, list[float], float, tuple[list[float], list[float]]]:
    with hub_pg_database(tmp, FILL.replace(":rows", str(rows)) if rows else "") as url:
        first, took = scrapes(url, n, grow=3000)  # ~200 exchanges/s between scrapes 15 s apart
        return first, took, recount(url), peers_read(url, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        _, empty, _, _ = measure(0, args.scrapes, Path(t))
        first, full, payments, (seeks, scans) = measure(args.rows, args.scrapes, Path(t))

    print(f"/metrics scrape on PostgreSQL, {args.scrapes} scrapes, 3,000 exchanges added between two")
    print(f"  empty history:                       {p50_max(empty, 1)}")
    print(f"  {args.rows:>9,} exchanges, {args.rows // 4:,} payments: {p50_max(full, 1)}")
    print(f"  (that process's first scrape, which counts them all once: {first * 1000:.0f} ms)")
    print(f"  ratio: {statistics.median(full) / statistics.median(empty):.2f}")
    print(f"  (payments by platform and status, counted again once a minute at most: {payments * 1000:.0f} ms)")
    print(f"/readyz's read of each peer's latest exchanges, {args.rows:,} exchanges:")
    print(f"  index seeks per peer and outcome (now): {p50_max(seeks, 1)}")
    print(f"  GROUP BY peer, outcome (before):         {p50_max(scans, 1)}")
    print(f"  ratio: {statistics.median(seeks) / statistics.median(scans):.3f}")


if __name__ == "__main__":
    main()
