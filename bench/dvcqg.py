"""The portal's own protocol (ADR 0040) against hub's own batch API, in the same run: dossiers a second a one-stop
system written for DVCQG files through `/dvcqg/api/service` (DongBoHoSoMC, its codes written as strings, as
OpenCPS writes them), beside the same dossiers through `POST /v1/dossiers/batch` (hub's API, numbers as numbers),
and their ratio — what the portal's protocol costs over hub's own. hub is the embedded default (SQLite, each
commit synced), its worker off (ingest alone is measured); rounds alternate the two, each on fresh dossiers.

    .venv/bin/python bench/dvcqg.py [--dossiers 3000] [--batch 50] [--threads 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, wait_http
from bench.loadgen import dossier
from tests.helpers import as_one_stop_writes_it

CLIENT = "bench"


def rate(send: Any, batches: list[list[dict[str, Any]]], threads: int) -> float:
    """Dossiers a second, `threads` batches at a time; every batch must be taken whole."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, batches))
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dossiers", type=int, default=3000, help="dossiers a round, each way")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env, api_key = hub_env(tmp, HUB_WORKER_ENABLED="false")
        port = free_port()
        hub = Proc([str(BIN / "hub"), "serve", "--no-sandbox", "--port", str(port)], env, tmp / "hub.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/healthz")
            with httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=args.threads)) as http:
                signed = http.post("/dvcqg/api/auth", json={"username": CLIENT, "password": api_key}).json()
                if signed["error_code"] != "00":
                    raise SystemExit(f"sign-in refused: {signed}")
                session = signed["session"]

                def as_portal(items: list[dict[str, Any]]) -> None:
                    body = {"session": session, "madonvi": "000.00.17.H56", "service": "DongBoHoSoMC", "data": items}
                    answer = http.post("/dvcqg/api/service", json=body).json()
                    if answer["error_code"] != "00":
                        raise SystemExit(f"DongBoHoSoMC not taken: {answer['message'][:300]}")

                def as_hub(items: list[dict[str, Any]]) -> None:
                    r = http.post("/v1/dossiers/batch", json={"data": items}, headers={"X-API-Key": api_key})
                    if r.status_code != 200 or r.json()["refused"]:
                        raise SystemExit(f"batch not taken whole: {r.text[:300]}")

                def batches(prefix: int, portal_style: bool) -> list[list[dict[str, Any]]]:
                    items = [dossier(i, prefix=prefix) for i in range(args.dossiers)]
                    if portal_style:
                        items = [as_one_stop_writes_it(d) for d in items]
                    return [items[i : i + args.batch] for i in range(0, len(items), args.batch)]

                rate(as_portal, batches(2 * args.rounds, True)[:4], args.threads)  # warm-up, both ways
                rate(as_hub, batches(2 * args.rounds + 1, False)[:4], args.threads)
                portal_rates: list[float] = []
                hub_rates: list[float] = []
                for r in range(args.rounds):
                    portal_rates.append(rate(as_portal, batches(2 * r, True), args.threads))
                    hub_rates.append(rate(as_hub, batches(2 * r + 1, False), args.threads))
        finally:
            hub.stop()
    portal, own = statistics.median(portal_rates), statistics.median(hub_rates)
    print(f"DVCQG protocol vs hub's batch API — {args.dossiers} dossiers × {args.rounds} rounds each way, batches of")
    print(f"{args.batch}, {args.threads} at a time, SQLite (commits synced), worker off")
    shown = {name: ", ".join(f"{x:.0f}" for x in xs) for name, xs in (("portal", portal_rates), ("hub", hub_rates))}
    print(f"  /dvcqg/api/service DongBoHoSoMC   {portal:8.0f} dossiers/s  (rounds: {shown['portal']})")
    print(f"  POST /v1/dossiers/batch           {own:8.0f} dossiers/s  (rounds: {shown['hub']})")
    print(f"  ratio (portal's protocol / hub's own API): {portal / own:.2f}")


if __name__ == "__main__":
    main()
