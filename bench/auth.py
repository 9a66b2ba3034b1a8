"""Authentication benchmark: the same read (`GET /v1/dossiers/{MaHoSo}`) made with a client system's API key and
with its OAuth 2.0 access token (client credentials grant, from the sandbox authorization server), in the same run
against the same `hub serve`: latency one request at a time, and requests/s under --threads clients. The API key is
the baseline; the ratio is what verifying the token's signature and claims costs. With them, the dossier's owner
reading it themselves (`GET /v1/citizens/me/dossiers/{MaHoSo}`) with their ID token from the sandbox identity
provider: the token checked, the dossier found by the ID's HMAC, its history and payments read.

    .venv/bin/python bench/auth.py [--requests 2000] [--threads 8]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, Proc, free_port, hub_env, wait_http
from hub.sandbox import pki
from hub.sandbox.common import ServerThread
from hub.sandbox.one_stop import make_dossier


def latency(n: int, call: Callable[[], None]) -> list[float]:
    took = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        took.append((time.perf_counter() - t) * 1000)
    return took


def p50_p99(took: list[float]) -> tuple[float, float]:
    took = sorted(took)
    return round(statistics.median(took), 2), round(took[int(len(took) * 0.99) - 1], 2)


def rate(n: int, threads: int, call: Callable[[], None]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: call(), range(n)))
    return round(n / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        client_id, secret = "bench-oauth", secrets.token_urlsafe(24)
        state = pki.PkiState(oauth_clients={client_id: secret})
        authority = ServerThread(pki.create_app(state)).start()
        stack.callback(authority.stop)
        state.pki = pki.TestPki(authority.url)
        port = free_port()
        env, key = hub_env(
            tmp,
            HUB_NATIONAL_PORTAL_URL=f"http://127.0.0.1:{free_port()}",
            HUB_WORKER_ENABLED="false",
            HUB_OAUTH_ISSUER=f"{authority.url}/idp",
            HUB_CITIZEN_IDP_ISSUER=f"{authority.url}/idp",
            HUB_CITIZEN_VIEWS_PER_MINUTE="100000000",  # the bench is one citizen reading in a loop
        )
        env["HUB_CLIENTS"] = json.dumps(
            [{"name": "bench", "api_key": key, "oauth_client_id": client_id, "agencies": ["*"]}]
        )
        api = Proc([str(BIN / "hub"), "serve", "--port", str(port), "--no-sandbox"], env, tmp / "hub.log")
        stack.callback(api.stop)
        wait_http(f"http://127.0.0.1:{port}/healthz")
        token = httpx.post(
            f"{authority.url}/idp/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        ).json()["access_token"]
        base = f"http://127.0.0.1:{port}"
        by_key = stack.enter_context(httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30))
        by_token = stack.enter_context(
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        )
        dossier = make_dossier("000.00.17.H56", 1, random.Random(1))
        assert by_key.post("/v1/dossiers", json=dossier).status_code == 202
        path = f"/v1/dossiers/{dossier['MaHoSo']}"
        id_token = httpx.post(
            f"{authority.url}/_sandbox/idp/token", json={"subject_id": dossier["SoGiayToChuHoSo"]}
        ).json()["id_token"]
        by_citizen = stack.enter_context(
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {id_token}"}, timeout=30)
        )
        own = f"/v1/citizens/me/dossiers/{dossier['MaHoSo']}"

        def with_key() -> None:
            assert by_key.get(path).status_code == 200

        def with_token() -> None:
            assert by_token.get(path).status_code == 200

        def as_owner() -> None:
            assert by_citizen.get(own).status_code == 200

        for call in (with_key, with_token, as_owner):  # warm up: connections, the server's keys fetched once
            latency(100, call)
        # in alternating rounds, so that the machine's drift over the run weighs on both alike
        key_took: list[float] = []
        token_took: list[float] = []
        key_rates: list[float] = []
        token_rates: list[float] = []
        owner_took: list[float] = []
        owner_rates: list[float] = []
        for _ in range(4):
            key_took += latency(args.requests // 4, with_key)
            token_took += latency(args.requests // 4, with_token)
            owner_took += latency(args.requests // 4, as_owner)
            key_rates.append(rate(args.requests // 4, args.threads, with_key))
            token_rates.append(rate(args.requests // 4, args.threads, with_token))
            owner_rates.append(rate(args.requests // 4, args.threads, as_owner))
        key_lat, token_lat, owner_lat = p50_p99(key_took), p50_p99(token_took), p50_p99(owner_took)
        key_rate, token_rate = round(statistics.median(key_rates), 1), round(statistics.median(token_rates), 1)
        owner_rate = round(statistics.median(owner_rates), 1)
    rows = [
        ("read a dossier, one request at a time (p50/p99 ms)", ""),
        ("  with the API key (baseline)", key_lat),
        ("  with an OAuth access token (ES256 JWT)", token_lat),
        ("  p50 ratio token / key", round(token_lat[0] / key_lat[0], 2)),
        ("  its owner, with their ID token (ES256 JWT)", owner_lat),
        ("  p50 ratio owner / key", round(owner_lat[0] / key_lat[0], 2)),
        (f"throughput, {args.threads} threads (req/s)", ""),
        ("  with the API key (baseline)", key_rate),
        ("  with an OAuth access token", token_rate),
        ("  ratio token / key", round(token_rate / key_rate, 2)),
        ("  its owner, with their ID token", owner_rate),
        ("  ratio owner / key", round(owner_rate / key_rate, 2)),
    ]
    for name, value in rows:
        print(f"{name:<55}{value}")


if __name__ == "__main__":
    main()
