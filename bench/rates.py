"""Delivery rate limit benchmark (HUB_PEER_RATE_LIMITS, ADR 0049): a backlog of N dossiers drained to the national
portal sandbox by `hub serve` (embedded worker, SQLite) held to --limit messages a second, beside the same backlog
drained with no limit in the same run. Prints the drain rates, the most the portal received in any one second, and
the held rate's ratio to the limit (1.0: the limit is used in full; no second holds more than it and one).

    .venv/bin/python bench/rates.py [--dossiers 1000] [--limit 100] [--batch-size 64] [--distributed]

The backlog is made while the portal is away (an outage of the sandbox), as after a real one: it then drains.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, loadgen, pg_database, redis_server, wait_http


def drain(
    tmp: Path,
    national: int,
    n: int,
    limit: float | None,
    prefix: int,
    batch: int,
    *,
    distributed: dict[str, str] | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """A hub (its own SQLite file, or with `distributed` its PostgreSQL database and Redis broker and `workers`
    `hub worker` processes of two each) whose backlog of `n` dossiers, filed while the portal was away, drains once
    it is back: seconds from its return to the last acknowledgement, and the receipts' times."""
    portal = f"http://127.0.0.1:{national}"
    extra = {"HUB_NATIONAL_PORTAL_URL": portal, "HUB_RECONCILE_INTERVAL": "0", "HUB_PORTAL_POLL_INTERVAL": "0",
             "HUB_RELAY_BATCH_SIZE": str(batch), **(distributed or {})}  # fmt: skip
    if limit is not None:
        extra["HUB_PEER_RATE_LIMITS"] = json.dumps({"national_portal": limit})
    run_dir = tmp / f"run-{prefix}"
    run_dir.mkdir()
    env, api_key = hub_env(run_dir, **extra)
    env["HUB_NATIONAL_PORTAL_PASSWORD"] = (tmp / "portal-password").read_text()
    subprocess.run([str(BIN / "hub"), "db", "upgrade"], env=env, check=True, capture_output=True)
    httpx.post(f"{portal}/_sandbox/reset").raise_for_status()
    httpx.post(f"{portal}/_sandbox/faults", json={"outage_seconds": 3600}).raise_for_status()
    port = free_port()
    procs = [Proc([str(BIN / "hub"), "serve", "--no-sandbox", "--port", str(port)], env, run_dir / "hub.log")]
    if distributed:
        procs += [
            Proc([str(BIN / "hub"), "worker", "--concurrency", "2"], env, run_dir / f"worker{i}.log")
            for i in range(workers)
        ]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        load = loadgen(port, "ingest", api_key, requests=n, prefix=prefix, connections=16)
        if load["statuses"] != {"202": n}:
            raise RuntimeError(f"unexpected answers {load['statuses']}")
        httpx.post(f"{portal}/_sandbox/faults", json={"outage_seconds": 0}).raise_for_status()
        back = time.time()
        while True:
            got = httpx.get(f"{portal}/_sandbox/received", params={"outcome": "applied", "limit": n + 10}).json()
            if got["count"] >= n:
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.stop()
    times = sorted(x["at"] for x in got["items"])
    seconds = times[-1] - times[0]
    peak = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    # the drain's rate from its first delivery to its last; before the first, the relay waits out its pause of a
    # peer found down (it probes again at most every 30 s), which no limit changes
    return {"per_s": (n - 1) / seconds, "seconds": seconds, "peak": peak, "first_after": times[0] - back}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dossiers", type=int, default=1000)
    ap.add_argument("--limit", type=float, default=100.0, help="messages a second to the portal")
    ap.add_argument("--batch-size", type=int, default=64, help="HUB_RELAY_BATCH_SIZE (rows a drain claims)")
    ap.add_argument(
        "--distributed", action="store_true",
        help="also the held drain in distributed mode: PostgreSQL, Redis and two `hub worker` sharing the pace",
    )  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        national, onestop = free_port(), free_port()
        env, _ = hub_env(tmp)
        (tmp / "portal-password").write_text(env["HUB_NATIONAL_PORTAL_PASSWORD"])
        sandbox = Proc(
            [str(BIN / "hub"), "sandbox", "--national-port", str(national), "--one-stop-port", str(onestop)],
            env,
            tmp / "sandbox.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{national}/_sandbox/faults")
            free = drain(tmp, national, args.dossiers, None, 1, args.batch_size)
            held = drain(tmp, national, args.dossiers, args.limit, 2, args.batch_size)
            spread = None
            if args.distributed:
                with pg_database() as url, redis_server(tmp) as broker:
                    at_scale = {"HUB_DATABASE_URL": url, "HUB_BROKER_URL": broker}
                    spread = drain(tmp, national, args.dossiers, args.limit, 3, args.batch_size, distributed=at_scale)
        finally:
            sandbox.stop()
    print(
        f"\ndelivery rate limit — a backlog of {args.dossiers} dossiers after a portal outage, embedded (SQLite), "
        f"batches of {args.batch_size}"
    )
    print(f"{'measure':<58} {'figure':>8} {'baseline':>9} {'ratio':>6}")
    print(
        f"{'drain held to ' + format(args.limit, 'g') + '/s (dossiers/s; baseline: the limit)':<58} "
        f"{held['per_s']:>8.1f} {args.limit:>9.1f} {held['per_s'] / args.limit:>6.2f}"
    )
    print(
        f"{'drain with no limit, same run (dossiers/s; baseline: the held one)':<58} "
        f"{free['per_s']:>8.1f} {held['per_s']:>9.1f} {free['per_s'] / held['per_s']:>6.2f}"
    )
    if spread is not None:
        print(
            f"{'distributed: two workers × 2 processes, one pace (Redis)':<58} "
            f"{spread['per_s']:>8.1f} {args.limit:>9.1f} {spread['per_s'] / args.limit:>6.2f}"
        )
    print(
        f"\nmost received by the portal in any one second: held {held['peak']} (the limit: {args.limit:g}), no limit "
        f"{free['peak']}; drains took {held['seconds']:.1f} s and {free['seconds']:.1f} s from their first delivery, "
        f"which came {held['first_after']:.1f} s and {free['first_after']:.1f} s after the portal was back"
    )
    if spread is not None:
        print(f"distributed: at most {spread['peak']} in any one second; drain took {spread['seconds']:.1f} s")


if __name__ == "__main__":
    main()
