"""Deliveries held to a peer's agreed rate (HUB_PEER_RATE_LIMITS, ADR 0049): a backlog — after an outage, at a
one-stop system's go-live — drains at the rate the national portal's gateway allows, not all at once, by every
worker together; what waits for its turn is delivered later, once, in order, with no attempt counted."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from hub.console.auth import Operators
from hub.sandbox.common import ServerThread
from hub.services.quota import LocalQuota, RedisQuota
from hub.settings import Settings
from hub.store.models import OutboxMessage
from hub.sync.jobs import peers_status
from hub.sync.rates import FilePaces, PeerRates
from tests.conftest import AGENCY, Creds, HubFactory
from tests.helpers import dossier
from tests.test_console import PASSWORD, _logged_in
from tests.test_downflow import push
from tests.test_dvcqg_compat import CLIENT, PortalClient
from tests.test_prefill import PURPOSE, log_entries

RATE = 10.0  # messages a second to the portal


def closer_than_the_pace(times: list[float], rate: float, slack: float) -> list[tuple[int, int]]:
    """The pairs (i, j) of receipt times between which more messages arrived than a pace of `rate` a second allows
    (`slack`: seconds of jitter between a slot and the time noted for it — a thread woken late, a peer noting a
    message late on a loaded machine; an unpaced burst is far outside it) — none when the pace was kept."""
    return [
        (i, j)
        for i in range(len(times))
        for j in range(i + 1, len(times))
        if j - i > rate * (times[j] - times[i] + slack)
    ]


def test_a_backlog_drains_at_the_portals_rate_each_message_once_in_order_no_attempt_counted(
    hub_factory: HubFactory, portal: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_factory(peer_rate_limits={"national_portal": RATE})  # 45 messages: 4.5 s at least
    # a one-stop system going live: 40 dossiers in one request, then a step for a few of them
    items = [dossier(300 + i, status=2) for i in range(40)]
    with caplog.at_level(logging.INFO, logger="hub.relay"):
        r = hub.http.post("/v1/dossiers/batch", json={"data": items})
        assert r.status_code == 200 and all(x["status"] == 202 for x in r.json()["results"]), r.text
        steps = [(d["MaHoSo"], 4) for d in items[:5]]
        for code, status in steps:
            body = {"MaHoSo": code, "NguoiXuLy": "Lê Văn Tâm", "ThoiDiemXuLy": "20261207090000",
                    "NoiDungXuLy": "Thẩm định", "TrangThai": status}  # fmt: skip
            assert hub.http.post(f"/v1/dossiers/{code}/progress", json=body).status_code == 202
        assert hub.wait_idle(timeout=60) == {"delivered": 45}
    received = portal.get("/_sandbox/received", params={"limit": 1000}).json()["items"]
    applied = [x for x in received if x["outcome"] == "applied"]
    assert len(applied) == 45 and not [x for x in received if x["outcome"] != "applied"]
    times = sorted(x["at"] for x in applied)
    # never more than the pace allows in any stretch of time: one every tenth of a second
    assert closer_than_the_pace(times, RATE, slack=0.5) == []
    # each dossier once, its step after it
    first: dict[tuple[str, str], int] = {}
    for n, x in enumerate(sorted(applied, key=lambda x: x["at"])):
        for item in x["body"]["data"]:
            first.setdefault((item["MaHoSo"], x["operation"]), n)
    assert len({code for code, _ in first}) == 40
    assert all(first[(code, "DongBoHoSoMC")] < first[(code, "CapNhatTienDoHoSoMC")] for code, _ in steps)
    # what waited its turn went back in line untried: one attempt each, the one that delivered it
    with hub.runtime.sessions() as s:
        attempts = s.scalars(select(OutboxMessage.attempts).where(OutboxMessage.destination == "national_portal"))
        assert set(attempts) == {1}
    # and the operators were told, once, why deliveries wait
    held = [rec for rec in caplog.records if "held to 10 a second" in rec.getMessage()]
    assert len(held) >= 1 and held[0].__dict__["peer"] == "national_portal"
    # and see the rate beside the backlog: `hub peers status` and the console's peers table
    with hub.runtime.sessions() as s:
        rows = {p["peer"]: p for p in peers_status(s, rate_limits=hub.settings.peer_rate_limits)}
    assert rows["national_portal"]["rate_limit"] == RATE
    # and in the metrics, beside the backlog (the sample alert HubBacklogBeyondRate divides one by the other)
    assert 'hub_peer_rate_limit_per_second{destination="national_portal"} 10.0' in hub.http.get("/metrics").text
    Operators(hub.runtime.sessions).add("tran.van.an", PASSWORD, "viewer")
    console = _logged_in(hub.server.url, "tran.van.an")
    page = console.get("/ops").text
    console.close()
    assert "Giới hạn (tin/giây)" in page and '<td class="rate-limit">10</td>' in page


def test_a_worker_claims_of_a_paced_backlog_only_what_its_batch_can_deliver(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """A batch (64) holds more than the portal's pace serves in a second (10): the worker claims what goes within
    the second (11: the slot free now and ten more) and leaves the rest in line, not leased, written and put back
    untried on every cycle; it drains on at once while the backlog lasts, and the rest go at the pace."""
    hub = hub_factory(start_worker=False, peer_rate_limits={"national_portal": RATE})
    items = [dossier(400 + i, status=2) for i in range(30)]
    r = hub.http.post("/v1/dossiers/batch", json={"data": items})
    assert r.status_code == 200 and all(x["status"] == 202 for x in r.json()["results"]), r.text
    # the operators see how long the backlog takes at the rate: 30 messages at 10 a second
    with hub.runtime.sessions() as s:
        rows = {p["peer"]: p for p in peers_status(s, rate_limits=hub.settings.peer_rate_limits)}
    assert rows["national_portal"]["drain_s"] == 3.0
    Operators(hub.runtime.sessions).add("le.thi.binh", PASSWORD, "viewer")
    console = _logged_in(hub.server.url, "le.thi.binh")
    page = console.get("/ops").text
    console.close()
    assert '<td class="rate-limit">10 <small class="drain"' in page and "gửi hết sau ≈ 3 giây" in page
    relay = hub.runtime.relay
    assert relay.batch_size == 64
    claimed, more = relay.drain_step()
    assert (claimed, more) == (11, True)

    def states() -> dict[str, int]:
        with hub.runtime.sessions() as s:
            rows = s.execute(select(OutboxMessage.state, OutboxMessage.attempts, OutboxMessage.claim_token)).all()
        assert not [r for r in rows if r.state == "pending" and (r.attempts or r.claim_token)]
        return {state: sum(1 for r in rows if r.state == state) for state in {r.state for r in rows}}

    assert states() == {"delivered": 11, "pending": 19}  # the rest untouched: never leased, no attempt
    assert relay.drain() == 19
    assert states() == {"delivered": 30}
    received = portal.get("/_sandbox/received", params={"limit": 1000}).json()["items"]
    times = sorted(x["at"] for x in received if x["outcome"] == "applied")
    assert len(times) == 30 and closer_than_the_pace(times, RATE, slack=0.5) == []


def test_a_fast_paced_backlog_takes_at_most_half_of_each_batch(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    """A pace faster than a batch (100 a second, batches of 64) with a backlog behind it: the portal's messages are
    claimed first but take at most half of each batch, so the dossiers the portal pushed down to the province
    meanwhile go in the same batch, not after the whole backlog."""
    hub = hub_factory(start_worker=False, peer_rate_limits={"national_portal": 100})
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    items = [dossier(800 + i, status=2) for i in range(80)]
    assert hub.http.post("/v1/dossiers/batch", json={"data": items}).status_code == 200
    for i in range(10):  # filed at the portal, pushed down to the province through hub
        assert push(portal, hub, creds, dossier(900 + i, status=1))["hub_status"] == 202
    assert hub.runtime.relay.drain_step() == (42, True)  # 32 of the portal's backlog, the 10 for the province
    assert len(onestop.get("/_sandbox/received", params={"outcome": "applied"}).json()["items"]) == 10
    pushed_up = portal.get("/_sandbox/received", params={"outcome": "applied", "operation": "DongBoHoSoMC"})
    assert len(pushed_up.json()["items"]) == 32


def test_two_fast_paced_backlogs_take_a_third_of_each_batch_each(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    """Two destinations held to fast paces, both with backlogs: each gets an equal share of a batch (a third of 64),
    the last third left to the others — neither paced backlog takes every batch while it lasts."""
    hub = hub_factory(start_worker=False, peer_rate_limits={"national_portal": 100, "one_stop": 100})
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    items = [dossier(820 + i, status=2) for i in range(40)]
    assert hub.http.post("/v1/dossiers/batch", json={"data": items}).status_code == 200
    for i in range(30):  # filed at the portal, pushed down to the province through hub
        assert push(portal, hub, creds, dossier(920 + i, status=1))["hub_status"] == 202
    assert hub.runtime.relay.drain_step() == (42, True)
    assert len(onestop.get("/_sandbox/received", params={"outcome": "applied"}).json()["items"]) == 21
    pushed_up = portal.get("/_sandbox/received", params={"outcome": "applied", "operation": "DongBoHoSoMC"})
    assert len(pushed_up.json()["items"]) == 21


def test_a_worker_whose_turns_others_hold_puts_its_claim_back_once_not_in_a_loop(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """Other workers hold the portal's pace for the next seconds (they claimed first): this worker's claim all
    goes back in line untried, due when the pace frees up — and it does not claim again at once, which would claim
    and put back the whole backlog in a loop of writes."""
    hub = hub_factory(start_worker=False, peer_rate_limits={"national_portal": RATE})
    items = [dossier(450 + i, status=2) for i in range(30)]
    assert hub.http.post("/v1/dossiers/batch", json={"data": items}).status_code == 200
    relay = hub.runtime.relay
    assert relay.rates is not None
    for _ in range(30):  # another worker's turns: three seconds of the pace
        assert relay.rates.paces.pace("national_portal", 1 / RATE, 10.0)[0]
    assert relay.drain_step() == (11, False)  # claimed, all put back: no more at once
    with hub.runtime.sessions() as s:
        rows = s.execute(select(OutboxMessage.state, OutboxMessage.attempts, OutboxMessage.next_attempt_at)).all()
    assert {(r.state, r.attempts) for r in rows} == {("pending", 0)}
    first = min(r.next_attempt_at for r in rows)  # those put back are due when the pace frees up, seconds on
    assert len([r for r in rows if r.next_attempt_at > first + timedelta(seconds=1.5)]) == 11
    assert portal.get("/_sandbox/received").json()["items"] == []


def test_a_one_stop_systems_backlog_is_claimed_at_its_pace_too(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    """The dossiers the portal pushed while the province's one-stop system was away go down at the pace agreed with
    it: a worker claims what that system takes within a second (each system of the routing table has a pace of its
    own), and the rest stay in line."""
    hub = hub_factory(start_worker=False, peer_rate_limits={"one_stop": 5})
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    for i in range(12):  # filed at the portal, pushed down to the province through hub
        assert push(portal, hub, creds, dossier(600 + i, status=1))["hub_status"] == 202
    assert hub.runtime.relay.drain_step() == (6, True)  # the slot free now and five more
    assert hub.runtime.relay.drain() == 6
    got = onestop.get("/_sandbox/received", params={"outcome": "applied"}).json()["items"]
    assert len(got) == 12
    assert closer_than_the_pace(sorted(x["at"] for x in got), 5, slack=0.5) == []


def test_workers_on_several_machines_share_one_rate_through_redis() -> None:
    """Two workers (each its own Redis client, as on two machines) delivering to the same portal: together they
    keep its pace, and each gets turns."""
    peer = f"national_portal-test-{secrets.token_hex(4)}"
    redis = [RedisQuota("redis://127.0.0.1:6379/0") for _ in range(2)]
    rates = [PeerRates({"national_portal": RATE}, r, max_wait=0.02) for r in redis]
    passed = kept_pace_together(rates, peer)
    for r in redis:
        r.close()
    assert passed[0] and passed[1]  # and each had turns


def kept_pace_together(rates: list[PeerRates], peer: str) -> list[list[float]]:
    """Each of `rates` (two workers' or processes') asking for turns to `peer` as fast as it can for 1.5 s: the
    times each got one. Together they kept one pace (checked), not one each."""
    passed: list[list[float]] = [[] for _ in rates]
    started = time.monotonic()
    stop = started + 1.5

    def work(n: int) -> None:
        while time.monotonic() < stop:
            if rates[n].turn("national_portal", peer) is None:
                passed[n].append(time.monotonic())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(rates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sorted(t for times in passed for t in times)
    elapsed = total[-1] - started
    assert len(total) <= RATE * elapsed + 1, (len(total), elapsed)  # one pace, not one each
    assert closer_than_the_pace(total, RATE, slack=0.1) == []
    assert len(total) >= RATE  # and it was used
    return passed


def test_hub_serve_processes_on_one_sqlite_database_keep_one_pace(tmp_path: Path) -> None:
    """`hub serve --workers 2` in embedded mode: no Redis, but one machine — the processes keep one pace in a file
    beside the database, under a lock (here two open files of it, as two processes hold), so that each delivers
    whatever of the backlog it claimed and together they keep to the rate. A file cut short by a crash is taken as
    empty; one that cannot be opened lets messages through."""
    path = tmp_path / "hub.db.paces"
    files = [FilePaces(path) for _ in range(2)]
    rates = [PeerRates({"national_portal": RATE}, f, max_wait=0.02) for f in files]
    passed = kept_pace_together(rates, "national_portal")
    assert passed[0] and passed[1]  # each had turns
    path.write_bytes(b'{"national_por')  # cut short
    assert rates[0].turn("national_portal", "national_portal") is None
    # a file that cannot be had (its directory gone, the disk full): messages go, as when Redis does not answer
    assert FilePaces(tmp_path / "gone" / "hub.db.paces").pace("national_portal", 10.0, 0) == (True, 0.0)
    for f in files:
        f.close()


def test_embedded_processes_on_postgresql_take_their_share_of_the_rate() -> None:
    """Embedded mode on PostgreSQL (no broker, and no file the processes are sure to share): each `hub serve`
    process keeps a pace of its own at its share of the rate, so that together they keep to it."""
    slept: list[float] = []
    rates = PeerRates({"sms": 10}, LocalQuota(), share=lambda: 2, max_wait=0.5, sleep=slept.append)
    assert [rates.turn("sms", "sms") for _ in range(3)] == [None] * 3  # the first now, then waiting their slot
    assert slept == [pytest.approx(0.2, abs=0.02), pytest.approx(0.4, abs=0.02)]  # a fifth of a second apart
    wait = rates.turn("sms", "sms")  # its slot 0.6 s away, past the 0.5 s it may wait: back in line
    assert wait == pytest.approx(0.6, abs=0.02) and len(slept) == 2
    assert rates.turn("national_portal", "national_portal") is None and len(slept) == 2  # no limit set: no wait


def test_a_rate_limit_for_no_known_peer_or_no_rate_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="'national_portl' is not a peer hub holds to a rate"):
        Settings(var_dir=tmp_path, peer_rate_limits={"national_portl": 20})
    with pytest.raises(ValidationError, match="is not a rate"):
        Settings(var_dir=tmp_path, peer_rate_limits={"national_portal": 0})
    monkeypatch.setenv("HUB_PEER_RATE_LIMITS", json.dumps({"national_portal": 20, "sms": 2.5}))
    assert Settings(var_dir=tmp_path).peer_rate_limits == {"national_portal": 20.0, "sms": 2.5}


def test_a_reconciliation_asks_the_portal_in_its_rate_too(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """The hourly reconciliation asks the portal about every open dossier — thousands in a province — and shares
    the portal's pace with the deliveries, or it would be the burst the limit is there to prevent."""
    hub = hub_factory(peer_rate_limits={"national_portal": 20})
    for n in range(20, 35):  # and lists what each of fifteen routes filed there
        hub.runtime.routes.add(f"000.00.{n}.*", "http://127.0.0.1:9/onestop")
    items = [dossier(400 + i, status=2) for i in range(30)]
    assert hub.http.post("/v1/dossiers/batch", json={"data": items}).status_code == 200
    assert hub.wait_idle(timeout=60) == {"delivered": 30}
    result = hub.runtime.reconcile(repair=False)
    assert result["checked"] == 30 and result["in_sync"] == 30, result
    received = portal.get("/_sandbox/received", params={"limit": 1000}).json()["items"]
    asked = sorted(x["at"] for x in received if x["operation"] == "TraCuuHoSo")
    assert len(asked) == 30 and len([x for x in received if x["operation"] == "TraCuuHoSoMoi"]) == 15
    assert closer_than_the_pace(sorted(x["at"] for x in received), 20, slack=0.5) == []


