"""Backup benchmark: `hub db backup` (VACUUM INTO a new file, then PRAGMA integrity_check and row counts) of an
embedded database holding --dossiers dossiers with their events, outbox rows and exchange records, beside a plain
file copy of the same database (the floor: no snapshot, no check) and SQLite's online backup API, in the same run.

    .venv/bin/python bench/backup.py [--dossiers 50000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.store import db


def fill(path: Path, n: int) -> None:
    """n dossiers, each with one status event, three outbox rows (portal, email, SMS) and one exchange record."""
    now = datetime.now(UTC).isoformat()
    payload = json.dumps({"MaHoSo": "x", "ChuHoSo": "Nguyễn Văn An", "TrichYeuHoSo": "Đăng ký khai sinh" * 4})
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO dossiers (code, agency, procedure_code, status, last_seq, data, created_at, updated_at)"
            " VALUES (?, '000.00.17.H56', '1.001193', 2, 1, ?, ?, ?)",
            ((f"000.00.17.H56-241015-{i:06d}", payload, now, now) for i in range(n)),
        )
        conn.execute(
            "INSERT INTO status_events (event_id, dossier_id, seq, kind, status, payload, client, correlation_id,"
            " created_at) SELECT 'e-' || id, id, 1, 'dossier.sync', 2, data, 'bench', 'c', created_at FROM dossiers"
        )
        for destination in ("national_portal", "email", "sms"):
            conn.execute(
                "INSERT INTO outbox (event_id, dossier_id, seq, destination, operation, payload, idempotency_key,"
                " correlation_id, state, attempts, next_attempt_at, created_at)"
                " SELECT 'e-' || id, id, 1, ?, 'op', data, 'e-' || id || ':' || ?, 'c',"
                " 'delivered', 1, created_at, created_at FROM dossiers",
                (destination, destination),
            )
        conn.execute(
            "INSERT INTO exchanges (peer, operation, correlation_id, request_digest, response_digest, duration_ms,"
            " outcome, at) SELECT 'national_portal', 'DongBoHoSoMC', 'c', hex(randomblob(32)), hex(randomblob(32)),"
            " 12.5, 'ok', created_at FROM dossiers"
        )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dossiers", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        source = tmp / "hub.db"
        url = f"sqlite:///{source}"
        db.upgrade(url)
        fill(source, args.dossiers)
        size = source.stat().st_size

        started = time.perf_counter()
        shutil.copyfile(source, tmp / "copy.db")
        copy_s = time.perf_counter() - started

        started = time.perf_counter()
        with sqlite3.connect(source) as src, sqlite3.connect(tmp / "online.db") as dst:
            src.backup(dst)
        online_s = time.perf_counter() - started

        done = db.backup_sqlite(url, tmp / "backup.db")
        hub_s = float(done["seconds"])
    rows = [
        ("database", f"{size / 1e6:.1f} MB, {args.dossiers:,} dossiers (+ events, 3 outbox rows, exchanges)"),
        ("hub db backup (snapshot + integrity check + counts), s", round(hub_s, 2)),
        ("plain file copy (no snapshot, no check), s", round(copy_s, 2)),
        ("SQLite online backup API, s", round(online_s, 2)),
        ("ratio hub / file copy", round(hub_s / copy_s, 1)),
        ("ratio hub / online backup API", round(hub_s / online_s, 2)),
        ("backup size (compacted), MB", round(done["bytes"] / 1e6, 1)),
    ]
    for name, value in rows:
        print(f"{name:<58}{value}")


if __name__ == "__main__":
    main()
