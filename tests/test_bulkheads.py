"""Bulkheads (ADR 0046): a peer that stops answering holds the requests waiting on it, and no other request of
hub's. Before, every such wait ran on anyio's shared threadpool: enough pre-fills waiting on a hung population
database took every thread, and a dossier's view, /readyz or a one-stop system's look-up waited behind them."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from hub.sandbox.common import ServerThread
from tests.conftest import AGENCY, Creds, Hub, HubFactory
from tests.helpers import dossier
from tests.test_dvcqg_compat import CLIENT, PortalClient
from tests.test_prefill import KHAI_SINH, PURPOSE, log_entries, quota_clients

# more requests at once than anyio's shared threadpool has threads (40): without compartments they would hold all
AT_ONCE = 48
# the hung peer's latency: far longer than the other requests take even on a loaded machine (48 client threads
# share the test's process, and its GIL, with hub and the sandboxes; at 1.5 s a CI run once came within 0.3 s, and
# at 3 s one with three test processes on two cores took 3.1 s to answer the three others)
HUNG_MS = 6000
READ_TIMEOUT = 15.0  # hub waits the hung peer out (the tests' hubs give up after 5 s)


def in_parallel(hub: Hub, n: int, call: Any) -> tuple[list[tuple[float, httpx.Response]], threading.Event]:
    """`n` calls (`call(client, i)`) at once, each on a thread and a client of its own; (finish time, answer) of
    each as they end, and an event set once all have ended. Returns as the calls are sent: the clients are made
    first (an httpx client takes milliseconds of CPU to make, and on a loaded machine 48 of them took seconds —
    the first calls sent would then be answered before the last were), then let go together."""
    done: list[tuple[float, httpx.Response]] = []
    clients = [httpx.Client(base_url=hub.server.url, headers=dict(hub.http.headers), timeout=30) for _ in range(n)]
    go = threading.Barrier(n + 1)

    def one(i: int) -> None:
        with clients[i] as c:
            go.wait()
            r = call(c, i)
            done.append((time.monotonic(), r))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    done_all = threading.Event()

    def join() -> None:
        for t in threads:
            t.join()
        done_all.set()

    threading.Thread(target=join, daemon=True).start()
    go.wait(10)
    return done, done_all


def test_a_hung_population_database_holds_only_the_pre_fills_waiting_on_it(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client
) -> None:
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan",
        peer_concurrency=4,
        peer_queue_seconds=0.5,
        read_timeout=READ_TIMEOUT,
    )
    d = dossier(1, status=1)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    ids = [p["SoDinhDanh"] for p in people.get("/_sandbox/people", params={"limit": AT_ONCE}).json()["items"]]
    people.post("/_sandbox/faults", json={"latency_ms": HUNG_MS}).raise_for_status()
    try:

        def prefill(c: httpx.Client, i: int) -> httpx.Response:
            body = {"procedure": KHAI_SINH, "subject_id": ids[i], "purpose": PURPOSE,
                    "requested_by": {"officer": "cb-0042", "agency": AGENCY}}  # fmt: skip
            return c.post("/v1/prefill", json=body)

        answers, finished = in_parallel(hub, AT_ONCE, prefill)
        time.sleep(0.2)  # every pre-fill is in hub: waiting on the register, or for a place to
        others = [hub.http.get(f"/v1/dossiers/{d['MaHoSo']}"), hub.http.get("/readyz"), hub.http.get("/healthz")]
        answered_others = time.monotonic()
        assert [r.status_code for r in others] == [200, 200, 200], [r.text for r in others]
        assert finished.wait(30)
    finally:
        people.post("/_sandbox/faults", json={"latency_ms": 0})
    filled = [(at, r) for at, r in answers if r.status_code == 200]
    busy = [r for _, r in answers if r.status_code != 200]
    # the other requests did not wait for the register: answered before any pre-fill it answered
    assert answered_others < min(at for at, _ in filled)
    assert len(filled) == 4 and len(busy) == AT_ONCE - 4  # four places; the rest refused after half a second
    for r in busy:
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "peer_busy" and r.headers["Retry-After"] == "1"
    # each is an access like any other, in the access log with nothing read: as failed (the register could not be
    # asked), not as refused — hub did not refuse the client (HubPersonalDataRefusals would take it for a probe)
    entries = log_entries(hub)
    busy_ones = [e for e in entries if e.outcome == "failed" and e.reason == "peer_busy"]
    assert len(busy_ones) == AT_ONCE - 4 and all(e.fields == [] for e in busy_ones)
    assert not [e for e in entries if e.outcome == "refused"]
    metrics = hub.http.get("/metrics").text
    assert f'hub_peer_busy_refusals_total{{peer="population"}} {AT_ONCE - 4}.0' in metrics
    assert 'hub_peer_places{peer="population"} 4.0' in metrics
    assert 'hub_peer_places_in_use{peer="population"} 0.0' in metrics  # all given back
    # the register answering again, its places are there again
    r = hub.http.post("/v1/prefill", json={"procedure": KHAI_SINH, "subject_id": ids[0], "purpose": PURPOSE,
                                           "requested_by": {"officer": "cb-0042", "agency": AGENCY}})  # fmt: skip
    assert r.status_code == 200, r.text


def test_a_hung_portal_holds_only_the_look_ups_waiting_on_it(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds
) -> None:
    """A one-stop system asks TraCuuHoSo about dossiers hub does not hold (at go-live, all of them): hub asks the
    portal. With the portal hanging, those look-ups wait — in the portal's compartment; past its places they are
    answered at once in the portal's protocol ("try again later"), and hub's own API answers meanwhile."""
    hub = hub_factory(peer_concurrency=2, peer_queue_seconds=0.3, read_timeout=READ_TIMEOUT)
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    assert one_stop.sign_in()["error_code"] == "00"
    d = dossier(2, status=1)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    portal.post("/_sandbox/faults", json={"latency_ms": HUNG_MS}).raise_for_status()
    try:

        def look_up(c: httpx.Client, i: int) -> httpx.Response:
            body = {"session": one_stop.session, "madonvi": AGENCY, "service": "TraCuuHoSo",
                    "MaHoSo": dossier(100 + i)["MaHoSo"]}  # fmt: skip
            return c.post("/dvcqg/api/service", json=body)

        answers, finished = in_parallel(hub, AT_ONCE, look_up)
        time.sleep(0.2)
        mine = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}")
        answered_mine = time.monotonic()
        assert mine.status_code == 200
        assert finished.wait(30)
    finally:
        portal.post("/_sandbox/faults", json={"latency_ms": 0})
    codes = [r.json()["error_code"] for _, r in answers]
    assert all(r.status_code == 200 for _, r in answers)  # the portal's protocol: its error_code, never a 5xx
    asked = [at for at, r in answers if r.json()["error_code"] == "05"]  # the portal answered: not known there
    assert len(asked) == 2 and codes.count("99") == AT_ONCE - 2, codes
    assert answered_mine < min(asked)
    assert all("thử lại sau" in r.json()["message"] for _, r in answers if r.json()["error_code"] == "99")


@pytest.mark.parametrize("buckets", ["process", "redis"])
def test_a_pre_fill_refused_peer_busy_does_not_use_up_the_clients_read_quota(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, creds: Creds, buckets: str
) -> None:
    """The read quota bounds what a client reads from the register. A pre-fill refused because the register's
    compartment was full read nothing: its token goes back, and a client retrying through the register's overload
    is not then refused 429 for reads it never made. In the process's buckets (embedded) and in Redis'
    (distributed: a bucket of its own, named for this run, in the shared Redis)."""
    import secrets

    distributed = {"broker_url": "redis://127.0.0.1:6379/0", "start_worker": False} if buckets == "redis" else {}
    name = f"onestop-q{secrets.token_hex(4)}" if buckets == "redis" else "onestop-hcm"
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan",
        clients=quota_clients(creds, name, 3),
        peer_concurrency=1,
        peer_queue_seconds=0.3,
        **distributed,
    )
    ids = [p["SoDinhDanh"] for p in people.get("/_sandbox/people", params={"limit": 6}).json()["items"]]
    people.post("/_sandbox/faults", json={"latency_ms": 1000}).raise_for_status()  # (within the 2 s read timeout)
    try:

        def prefill(c: httpx.Client, i: int) -> httpx.Response:
            return c.post("/v1/prefill", json=body(ids[i]))

        answers, finished = in_parallel(hub, 3, prefill)
        assert finished.wait(30)
    finally:
        people.post("/_sandbox/faults", json={"latency_ms": 0})
    assert sorted(r.status_code for _, r in answers) == [200, 503, 503], [r.text for _, r in answers]
    # one read of the three allowed a minute was made: two more are allowed, then the quota holds
    assert [hub.http.post("/v1/prefill", json=body(i)).status_code for i in ids[3:6]] == [200, 200, 429]


def body(subject_id: str) -> dict[str, Any]:
    return {"procedure": KHAI_SINH, "subject_id": subject_id, "purpose": PURPOSE,
            "requested_by": {"officer": "cb-0042", "agency": AGENCY}}  # fmt: skip