def test_polls_of_the_portal_keep_its_rate_beside_the_deliveries(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """The down-flow's polls (TraCuuHoSoMoi, one a route an interval, and the reconciliation's) are calls to the
    portal like any other: they take turns in its pace with the deliveries going at the same time."""
    hub = hub_factory(peer_rate_limits={"national_portal": RATE})
    for province in ("000.00.18.*", "000.00.19.*", "000.00.20.*"):  # three routes: three calls a poll
        hub.runtime.routes.add(province, "http://127.0.0.1:9/onestop")
    items = [dossier(500 + i, status=2) for i in range(15)]
    assert hub.http.post("/v1/dossiers/batch", json={"data": items}).status_code == 200
    for _ in range(5):
        assert hub.runtime.poll_portal()["errors"] == 0, "every route's poll answered"
    assert hub.wait_idle(timeout=60) == {"delivered": 15}
    received = portal.get("/_sandbox/received", params={"limit": 1000}).json()["items"]
    polls = [x for x in received if x["operation"] == "TraCuuHoSoMoi"]
    assert len(polls) == 15 and len(received) == 30
    assert closer_than_the_pace(sorted(x["at"] for x in received), RATE, slack=0.5) == []


def test_a_one_stop_system_looking_up_through_dvcqg_is_told_to_try_again_past_the_portals_rate(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds
) -> None:
    """A one-stop system going live asks TraCuuHoSo of every dossier it holds; those hub does not hold are asked of
    the portal, in its rate: one whose turn is more than a second off is answered as the portal answers when busy
    ("try again later", 99), not sent."""
    hub = hub_factory(peer_rate_limits={"national_portal": 0.2})  # one every 5 s
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    assert one_stop.sign_in()["error_code"] == "00"
    codes = [dossier(500 + i)["MaHoSo"] for i in range(6)]
    clients = [httpx.Client(base_url=hub.server.url, timeout=30) for _ in codes]
    answers: list[dict[str, Any]] = []

    def look_up(i: int) -> None:
        body = {"session": one_stop.session, "madonvi": AGENCY, "service": "TraCuuHoSo", "MaHoSo": codes[i]}
        answers.append(clients[i].post("/dvcqg/api/service", json=body).json())

    threads = [threading.Thread(target=look_up, args=(i,)) for i in range(len(codes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert sorted(a["error_code"] for a in answers) == ["05"] + ["99"] * 5, answers  # asked once: not known there
    assert all("thử lại sau" in a["message"] and a["result"] == [] for a in answers if a["error_code"] == "99")
    asked = [x for x in portal.get("/_sandbox/received").json()["items"] if x["operation"] == "TraCuuHoSo"]
    assert len(asked) == 1


def test_pre_fills_keep_the_population_databases_rate(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client
) -> None:
    """The register's quota at the data-exchange platform: a cold pre-fill whose look-up's turn is more than a
    second off is answered 503 with the wait as Retry-After, the register not asked, the access logged as failed
    with nothing read — and a warm one (from the cache) needs no turn."""
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", peer_rate_limits={"population": 0.2}
    )  # one look-up every 5 s
    ids = [p["SoDinhDanh"] for p in people.get("/_sandbox/people", params={"limit": 3}).json()["items"]]

    def prefill(subject: str) -> httpx.Response:
        body = {"procedure": "1.004873", "subject_id": subject, "purpose": PURPOSE,
                "requested_by": {"officer": "cb-0042", "agency": AGENCY}}  # fmt: skip
        return hub.http.post("/v1/prefill", json=body)

    asked_before = people.get("/_sandbox/received").json()["count"]
    first = prefill(ids[0])
    assert first.status_code == 200, first.text
    held = prefill(ids[1])
    assert held.status_code == 503 and held.json()["code"] == "population_unavailable", held.text
    assert 3 <= int(held.headers["Retry-After"]) <= 5
    assert prefill(ids[0]).status_code == 200  # the first citizen again: from the cache, no turn needed
    assert people.get("/_sandbox/received").json()["count"] == asked_before + 1  # the register asked once
    failed = [e for e in log_entries(hub) if e.outcome == "failed"]
    assert [(e.reason, e.fields) for e in failed] == [("peer_rate_limited", [])]
