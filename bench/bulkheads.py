"""Bulkheads benchmark (ADR 0046): what a request that needs no peer costs while the population database hangs
and pre-fills pile up waiting on it, beside the same request with nothing waiting, in the same run.

hub (`hub serve`, embedded, its worker off) and the sandboxes each run in their own process. The request measured
is `GET /v1/dossiers/{MaHoSo}` (a dossier's view: the database only), one at a time; the load is --clients
threads each posting pre-fills in a loop to a register answering in --register-latency-ms (its latency knob: a
register that has nearly stopped answering). Without compartments those pre-fills held every thread of the API's
shared pool and the dossier's view waited for the register; with them the view's latency stays near its baseline
and the pre-fills past HUB_PEER_CONCURRENCY are answered 503 `peer_busy`.

    .venv/bin/python bench/bulkheads.py [--requests 200] [--clients 60] [--register-latency-ms 3000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, hub_env, sandbox_peers, wait_http
from bench.loadgen import dossier


def views(client: httpx.Client, code: str, n: int) -> list[float]:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.get(f"/v1/dossiers/{code}")
        took.append(time.perf_counter() - started)
        if r.status_code != 200:
            raise SystemExit(f"GET /v1/dossiers/{code}: {r.status_code} {r.text[:200]}")
    return took


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200, help="dossier views measured, before and under the load")
    ap.add_argument("--clients", type=int, default=60, help="threads posting pre-fills to the hung register")
    ap.add_argument("--register-latency-ms", type=float, default=3000.0)
    args = ap.parse_args()

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ports = stack.enter_context(sandbox_peers(tmp))
        register = f"http://127.0.0.1:{ports['population']}"
        people = httpx.get(f"{register}/_sandbox/people", params={"limit": 2000}).json()["items"]
        ids = [p["SoDinhDanh"] for p in people]

        env, key = hub_env(
            tmp,
            HUB_POPULATION_URL=f"{register}/ws/congdan",
            HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{ports['national']}",
            HUB_WORKER_ENABLED="false",
            HUB_READ_TIMEOUT="30",  # the register hangs, it does not fail: its answers come, late
        )
        env["HUB_CLIENTS"] = json.dumps(
            [{"name": "bench", "api_key": key, "agencies": ["*"], "prefill_procedures": ["*"],
              "prefill_purposes": ["civil_status_registration"], "prefill_per_minute": None}]
        )  # fmt: skip
        api = Proc([str(BIN / "hub"), "serve", "--port", str(ports["hub"]), "--no-sandbox"], env, tmp / "hub.log")
        stack.callback(api.stop)
        base = f"http://127.0.0.1:{ports['hub']}"
        wait_http(f"{base}/healthz")
        client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60)
        stack.callback(client.close)
        d = dossier(1, prefix=7)
        if client.post("/v1/dossiers", json=d).status_code != 202:
            raise SystemExit("could not file the dossier")
        code = d["MaHoSo"]

        views(client, code, 50)  # warm up
        calm = views(client, code, args.requests)

        httpx.post(f"{register}/_sandbox/faults", json={"latency_ms": args.register_latency_ms}).raise_for_status()
        stop = threading.Event()
        answers: Counter[str] = Counter()
        lock = threading.Lock()

        def prefill_loop(i: int) -> None:
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as c:
                k = i
                while not stop.is_set():
                    r = c.post(
                        "/v1/prefill",
                        json={"procedure": "1.004873", "subject_id": ids[k % len(ids)],
                              "purpose": "civil_status_registration",
                              "requested_by": {"officer": "bench", "agency": "000.00.17.H56"}},
                    )  # fmt: skip
                    what = r.json().get("code", "?") if r.status_code != 200 else "200"
                    with lock:
                        answers[what] += 1
                    k += args.clients
                    if r.status_code != 200:
                        time.sleep(1)  # as its Retry-After says

        loaders = [threading.Thread(target=prefill_loop, args=(i,), daemon=True) for i in range(args.clients)]
        try:
            for t in loaders:
                t.start()
            time.sleep(1.0)  # every loader has a pre-fill waiting on the register, or for a place to
            loaded = views(client, code, args.requests)
        finally:
            stop.set()
            httpx.post(f"{register}/_sandbox/faults", json={"latency_ms": 0})
        for t in loaders:
            t.join(timeout=args.register_latency_ms / 1000 * 3 + 30)

    p50_calm, p50_loaded = statistics.median(calm) * 1000, statistics.median(loaded) * 1000
    print(f"GET /v1/dossiers/{{MaHoSo}}, {args.requests} one at a time (hub embedded, SQLite)")
    print(f"  nothing waiting:            p50 {p50_calm:.2f} ms, p99 {pct(calm, 0.99):.2f} ms")
    print(
        f"  {args.clients} clients' pre-fills waiting on a register answering in {args.register_latency_ms:.0f} ms: "
        f"p50 {p50_loaded:.2f} ms, p99 {pct(loaded, 0.99):.2f} ms"
    )
    print(f"  ratio loaded / calm (p50): {p50_loaded / p50_calm:.2f}")
    print(f"  pre-fills answered meanwhile: {dict(answers)}")


if __name__ == "__main__":
    main()
