"""Ingest CPU benchmark: hub's CPU per `POST /v1/dossiers` called in process (the ASGI app itself, no socket, no
load generator sharing the cores), beside the bare FastAPI POST of bench/bare_app.py called the same way in the same
run, and their ratio. What the loopback figures of bench/relay.py measure too, without their noise: those swing by
±10 % from run to run on this machine, these by a few percent, so a change of hub's own per-request cost shows.

hub here is the embedded default (SQLite, each commit synced) or PostgreSQL (--database postgresql), its worker
off; the requests run 16 at a time on one event loop (as the load generator's connections do), so the group commit
batches them as it would.

    .venv/bin/python bench/ingest_cpu.py [--requests 5000] [--rounds 3] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pg_database
from bench.loadgen import dossier

KEY = "bench-key-" + "k" * 24


async def call(app: Any, path: str, body: bytes, idem: str) -> int:
    """One request through the ASGI app, as uvicorn would hand it over; returns the answer's status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"hub"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), (b"x-api-key", KEY.encode()),
                    (b"idempotency-key", idem.encode())],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def cpu_per_request(app: Any, path: str, bodies: list[bytes], tag: str, at_once: int = 16) -> float:
    """CPU seconds of this process per request, the requests `at_once` at a time; every answer must be 202."""
    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> int:
        async with gate:
            return await call(app, path, bodies[i], f"{tag}-{i}")

    started = time.process_time()
    statuses = await asyncio.gather(*(one(i) for i in range(len(bodies))))
    spent = time.process_time() - started
    if set(statuses) != {202}:
        raise SystemExit(f"{path}: statuses {sorted(set(statuses))}")
    return spent / len(bodies)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of hub and the bare app")
    ap.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = ap.parse_args()

    from pydantic import SecretStr

    from bench.bare_app import app as bare
    from hub.api.app import create_app
    from hub.runtime import Runtime
    from hub.settings import ClientSystem, Settings
    from hub.store import db

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(pg_database()) if args.database == "postgresql" else ""
        if url:
            db.upgrade(url)
        settings = Settings(
            var_dir=tmp,
            database_url=url,
            secret_key=SecretStr("bench-secret-" + "s" * 32),
            national_portal_password=SecretStr("bench-portal-password"),
            clients=[ClientSystem(name="bench", api_key=SecretStr(KEY), agencies=["*"])],
            worker_enabled=False,
        )
        runtime = Runtime(settings, role="api", start_worker=False)
        stack.callback(runtime.close)
        app = create_app(settings, runtime)
        total = args.requests * args.rounds + 300
        bodies = [json.dumps(dossier(i, prefix=3)).encode() for i in range(total)]

        async def run() -> tuple[list[float], list[float]]:
            hub_cpu: list[float] = []
            bare_cpu: list[float] = []
            async with app.router.lifespan_context(app):
                gc.collect()
                gc.freeze()  # as `hub serve` does after start-up
                await cpu_per_request(app, "/v1/dossiers", bodies[-300:], "warm")
                await cpu_per_request(bare, "/bare", bodies[-300:], "warm")
                for r in range(args.rounds):
                    chunk = bodies[r * args.requests : (r + 1) * args.requests]
                    hub_cpu.append(await cpu_per_request(app, "/v1/dossiers", chunk, f"r{r}"))
                    bare_cpu.append(await cpu_per_request(bare, "/bare", chunk, f"r{r}"))
            return hub_cpu, bare_cpu

        hub_cpu, bare_cpu = asyncio.run(run())

    ms: Callable[[list[float]], str] = lambda xs: ", ".join(f"{x * 1000:.3f}" for x in xs)  # noqa: E731
    hub_ms, bare_ms = statistics.median(hub_cpu) * 1000, statistics.median(bare_cpu) * 1000
    print(f"ingest CPU per request, in process, {args.requests} requests × {args.rounds} rounds ({args.database})")
    print(f"  hub POST /v1/dossiers       {hub_ms:.3f} ms  (rounds: {ms(hub_cpu)})")
    print(f"  bare FastAPI POST, same body {bare_ms:.3f} ms  (rounds: {ms(bare_cpu)})")
    print(f"  ratio bare / hub (the throughput one core would give): {bare_ms / hub_ms:.3f}")


if __name__ == "__main__":
    main()
