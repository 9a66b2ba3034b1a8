"""Pre-fill benchmark: `POST /v1/prefill` cold (each citizen for the first time) and warm (again, from the
encrypted cache), beside bare SOAP look-ups through the same zeep client against the same sandbox, in the same run.

Latency is measured one request at a time (what a citizen waits for; warm over --warm-requests, so that its p99
is not the third-worst of 300), for a one-look-up form (marital status certificate, 1.004873) beside a raw zeep
call (zeep as it comes, its own requests-based transport: the issue's baseline) and beside one bare look-up
through hub's own adapter (the same zeep over a urllib3 pool: the stricter baseline), and for the birth
registration by a married parent (1.001193: the parent, then the spouse the record links to) beside the same two
chained bare look-ups; with it the floor every pre-fill stands on: one bare INSERT + COMMIT on the same database
(the access log is durable before the answer).
Throughput is measured under --threads concurrent clients (birth registrations). The load comes through httpx;
the warm one-look-up latency is also measured through the standard library's http.client, whose own cost per
call is smaller, to show hub's share.

On loopback the sandbox answers in about a millisecond, so every ratio above is hub's own CPU against zeep's; a
real register is a remote service. The cold latencies are measured again with --register-latency-ms added to
every answer of the sandbox (its latency knob), for the bare look-ups and for hub alike.

    .venv/bin/python bench/prefill.py [--requests 600] [--threads 8] [--latency-requests 300] [--warm-requests 3000]
                                      [--register-latency-ms 20] [--database sqlite|postgresql]
                                      [--sqlite-synchronous full|normal]
"""

from __future__ import annotations

import argparse
import http.client
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

from bench.common import BIN, Proc, hub_env, pg_database, sandbox_peers, wait_http
from hub.adapters.population import CitizenLookup, PopulationClient
from hub.sandbox import population
from hub.store import db


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


