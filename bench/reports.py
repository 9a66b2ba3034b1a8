# ruff: noqa: E501 - SQL reads better unwrapped
"""Resolution report benchmark (hub.services.reports, ADR 0048) on PostgreSQL: a quarter's report over `--dossiers`
dossiers (a province's quarter: received over three months, six in ten resolved, one in ten withdrawn, the rest
still open; four or five events each), beside the same figures counted by one SQL statement (a GROUP BY with a
lateral look-up of each dossier's first events) in the same database, in the same run — what hub's batches and
its rules in Python cost over what PostgreSQL alone needs. The two must agree (checked).

    .venv/bin/python bench/reports.py [--dossiers 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.common import hub_pg_database
from hub.services import reports
from hub.store import db

# dossier g: received on day g % 92 of July–September 2026 at 08:00 (+07), due 7 days later; by g % 10: 0–5 resolved
# (day +2 .. +12: early, on time or late), 6 withdrawn (7) on day +3, 7–9 still being handled; KenhThucHien 1 or 2
FILL = """
INSERT INTO dossiers (code, agency, procedure_code, status, last_seq, data, due_at, created_at, updated_at)
SELECT '000.00.' || (10 + g % 30) || '.H56-260701-' || lpad(g::text, 6, '0'),
       '000.00.' || (10 + g % 30) || '.H56', (ARRAY['1.001193', '1.000656', '1.004873', '2.000986'])[1 + g % 4],
       CASE WHEN g % 10 <= 5 THEN 10 WHEN g % 10 = 6 THEN 7 ELSE 4 END, 4,
       jsonb_build_object('MaHoSo', 'x', 'KenhThucHien', 1 + g % 2,
                          'NgayTiepNhan', to_char(timestamp '2026-07-01 08:00' + (g % 92) * interval '1 day', 'YYYYMMDDHH24MISS')),
       timestamp '2026-07-08 09:00' + (g % 92) * interval '1 day',
       timestamp '2026-07-01 01:00' + (g % 92) * interval '1 day',
       timestamp '2026-07-01 01:00' + (g % 92 + 14) * interval '1 day'
FROM generate_series(1, :n) g;
INSERT INTO status_events (event_id, dossier_id, seq, kind, status, previous_status, payload, client, correlation_id, created_at)
SELECT md5(d.id || '-' || s.seq), d.id, s.seq, 'dossier.progress', s.status, 2,
       jsonb_build_object('ThoiDiemXuLy', to_char((d.created_at + s.after) AT TIME ZONE 'Asia/Ho_Chi_Minh', 'YYYYMMDDHH24MISS')),
       'bench', 'bench', d.created_at + s.after
FROM dossiers d
CROSS JOIN LATERAL (VALUES
    (1, 2, interval '0'), (2, 4, interval '1 day'),
    (3, CASE WHEN d.status = 10 THEN 9 WHEN d.status = 7 THEN 7 ELSE 4 END, (2 + d.id % 11) * interval '1 day'),
    (4, CASE WHEN d.status = 10 THEN 10 ELSE 4 END, (3 + d.id % 11) * interval '1 day')
) AS s(seq, status, after);
ANALYZE dossiers; ANALYZE status_events
"""

# the same rules in one statement (no NgayKetThucXuLy in these dossiers; every step states its time)
BARE = """
SELECT d.agency, d.procedure_code,
       count(*) FILTER (WHERE r.rec < :lo) AS carried_over,
       count(*) FILTER (WHERE r.rec >= :lo AND d.data->>'KenhThucHien' = '2') AS received_online,
       count(*) FILTER (WHERE r.rec >= :lo AND d.data->>'KenhThucHien' IS DISTINCT FROM '2') AS received_other,
       count(*) FILTER (WHERE f.res < :cut AND f.res <= coalesce(f.ended, f.res) AND (f.res AT TIME ZONE 'Asia/Ho_Chi_Minh')::date < (d.due_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date) AS resolved_early,
       count(*) FILTER (WHERE f.res < :cut AND f.res <= coalesce(f.ended, f.res) AND (f.res AT TIME ZONE 'Asia/Ho_Chi_Minh')::date = (d.due_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date) AS resolved_on_time,
       count(*) FILTER (WHERE f.res < :cut AND f.res <= coalesce(f.ended, f.res) AND (f.res AT TIME ZONE 'Asia/Ho_Chi_Minh')::date > (d.due_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date) AS resolved_late,
       count(*) FILTER (WHERE f.ended < :cut AND f.ended < coalesce(f.res, 'infinity')) AS ended,
       count(*) FILTER (WHERE least(f.res, f.ended) IS NULL OR least(f.res, f.ended) >= :cut) AS in_progress
FROM dossiers d
CROSS JOIN LATERAL (SELECT to_timestamp(d.data->>'NgayTiepNhan', 'YYYYMMDDHH24MISS') AS rec) r
CROSS JOIN LATERAL (
    SELECT min(to_timestamp(e.payload->>'ThoiDiemXuLy', 'YYYYMMDDHH24MISS')) FILTER (WHERE e.status IN (9, 10)) AS res,
           min(to_timestamp(e.payload->>'ThoiDiemXuLy', 'YYYYMMDDHH24MISS')) FILTER (WHERE e.status IN (7, 8)) AS ended
    FROM status_events e WHERE e.dossier_id = d.id AND e.status IN (7, 8, 9, 10)
) f
WHERE (d.status IN (1, 2, 4, 5, 6, 9) OR d.updated_at >= :lo) AND d.status NOT IN (1, 3)
  AND r.rec < :cut AND coalesce(least(f.res, f.ended), 'infinity') >= :lo
GROUP BY 1, 2
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dossiers", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    first, last = date(2026, 8, 1), date(2026, 8, 31)  # a month in the middle: carried over, received, still open
    lo, hi = reports.period(first, last)
    with (
        tempfile.TemporaryDirectory() as t,
        hub_pg_database(Path(t), FILL.replace(":n", str(args.dossiers)).replace("%", "%%")) as url,
    ):
        engine = db.make_engine(url)
        sessions = db.make_sessionmaker(engine)
        hub_s, bare_s = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            with sessions() as s:
                report = reports.resolution(s, first, last, now=datetime.now(UTC))
            hub_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.exec_driver_sql("SET TIME ZONE 'Asia/Ho_Chi_Minh'")
                rows = conn.execute(text(BARE), {"lo": lo, "cut": hi}).mappings().all()
                conn.rollback()
            bare_s.append(time.perf_counter() - started)
        engine.dispose()
    total = report.total().as_dict()
    bare = {k: sum(int(r[k]) for r in rows) for k in rows[0] if k not in ("agency", "procedure_code")}
    ours = {k: total[k] for k in bare}
    assert ours == bare, (ours, bare)
    assert len(report.lines) == len(rows)
    assert report.unreadable == 0
    h, b = statistics.median(hub_s), statistics.median(bare_s)
    read = total["to_resolve"]
    print(
        f"report of {first} – {last} over {args.dossiers:,} dossiers (PostgreSQL; {read:,} counted, {len(rows)} lines; medians of {args.runs})"
    )
    print(f"  hub (reports.resolution, batches of {reports.BATCH}): {h * 1000:,.0f} ms")
    print(f"  one SQL statement, the same figures:        {b * 1000:,.0f} ms")
    print(
        f"  ratio hub / SQL: {h / b:.2f}  (figures agree: {total['resolved']:,} resolved, {total['in_progress']:,} in progress)"
    )


if __name__ == "__main__":
    main()
