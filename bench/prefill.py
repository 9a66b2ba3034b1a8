"""Pre-fill benchmark: `POST /v1/prefill` (birth registration by a married parent: two population look-ups, the
form filled, two hash-chained access-log entries) cold (each citizen for the first time) and warm (again, from
the encrypted cache), beside the bare SOAP look-up through the same zeep client against the same sandbox, in the
same run. A cold pre-fill makes two look-ups, so its p50 is compared with the bare call's.

    .venv/bin/python bench/prefill.py [--requests 600] [--threads 8] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, pg_database, wait_http
from hub.adapters.population import CitizenLookup, PopulationClient
from hub.sandbox import population


def timed(n: int, threads: int, one: Callable[[int], None]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        t = time.perf_counter()
        one(i)
        with lock:
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(n)))
    return n / (time.perf_counter() - started), latencies


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        # the sandbox and hub each in their own process, as in a deployment (no shared GIL with the load)
        ports = {name: free_port() for name in ("national", "onestop", "population", "hub")}
        sandbox_env, _ = hub_env(tmp / "sandbox")
        sandbox = Proc(
            [str(BIN / "hub"), "sandbox", "--national-port", str(ports["national"]), "--one-stop-port",
             str(ports["onestop"]), "--population-port", str(ports["population"])],
            sandbox_env,
            tmp / "sandbox.log",
        )  # fmt: skip
        stack.callback(sandbox.stop)
        address = f"http://127.0.0.1:{ports['population']}/ws/congdan"
        wait_http(address)
        people = httpx.get(
            f"http://127.0.0.1:{ports['population']}/_sandbox/people", params={"limit": 400, "married": True}
        ).json()["items"]
        subjects = [p["SoDinhDanh"] for p in people]

        bare = PopulationClient(address, wsdl=population.wsdl_path(), max_connections=args.threads)
        stack.callback(bare.close)

        def lookup(i: int) -> None:
            found = bare.look_up(
                CitizenLookup(subjects[i % len(subjects)], uuid.uuid4().hex, "bench", "1.001193"),
                correlation_id="bench",
            )
            assert found is not None

        timed(50, args.threads, lookup)  # warm up
        base_rate, base_lat = timed(args.requests, args.threads, lookup)

        db_url = stack.enter_context(pg_database()) if args.database == "postgresql" else ""
        env, key = hub_env(
            tmp,
            HUB_DATABASE_URL=db_url,
            HUB_POPULATION_URL=address,
            HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{ports['national']}",
            HUB_WORKER_ENABLED="false",
        )
        env["HUB_CLIENTS"] = json.dumps(
            [
                {
                    "name": "bench",
                    "api_key": key,
                    "agencies": ["*"],
                    "roles": ["onestop", "auditor"],
                    "prefill_procedures": ["*"],
                    "prefill_purposes": ["civil_status_registration"],
                }
            ]
        )
        if db_url:
            subprocess.run([str(BIN / "hub"), "db", "upgrade"], env=env, check=True, capture_output=True)
        api = Proc([str(BIN / "hub"), "serve", "--port", str(ports["hub"]), "--no-sandbox"], env, tmp / "hub.log")
        stack.callback(api.stop)
        wait_http(f"http://127.0.0.1:{ports['hub']}/healthz")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{ports['hub']}",
            headers={"X-API-Key": key},
            limits=httpx.Limits(max_connections=args.threads),
            timeout=30,
        )
        stack.callback(client.close)

        def prefill(i: int) -> None:
            r = client.post(
                "/v1/prefill",
                json={
                    "procedure": "1.001193",
                    "subject_id": subjects[i % len(subjects)],
                    "purpose": "civil_status_registration",
                    "requested_by": {"officer": "bench", "agency": "000.00.17.H56"},
                },
            )
            assert r.status_code == 200, r.text

        n = min(args.requests, len(subjects))
        rate, lat = timed(n, args.threads, prefill)  # cold: every citizen for the first time
        warm_rate, warm_lat = timed(n, args.threads, prefill)  # warm: the same citizens again (cache)
        verify = subprocess.run(
            [str(BIN / "hub"), "audit", "verify", "--json"], env=env, check=False, capture_output=True, text=True
        )
        started = time.perf_counter()
        subprocess.run([str(BIN / "hub"), "audit", "verify", "--json"], env=env, check=False, capture_output=True)
        verify_seconds = time.perf_counter() - started
        verified = json.loads(verify.stdout)

    report: dict[str, Any] = {
        "database": args.database,
        "threads": args.threads,
        "bare zeep look-up (req/s)": round(base_rate, 1),
        "bare p50/p99 (ms)": (round(statistics.median(base_lat) * 1000, 1), round(pct(base_lat, 0.99), 1)),
        "POST /v1/prefill cold (req/s)": round(rate, 1),
        "prefill cold p50/p99 (ms)": (round(statistics.median(lat) * 1000, 1), round(pct(lat, 0.99), 1)),
        "cold p50 / bare p50": round(statistics.median(lat) / statistics.median(base_lat), 2),
        "ratio cold req/s / bare req/s": round(rate / base_rate, 2),
        "POST /v1/prefill warm (req/s)": round(warm_rate, 1),
        "prefill warm p50/p99 (ms)": (round(statistics.median(warm_lat) * 1000, 1), round(pct(warm_lat, 0.99), 1)),
        "hub audit verify (entries, s incl. start-up)": (verified["checked"], round(verify_seconds, 2)),
        "chain intact": verified["intact"],
    }
    for k, v in report.items():
        print(f"{k:46} {v}")


if __name__ == "__main__":
    main()
