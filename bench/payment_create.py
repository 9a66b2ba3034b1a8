"""Payment-creation benchmark: `POST /v1/payments` (the dossier locked, its fees checked, the payment written and
claimed, INIT signed and sent to the DVC payment-platform sandbox, its signed reply verified, the pay link kept)
beside the bare INIT — the same signed message through hub's own platform client, from this process, to the same
sandbox — in the same run, one at a time and under --threads concurrent clients. Then the same request sent twice
at once for each of --pairs dossiers (a double click): how many INITs the platform received (one a dossier) and
what the two requests were answered.

The sandbox runs in its own process (`hub sandbox`), hub in another (`hub serve`, embedded mode, no worker).

    .venv/bin/python bench/payment_create.py [--payments 300] [--threads 8] [--pairs 50] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BIN,
    Proc,
    awaiting_payment,
    free_port,
    hub_env,
    pg_database,
    sandbox_peers,
    seed_runtime,
    wait_http,
)
from hub.adapters.payment.base import PaymentOrder
from hub.adapters.payment.dvc import DvcPaymentClient
from tests.helpers import dossier

PARTNER, SECRET = "HUB-BENCH", "bench-secret-" + "x" * 20
FEES = [{"TenPhiLePhi": "Lệ phí cấp bản sao trích lục", "MaPhiLePhi": "LPTL", "Gia": 8000}]


def timed(items: list[Any], threads: int, one: Callable[[Any], None]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def run(item: Any) -> None:
        t = time.perf_counter()
        one(item)
        with lock:
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, items))
    return len(items) / (time.perf_counter() - started), latencies


def ms(values: list[float], q: float) -> float:
    return round(sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    n, pairs = args.payments, args.pairs
    if 2 * n + pairs > 9999:
        raise SystemExit("MaHoSo sequences are 4 digits: at most 9,999 dossiers a day")

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pay_port = free_port()
        ports = stack.enter_context(
            sandbox_peers(
                tmp,
                HUB_SANDBOX_PAYMENT_PORT=str(pay_port),
                HUB_PAYMENT_DVC_PARTNER=PARTNER,
                HUB_PAYMENT_DVC_SECRET=SECRET,
            )
        )
        platform_url = f"http://127.0.0.1:{pay_port}"
        wait_http(f"{platform_url}/_sandbox/payments")
        db_url = stack.enter_context(pg_database()) if args.database == "postgresql" else ""
        env, key = hub_env(
            tmp,
            HUB_DATABASE_URL=db_url,
            HUB_PAYMENT_DVC_URL=platform_url,
            HUB_PAYMENT_DVC_PARTNER=PARTNER,
            HUB_PAYMENT_DVC_SECRET=SECRET,
            HUB_PAYMENT_CHECK_INTERVAL="0",
            HUB_WORKER_ENABLED="false",
            HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{ports['national']}",
        )
        # seed: dossiers in status 6 (payment requested), through hub's own services
        seed = seed_runtime(tmp, db_url, env["HUB_SECRET_KEY"], key)

        codes: list[str] = []
        for i in range(n + pairs):
            d = dossier(i + 1, MaTTHC="2.000635", TenTTHC="Cấp bản sao trích lục khai sinh", DanhSachLePhi=FEES)
            awaiting_payment(seed, d)
            codes.append(str(d["MaHoSo"]))
        seed.close()
        singles, doubled = codes[:n], codes[n:]

        # the baseline: INIT through hub's own platform client, straight to the sandbox
        bare = DvcPaymentClient(platform_url, partner=PARTNER, secret=SECRET)
        stack.callback(bare.close)

        def init(i: int) -> None:
            bare.create(
                PaymentOrder(
                    reference=f"BARE{uuid.uuid4().hex[:16].upper()}", amount=8000, dossier_code=codes[i % len(codes)],
                    procedure_code="2.000635", fees=[{"TenPhiLePhi": FEES[0]["TenPhiLePhi"], "SoTien": 8000}],
                    payer_name="Nguyễn Văn A", description="bench", callback_url="http://127.0.0.1:9/cb",
                    client_ip="127.0.0.1",
                ),
                correlation_id="bench",
            )  # fmt: skip

        hub_port = free_port()
        api = Proc([str(BIN / "hub"), "serve", "--port", str(hub_port), "--no-sandbox"], env, tmp / "hub.log")
        stack.callback(api.stop)
        wait_http(f"http://127.0.0.1:{hub_port}/healthz")
        local = threading.local()
        answers: list[int] = []

        def post(code: str) -> None:
            if not hasattr(local, "c"):
                local.c = httpx.Client(base_url=f"http://127.0.0.1:{hub_port}", headers={"X-API-Key": key}, timeout=60)
            r = local.c.post("/v1/payments", json={"MaHoSo": code})
            answers.append(r.status_code)

        timed(list(range(50)), 1, init)  # warm up
        half = n // 2
        bare_one = timed(list(range(half)), 1, init)[1]
        bare_rate, bare_lat = timed(list(range(n)), args.threads, init)
        hub_one = timed(singles[:half], 1, post)[1]
        hub_rate, hub_lat = timed(singles[half:], args.threads, post)
        created = Counter(answers)
        answers.clear()
        timed([c for c in doubled for _ in range(2)], max(2, args.threads), post)  # each dossier's two at once
        doubled_answers = Counter(answers)
        made = httpx.get(f"{platform_url}/_sandbox/payments").json()["items"]
        inits = Counter(p["inits"] for p in made if p["reference"].startswith("HUB"))

    report: dict[str, Any] = {
        "database": args.database,
        "payments": n,
        "INIT through hub's platform client, one at a time, p50/p99 (ms)": (ms(bare_one, 0.5), ms(bare_one, 0.99)),
        "POST /v1/payments, one at a time, p50/p99 (ms)": (ms(hub_one, 0.5), ms(hub_one, 0.99)),
        "ratio of p50s hub / bare INIT": round(statistics.median(hub_one) / statistics.median(bare_one), 2),
        f"bare INIT, {args.threads} threads (req/s)": round(bare_rate),
        f"POST /v1/payments, {args.threads} threads (payments/s)": round(hub_rate),
        "ratio hub / bare INIT": round(hub_rate / bare_rate, 2),
        "bare INIT under load, p50/p99 (ms)": (ms(bare_lat, 0.5), ms(bare_lat, 0.99)),
        "POST /v1/payments under load, p50/p99 (ms)": (ms(hub_lat, 0.5), ms(hub_lat, 0.99)),
        "answers": dict(sorted(created.items())),
        f"{pairs} dossiers asked twice at once: answers": dict(sorted(doubled_answers.items())),
        "INITs the platform received per payment (count of payments)": dict(sorted(inits.items())),
    }
    for k, v in report.items():
        print(f"{k:64} {v}")


if __name__ == "__main__":
    main()