def commit_floor(url: str, n: int, sqlite_synchronous: db.SqliteSync) -> list[float]:
    """What one durable write costs on this database and disk (a PostgreSQL commit waits for its WAL flush):
    every pre-fill commits its access-log entry before it answers, so no pre-fill answers faster than this."""
    from sqlalchemy import text

    engine = db.make_engine(url, sqlite_synchronous=sqlite_synchronous)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bench_commit (id INTEGER PRIMARY KEY, note VARCHAR(20))")

        def one(i: int) -> None:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO bench_commit (id, note) VALUES (:i, 'x')"), {"i": i})

        return timed(n, 1, one)[1]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE bench_commit")
        engine.dispose()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument(
        "--warm-requests", type=int, default=3000, help="warm latency samples (the cold citizens again, from the cache)"
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--register-latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["full", "normal"],
        default="full",
        help="HUB_SQLITE_SYNCHRONOUS of hub (and of the floor): full syncs each commit to disk (ADR 0019)",
    )
    args = parser.parse_args()
    remote_n = max(20, args.latency_requests // 3)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        # the sandbox and hub each in their own process, as in a deployment (no shared GIL with the load)
        ports = stack.enter_context(sandbox_peers(tmp, HUB_SANDBOX_POPULATION_SIZE="12000"))
        address = f"http://127.0.0.1:{ports['population']}/ws/congdan"
        people = httpx.get(
            f"http://127.0.0.1:{ports['population']}/_sandbox/people", params={"limit": 100_000, "married": True}
        ).json()["items"]
        # one applicant per couple: a spouse looked up for one request is never an applicant (or spouse) in
        # another, so that every "cold" pre-fill really asks the register for both people
        ids: list[str] = []
        taken: set[str] = set()
        for p in people:
            spouse = p["VoChong"]["SoDinhDanh"]
            if p["SoDinhDanh"] not in taken and spouse not in taken:
                ids.append(p["SoDinhDanh"])
                taken.update((p["SoDinhDanh"], spouse))
        needed = 2 * args.latency_requests + 2 * remote_n + args.requests + 20
        if len(ids) < needed:
            raise SystemExit(f"the sandbox has {len(ids)} couples, {needed} needed: raise HUB_SANDBOX_POPULATION_SIZE")
        lat_one, lat_two, remote_one, remote_two, rest = (
            ids[: args.latency_requests],
            ids[args.latency_requests : 2 * args.latency_requests],
            ids[2 * args.latency_requests : 2 * args.latency_requests + remote_n],
            ids[2 * args.latency_requests + remote_n : 2 * args.latency_requests + 2 * remote_n],
            ids[2 * args.latency_requests + 2 * remote_n :],
        )
        subjects = rest[: args.requests]

        bare = PopulationClient(address, wsdl=population.wsdl_path(), max_connections=args.threads)
        stack.callback(bare.close)

        def raw(personal_id: str) -> dict[str, Any]:
            found = bare.look_up(CitizenLookup(personal_id, uuid.uuid4().hex, "bench", "1.001193"), correlation_id="b")
            assert found is not None
            return found

        def lookup(i: int) -> None:
            raw(ids[i % len(ids)])

        def chained_over(people: list[str]) -> Callable[[int], None]:  # a birth registration: parent, then spouse
            def run(i: int) -> None:
                record = raw(people[i])
                raw(record["VoChong"]["SoDinhDanh"])

            return run

        chained = chained_over(lat_two)

        # the baseline, literally: a raw zeep call — zeep as it comes (its own requests-based transport,
        # default settings) against the same WSDL and sandbox. hub's adapter above is the stricter baseline: the
        # same zeep over a urllib3 pool, about a millisecond less per call here
        import zeep

        from hub.adapters.population.client import BINDING, OPERATION

        as_it_comes = zeep.Client(str(population.wsdl_path())).create_service(BINDING, address)

        def raw_zeep(i: int) -> None:
            as_it_comes[OPERATION](
                MaYeuCau=uuid.uuid4().hex, MaDVC="1.001193", MaCanBo="bench", SoDinhDanh=ids[i % len(ids)]
            )

        timed(50, 1, raw_zeep)  # warm up
        base_raw = timed(args.latency_requests, 1, raw_zeep)[1]

        timed(50, args.threads, lookup)  # warm up
        base_one = timed(args.latency_requests, 1, lookup)[1]
        base_two = timed(args.latency_requests, 1, chained)[1]
        base_rate, base_lat = timed(args.requests, args.threads, lookup)

        db_url = stack.enter_context(pg_database()) if args.database == "postgresql" else ""
        env, key = hub_env(
            tmp,
            HUB_DATABASE_URL=db_url,
            HUB_POPULATION_URL=address,
            HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{ports['national']}",
            HUB_WORKER_ENABLED="false",
            HUB_SQLITE_SYNCHRONOUS=args.sqlite_synchronous,
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
                    "prefill_per_minute": None,  # no read quota: the benchmark reads far more than a client should
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

        server_ms: list[float] = []
        # the Server-Timing parts of each answer: app (the whole), register, journal
        server_parts: list[dict[str, float]] = []

        def post(procedure: str, subject_id: str) -> None:
            r = client.post(
                "/v1/prefill",
                json={
                    "procedure": procedure,
                    "subject_id": subject_id,
                    "purpose": "civil_status_registration",
                    "requested_by": {"officer": "bench", "agency": "000.00.17.H56"},
                },
            )
            assert r.status_code == 200, r.text
            parts = {  # "app;dur=1.23, register;dur=0.9": the whole, then the parts
                name.strip(): float(dur)
                for name, dur in (p.split(";dur=") for p in r.headers["server-timing"].split(","))
            }
            server_ms.append(parts["app"])  # hub's own time (Server-Timing)
            server_parts.append(parts)

        raw_conn: list[http.client.HTTPConnection] = []

        def post_raw(procedure: str, subject_id: str) -> None:
            """The same request through the standard library's HTTP/1.1 client on one kept-alive connection:
            hub's latency without httpx's own (~0.4 ms of Python per call here)."""
            body = json.dumps(
                {
                    "procedure": procedure,
                    "subject_id": subject_id,
                    "purpose": "civil_status_registration",
                    "requested_by": {"officer": "bench", "agency": "000.00.17.H56"},
                }
            )
            if not raw_conn:
                raw_conn.append(http.client.HTTPConnection("127.0.0.1", ports["hub"], timeout=30))
            conn = raw_conn[0]
            conn.request("POST", "/v1/prefill", body, {"X-API-Key": key, "Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200, reply.status

        def one(people: list[str]) -> Callable[[int], None]:  # marital status certificate: one look-up
            return lambda i: post("1.004873", people[i % len(people)])

        def two(people: list[str]) -> Callable[[int], None]:  # birth registration: parent, then spouse
            return lambda i: post("1.001193", people[i % len(people)])

        for i in range(20):  # warm up hub's own code paths (imports, pools) on citizens not measured below
            post("1.004873", rest[-1 - i])
        # latency: one request at a time (what a citizen waits for); throughput: under --threads of load
        server_parts.clear()
        cold_one = timed(args.latency_requests, 1, one(lat_one))[1]
        cold_one_parts = list(server_parts)
        server_ms.clear()
        warm_one = timed(args.warm_requests, 1, one(lat_one))[1]
        warm_one_server = [v / 1000 for v in server_ms]
        warm_one_raw = timed(args.warm_requests, 1, lambda i: post_raw("1.004873", lat_one[i % len(lat_one)]))[1]
        raw_conn.pop().close()
        server_parts.clear()
        cold_two = timed(args.latency_requests, 1, two(lat_two))[1]
        cold_two_parts = list(server_parts)
        server_ms.clear()
        warm_two = timed(args.warm_requests, 1, two(lat_two))[1]
        warm_two_server = [v / 1000 for v in server_ms]
        # the register as a remote service: the same measures with latency added to each of its answers
        httpx.post(
            f"http://127.0.0.1:{ports['population']}/_sandbox/faults", json={"latency_ms": args.register_latency_ms}
        ).raise_for_status()
        remote_base_one = timed(remote_n, 1, lambda i: raw(remote_one[i]))[1]
        remote_base_two = timed(remote_n, 1, chained_over(remote_two))[1]
        remote_cold_one = timed(remote_n, 1, one(list(reversed(remote_one))))[1]
        remote_cold_two = timed(remote_n, 1, two(list(reversed(remote_two))))[1]
        httpx.post(f"http://127.0.0.1:{ports['population']}/_sandbox/reset").raise_for_status()
        floor = commit_floor(
            db_url or f"sqlite:///{(tmp / 'hub.db').as_posix()}", args.latency_requests, args.sqlite_synchronous
        )
        n = len(subjects)
        rate, lat = timed(n, args.threads, two(subjects))  # cold: every citizen for the first time
        warm_rate, warm_lat = timed(n, args.threads, two(subjects))  # warm: the same citizens again (cache)
        verify = subprocess.run(
            [str(BIN / "hub"), "audit", "verify", "--json"], env=env, check=False, capture_output=True, text=True
        )
        started = time.perf_counter()
        subprocess.run([str(BIN / "hub"), "audit", "verify", "--json"], env=env, check=False, capture_output=True)
        verify_seconds = time.perf_counter() - started
        verified = json.loads(verify.stdout)

    def ms(values: list[float]) -> tuple[float, float]:
        return round(statistics.median(values) * 1000, 2), round(pct(values, 0.99), 2)

    PARTS = ("app", "register", "journal")  # noqa: N806 - a constant of this report

    def part(name: str, parts: list[dict[str, float]] | None = None) -> float:
        """The median, in ms, of one Server-Timing part of the cold answers (of one look-up unless `parts`)."""
        return round(statistics.median(p.get(name, 0.0) for p in (parts or cold_one_parts)), 2)

    report: dict[str, Any] = {
        "database": args.database + (f" (synchronous={args.sqlite_synchronous})" if not db_url else ""),
        "latency, one request at a time (p50/p99 ms)": f"cold {args.latency_requests}, warm {args.warm_requests}",
        "  raw zeep call (zeep's own transport)": ms(base_raw),
        "  bare zeep look-up (hub's adapter)": ms(base_one),
        "  prefill 1 look-up (1.004873) cold": ms(cold_one),
        "  cold p50 / raw zeep p50": round(statistics.median(cold_one) / statistics.median(base_raw), 2),
        "  cold p50 / bare p50": round(statistics.median(cold_one) / statistics.median(base_one), 2),
        "    in hub, register, journal (p50 ms)": tuple(part(k) for k in PARTS),
        "  prefill 1 look-up warm": ms(warm_one),
        "    of which in hub (Server-Timing)": ms(warm_one_server),
        "    the same through http.client": ms(warm_one_raw),
        "  bare zeep chained parent + spouse": ms(base_two),
        "  prefill 2 look-ups (1.001193) cold": ms(cold_two),
        "  cold p50 / bare chained p50": round(statistics.median(cold_two) / statistics.median(base_two), 2),
        "    in hub, register, journal (p50 ms) ": tuple(part(k, cold_two_parts) for k in PARTS),
        "  prefill 2 look-ups warm": ms(warm_two),
        "    of which in hub (Server-Timing) ": ms(warm_two_server),
        "  floor: bare INSERT + COMMIT, same database": ms(floor),
        f"register {args.register_latency_ms:g} ms away (p50/p99 ms)": f"{remote_n} requests each, cold",
        "  bare zeep look-up ": ms(remote_base_one),
        "  prefill 1 look-up cold": ms(remote_cold_one),
        "  cold p50 / bare p50 ": round(statistics.median(remote_cold_one) / statistics.median(remote_base_one), 2),
        "  bare zeep chained parent + spouse ": ms(remote_base_two),
        "  prefill 2 look-ups cold": ms(remote_cold_two),
        "  cold p50 / bare chained p50 ": round(
            statistics.median(remote_cold_two) / statistics.median(remote_base_two), 2
        ),
        f"throughput, {args.threads} threads": f"{n} requests, birth registration (2 look-ups)",
        "  bare zeep look-up (req/s)": round(base_rate, 1),
        "  bare p50/p99 (ms)": ms(base_lat),
        "  POST /v1/prefill cold (req/s)": round(rate, 1),
        "  cold p50/p99 (ms)": ms(lat),
        "  POST /v1/prefill warm (req/s)": round(warm_rate, 1),
        "  warm p50/p99 (ms)": ms(warm_lat),
        "hub audit verify (entries, s incl. start-up)": (verified["checked"], round(verify_seconds, 2)),
        "chain intact": verified["intact"],
    }
    for k, v in report.items():
        print(f"{k:46} {v}")


if __name__ == "__main__":
    main()
