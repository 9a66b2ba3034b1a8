"""Payment-callback benchmark: verified CONFIRM callbacks applied per second by hub (hash checked, payment row
locked, credited once, dossier moved out of status 6 with its outbox event, callback recorded) beside a bare
FastAPI POST of the same bodies, both served by uvicorn with the same number of worker processes (default 2: one
per core here, as a deployment runs them), in the same run.

    .venv/bin/python bench/payments.py [--callbacks 1000] [--threads 16] [--workers 2] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, awaiting_payment, free_port, hub_env, pg_database, seed_runtime, wait_http
from hub.adapters.payment.dvc import CONFIRM_FIELDS, mac
from hub.domain.dates import utcnow
from hub.store.models import Payment
from tests.helpers import dossier

PARTNER, SECRET = "HUB-BENCH", "bench-secret-" + "x" * 20


def fire(url: str, bodies: list[bytes], threads: int) -> tuple[float, list[float], list[str]]:
    local = threading.local()
    latencies: list[float] = []
    codes: list[str] = []
    lock = threading.Lock()

    def one(body: bytes) -> None:
        if not hasattr(local, "c"):
            local.c = httpx.Client(timeout=30)
        t = time.perf_counter()
        r = local.c.post(url, content=body, headers={"Content-Type": "application/json"})
        with lock:
            latencies.append(time.perf_counter() - t)
            codes.append(r.json().get("MaLoi", "?"))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, bodies))
    return len(bodies) / (time.perf_counter() - started), latencies, codes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--callbacks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn worker processes of both servers (a deployment: one per core)"
    )
    args = parser.parse_args()
    n = args.callbacks

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db_url = stack.enter_context(pg_database()) if args.database == "postgresql" else ""
        env, key = hub_env(
            tmp,
            HUB_DATABASE_URL=db_url,
            HUB_PAYMENT_DVC_URL="http://127.0.0.1:9",  # never called: callbacks only
            HUB_PAYMENT_DVC_PARTNER=PARTNER,
            HUB_PAYMENT_DVC_SECRET=SECRET,
            HUB_PAYMENT_CHECK_INTERVAL="0",
            HUB_WORKER_ENABLED="false",
            HUB_NATIONAL_PORTAL_URL="http://127.0.0.1:9",
        )
        # seed: n dossiers in status 6, each with a pending payment, through hub's own services
        seed = seed_runtime(tmp, db_url, env["HUB_SECRET_KEY"], key)

        paid_at = (datetime.now(UTC) + timedelta(hours=7)).strftime("%Y%m%d%H%M%S")
        bodies: list[bytes] = []
        fees = [{"TenPhiLePhi": "Lệ phí", "Gia": 8000}]
        for i in range(n):
            d = dossier(i % 9999 + 1, DanhSachLePhi=fees)
            if i >= 9999:  # MaHoSo sequences are 4 digits: past 9,999 the codes of the days before
                agency, day, seq = str(d["MaHoSo"]).split("-")
                earlier = date(2000 + int(day[:2]), int(day[2:4]), int(day[4:])) - timedelta(days=i // 9999)
                d["MaHoSo"] = f"{agency}-{earlier:%y%m%d}-{seq}"
            awaiting_payment(seed, d)
            reference = f"HUBBENCH{i:08d}"
            now = utcnow()
            with seed.sessions.begin() as s:
                s.add(
                    Payment(reference=reference, dossier_code=d["MaHoSo"], agency=d["MaHoSo"].split("-")[0],
                            client="bench", platform="dvc", amount=8000, currency="VND",
                            fees=[{"TenPhiLePhi": "Lệ phí", "SoTien": 8000}], status="pending",
                            pay_url="http://127.0.0.1:9/pay", created_at=now, updated_at=now)
                )  # fmt: skip
            msg = {"LoaiBanTin": "CONFIRM", "MaLoi": "00", "MaDoiTac": PARTNER, "MaThamChieu": reference,
                   "SoTien": 8000, "MaTienTe": "VND", "MaGiaoDich": f"GDBENCH{i:08d}", "MaNganHang": "NCB",
                   "ThoiGianGD": paid_at, "ThongTinGiaoDich": "bench"}  # fmt: skip
            msg["MaXacThuc"] = mac(msg, CONFIRM_FIELDS, SECRET)
            bodies.append(json.dumps(msg, ensure_ascii=False).encode())
        seed.close()

        bare_port, hub_port = free_port(), free_port()
        bare = Proc(
            [str(BIN / "uvicorn"), "bench.bare_app:app", "--port", str(bare_port), "--http", "httptools",
             "--loop", "uvloop", "--log-level", "warning", "--no-access-log", "--workers", str(args.workers)],
            env, tmp / "bare.log",
        )  # fmt: skip
        stack.callback(bare.stop)
        serve = [str(BIN / "hub"), "serve", "--port", str(hub_port), "--no-sandbox", "--workers", str(args.workers)]
        api = Proc(serve, env, tmp / "hub.log")
        stack.callback(api.stop)
        wait_http(f"http://127.0.0.1:{bare_port}/docs")
        wait_http(f"http://127.0.0.1:{hub_port}/healthz")

        fire(f"http://127.0.0.1:{bare_port}/bare-callback", bodies[:100], args.threads)  # warm up
        base_rate, base_lat, _ = fire(f"http://127.0.0.1:{bare_port}/bare-callback", bodies, args.threads)
        rate, lat, codes = fire(f"http://127.0.0.1:{hub_port}/v1/payments/callbacks/dvc", bodies, args.threads)
        again, _, codes_again = fire(f"http://127.0.0.1:{hub_port}/v1/payments/callbacks/dvc", bodies, args.threads)

    def ms(values: list[float], q: float) -> float:
        return round(sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1000, 1)

    report: dict[str, Any] = {
        "database": args.database,
        "callbacks": n,
        "threads": args.threads,
        "uvicorn workers (hub and bare alike)": args.workers,
        "bare FastAPI POST of the same bodies (req/s)": round(base_rate),
        "bare p50/p99 (ms)": (round(statistics.median(base_lat) * 1000, 1), ms(base_lat, 0.99)),
        "verified callbacks applied (req/s)": round(rate),
        "applied p50/p99 (ms)": (round(statistics.median(lat) * 1000, 1), ms(lat, 0.99)),
        "ratio applied / bare": round(rate / base_rate, 2),
        "answers (first pass)": dict(sorted({c: codes.count(c) for c in set(codes)}.items())),
        "repeats of the same callbacks (req/s, all duplicates)": round(again),
        "answers (second pass)": dict(sorted({c: codes_again.count(c) for c in set(codes_again)}.items())),
    }
    for k, v in report.items():
        print(f"{k:55} {v}")


if __name__ == "__main__":
    main()
