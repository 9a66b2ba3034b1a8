"""Relay claim benchmark: how long one claim of a batch takes on PostgreSQL when a long outage has left a backlog
waiting (10 events per dossier, so nine in ten waiting rows are behind an earlier one of their dossier), beside
the same claim with only one batch waiting, in the same database. A claim that costs the batch and not the
backlog (ADR 0011) keeps the ratio near 1.

    .venv/bin/python bench/claim.py [--backlog 100000] [--batch 50] [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import hub_pg_database, p50_max
from hub.store import db
from hub.sync import outbox

FILL = """
INSERT INTO dossiers (code, agency, procedure_code, status, last_seq, data, created_at, updated_at)
SELECT '000.00.17.H56-240101-' || lpad(g::text, 6, '0'), '000.00.17.H56', '1.001193', 4, 10, '{}', now(), now()
FROM generate_series(1, :dossiers) g;
INSERT INTO outbox (event_id, dossier_id, seq, destination, operation, payload, idempotency_key, correlation_id,
                    state, attempts, next_attempt_at, created_at)
SELECT md5(d.id::text || '-' || s), d.id, s, 'national_portal', 'CapNhatTienDoHoSoMC', '{}',
       md5(d.id::text || '-' || s), 'bench', 'pending', 0, now() - interval '1 hour' + s * interval '1 second', now()
FROM dossiers d, generate_series(1, 10) s;
ANALYZE dossiers;
ANALYZE outbox;
"""


def time_claims(url: str, batch: int, repeat: int) -> list[float]:
    """Claim a batch `repeat` times, each in a transaction rolled back (the backlog stays as it is)."""
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)
    took: list[float] = []
    try:
        for _ in range(repeat):
            with sessions() as s, s.begin():
                started = time.perf_counter()
                got = outbox.claim(s, batch, 60, ["national_portal"])
                took.append(time.perf_counter() - started)
                assert len(got) == batch, len(got)
                s.rollback()
    finally:
        engine.dispose()
    return took


def measure(waiting: int, batch: int, repeat: int, tmp: Path) -> list[float]:
    with hub_pg_database(tmp, FILL.replace(":dossiers", str(max(1, waiting // 10)))) as url:
        time_claims(url, batch, 3)  # warm the connection and the plan cache
        return time_claims(url, batch, repeat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        small = measure(args.batch * 10, args.batch, args.repeat, Path(t))
        large = measure(args.backlog, args.batch, args.repeat, Path(t))

    print(f"relay claim of {args.batch} rows on PostgreSQL, {args.repeat} claims each (rolled back)")
    print(f"  {args.batch * 10:>7} waiting (one batch of heads): {p50_max(small)}")
    print(f"  {args.backlog:>7} waiting (after an outage):      {p50_max(large)}")
    print(f"  ratio backlog / one batch: {statistics.median(large) / statistics.median(small):.2f}")


if __name__ == "__main__":
    main()
