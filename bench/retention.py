# ruff: noqa: E501 - SQL reads better unwrapped
"""Retention benchmark: closed dossiers' personal data removed (hub.services.retention, ADR 0037) on PostgreSQL —
dossiers a second, each with its sync event, three progress steps and four delivered messages, beside the same
rows cut down to the fields kept (retention.KEEP) by bare SQL in one statement per table (`jsonb_each`), in a copy
of the same database, in the same run: what hub's row-by-row scrub (any depth, the fields of every message shape)
costs over what PostgreSQL alone needs. Among `--open` open dossiers (which the job must walk past cheaply).

    .venv/bin/python bench/retention.py [--closed 5000] [--open 50000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.common import hub_pg_database
from hub.services import retention
from hub.store import db

PERSON = (
    '{"MaHoSo": "X", "MaTTHC": "1.001193", "ChuHoSo": "Nguyễn Thị Hồng Nhung", "SoGiayToChuHoSo": "079195001234", '
    '"SoDienThoai": "0912345678", "Email": "nhung@example.vn", "TrichYeuHoSo": "Đăng ký khai sinh cho con: Trần Minh '
    'Khang", "NgayTiepNhan": "20200101080000", "TaiLieuNop": [{"TenTepDinhKem": "to-khai.pdf", "DuongDanTaiTep": '
    '"https://one-stop/files/1"}], "DanhSachLePhi": [{"TenPhiLePhi": "Lệ phí", "Gia": 8000}]}'
)
STEP = '{"MaHoSo": "X", "NguoiXuLy": "Lê Văn Tâm", "NoiDungXuLy": "Đã gọi 0912345678 báo bổ sung", "TrangThai": 4}'

FILL = """
INSERT INTO dossiers (code, agency, procedure_code, status, last_seq, data, created_at, updated_at)
SELECT 'D-' || g, '000.00.17.H56', '1.001193', CASE WHEN g <= :closed THEN 10 ELSE 4 END, 4, ':person'::jsonb,
       now() - interval '3 years', now() - interval '2 years'
FROM generate_series(1, :closed + :open) g;
INSERT INTO status_events (event_id, dossier_id, seq, kind, status, previous_status, payload, client, correlation_id,
                           created_at)
SELECT md5(d.id || '-' || s), d.id, s, CASE WHEN s = 1 THEN 'dossier.sync' ELSE 'dossier.progress' END, 4, 2,
       CASE WHEN s = 1 THEN ':person'::jsonb ELSE ':step'::jsonb END, 'bench', 'bench', now()
FROM dossiers d, generate_series(1, 4) s;
INSERT INTO outbox (event_id, dossier_id, seq, destination, operation, payload, idempotency_key, correlation_id,
                    state, attempts, next_attempt_at, created_at, delivered_at, peer_reply)
SELECT md5(d.id || '-' || s), d.id, s, 'national_portal', 'DongBoHoSoMC',
       jsonb_build_object('isUpdating', false, 'data', jsonb_build_array(':person'::jsonb)),
       md5(d.id || '-' || s), 'bench', 'delivered', 1, now(), now(), now(), '{"error_code": 0}'::jsonb
FROM dossiers d, generate_series(1, 4) s;
ANALYZE dossiers; ANALYZE status_events; ANALYZE outbox
"""

# the same rows cut down to retention.KEEP's keys (at the top level of each, and of the message's dossier)
BARE = """
UPDATE dossiers SET data = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(data) AS j(k, v) WHERE k = ANY(CAST(:fields AS text[]))),
       subject_hmac = NULL, redacted_at = now()
WHERE status IN (3, 7, 8, 10) AND redacted_at IS NULL AND updated_at < now() - interval '1 year';
UPDATE status_events e SET payload = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(e.payload) AS j(k, v) WHERE k = ANY(CAST(:fields AS text[])))
FROM dossiers d WHERE e.dossier_id = d.id AND d.status IN (3, 7, 8, 10);
UPDATE outbox o SET payload = jsonb_set(o.payload, '{data,0}', (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(o.payload #> '{data,0}') AS j(k, v) WHERE k = ANY(CAST(:fields AS text[]))))
FROM dossiers d WHERE o.dossier_id = d.id AND d.status IN (3, 7, 8, 10)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--closed", type=int, default=5000)
    ap.add_argument("--open", type=int, default=50_000)
    args = ap.parse_args()
    fill = (
        FILL.replace(":closed", str(args.closed))
        .replace(":open", str(args.open))
        .replace(":person", PERSON)
        .replace(":step", STEP)
    )
    with tempfile.TemporaryDirectory() as t:
        with hub_pg_database(Path(t), fill) as url:
            engine = db.make_engine(url)
            started = time.perf_counter()
            done = retention.redact_all(db.make_sessionmaker(engine), 365)
            hub_s = time.perf_counter() - started
            engine.dispose()
        with hub_pg_database(Path(t), fill) as url:
            engine = db.make_engine(url)
            started = time.perf_counter()
            with engine.begin() as conn:
                for statement in BARE.split(";"):
                    conn.execute(text(statement), {"fields": sorted(retention.KEEP)})
            bare_s = time.perf_counter() - started
            engine.dispose()
    assert done["dossiers"] == args.closed, done
    hub_rate, bare_rate = args.closed / hub_s, args.closed / bare_s
    print(f"personal data of {args.closed} closed dossiers removed, among {args.open} open ones (PostgreSQL)")
    print(f"  hub (redact_all, batches of {retention.BATCH}): {hub_rate:,.0f} dossiers/s ({done})")
    print(f"  bare SQL, one UPDATE a table:             {bare_rate:,.0f} dossiers/s")
    print(f"  ratio hub / bare: {hub_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
