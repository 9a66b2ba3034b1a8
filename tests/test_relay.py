"""The relay against the national-portal sandbox: order per dossier, exactly-once effect, retry vs dead letter,
session renewal, replay — on SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.sandbox.common import ServerThread
from hub.sync import jobs
from tests.api_helpers import as_documented
from tests.conftest import PORTAL_USER, Creds, Hub, HubFactory
from tests.helpers import dossier, step


def file_and_walk(hub: Hub, n: int, walk: list[int], *, start: int = 2, first_seq: int = 1) -> list[str]:
    codes = []
    for i in range(first_seq, first_seq + n):
        d = dossier(i, status=start)
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
        codes.append(d["MaHoSo"])
    for status in walk:
        for code in codes:
            r = hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status))
            assert r.status_code == 202, r.text
    return codes


def portal_history(portal: httpx.Client, code: str) -> list[int]:
    r = portal.get(f"/_sandbox/dossiers/{code}")
    return [h["status"] for h in r.json()["history"]] if r.status_code == 200 else []


def applied_keys(portal: httpx.Client) -> Counter[str]:
    items = portal.get("/_sandbox/received", params={"outcome": "applied"}).json()["items"]
    return Counter(i["idempotency_key"] for i in items)


def test_events_reach_the_portal_in_order(hub_factory: HubFactory, portal: httpx.Client) -> None:
    hub = hub_factory()
    walk = [4, 5, 4, 6, 4, 9, 10]
    codes = file_and_walk(hub, 8, walk)
    assert hub.wait_idle() == {"delivered": 8 * 8}
    for code in codes:
        assert portal_history(portal, code) == [2, *walk]
    keys = applied_keys(portal)
    assert len(keys) == 64 and set(keys.values()) == {1}
    # what the portal received satisfies the contract (the sandbox validates; nothing was rejected)
    assert portal.get("/_sandbox/received", params={"outcome": "rejected"}).json()["count"] == 0
    got = hub.http.get(f"/v1/dossiers/{codes[0]}").json()
    assert all(d["state"] == "delivered" for e in got["events"] for d in e["deliveries"])
    # every outbound exchange is on record, tied to the request that caused it
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        records = s.scalars(select(Exchange).where(Exchange.operation != "auth")).all()
    assert len(records) == 64 and {r.outcome for r in records} == {"ok"}
    assert {r.correlation_id for r in records} == {
        e["correlation_id"] for c in codes for e in hub.http.get(f"/v1/dossiers/{c}").json()["events"]
    }
    assert all(len(r.request_digest) == 64 and r.duration_ms > 0 for r in records)


def test_apply_then_fail_gives_exactly_once_effect(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """The portal applies a message but answers 500: hub retries with the same key; the effect stays single."""
    portal.post("/_sandbox/faults", json={"fail_after_apply_rate": 0.5})
    hub = hub_factory()
    codes = file_and_walk(hub, 10, [4, 9, 10])
    assert hub.wait_idle() == {"delivered": 40}
    for code in codes:
        assert portal_history(portal, code) == [2, 4, 9, 10]
    assert set(applied_keys(portal).values()) == {1}
    duplicates = portal.get("/_sandbox/received", params={"outcome": "duplicate"}).json()["count"]
    assert duplicates > 0  # hub did resend after the lost answers, and the portal recognised them


def test_5xx_storm_and_timeouts_are_retried(hub_factory: HubFactory, portal: httpx.Client) -> None:
    portal.post("/_sandbox/faults", json={"storm_5xx": 15, "timeout_rate": 0.1, "hang_seconds": 3})
    hub = hub_factory(read_timeout=0.5)
    codes = file_and_walk(hub, 6, [4, 9])
    assert hub.wait_idle(timeout=60) == {"delivered": 18}
    for code in codes:
        assert portal_history(portal, code) == [2, 4, 9]
    with hub.runtime.sessions() as s:
        rows = jobs.list_jobs(s, limit=100)
    assert sum(r["attempts"] for r in rows) > 18  # some were retried


def test_session_expiry_is_renewed_transparently(hub_factory: HubFactory, portal: httpx.Client) -> None:
    portal.post("/_sandbox/faults", json={"session_ttl": 0.2})
    hub = hub_factory()
    codes = file_and_walk(hub, 2, [])
    hub.wait_idle()
    time.sleep(0.3)  # the session the adapter holds has now expired at the portal
    for code in codes:
        hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 4))
    assert hub.wait_idle() == {"delivered": 4}
    with hub.runtime.sessions() as s:
        assert all(r["attempts"] == 1 for r in jobs.list_jobs(s))  # renewal is not a failed attempt
    assert portal.get("/_sandbox/received", params={"outcome": "rejected"}).json()["count"] >= 1
    # the expired session's refusal is on the record as handled by the call, not as a failure of the portal's
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        outcomes = Counter(s.scalars(select(Exchange.outcome).where(Exchange.peer == "national_portal")))
    assert outcomes["handled"] >= 1 and outcomes["handled"] + outcomes["ok"] == sum(outcomes.values()), outcomes


def test_permanent_rejection_is_a_dead_letter_that_holds_back_only_its_dossier(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer, creds: Creds
) -> None:
    hub = hub_factory()
    [blocked, free] = file_and_walk(hub, 2, [])
    hub.wait_idle()
    # The portal's copy of `blocked` moves to a terminal status behind hub's back (e.g. an officer there).
    officer.call("CapNhatTienDoHoSoMC", {"data": [step(blocked, 8)]})
    for code in (blocked, free):
        hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 4))
        hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 9))
    _wait_for(lambda: _states(hub).get("dead") == 1 and _states(hub).get("delivered") == 4)
    time.sleep(0.3)
    assert _states(hub) == {"delivered": 4, "dead": 1, "pending": 1}
    got = hub.http.get(f"/v1/dossiers/{blocked}").json()
    [first, second] = [e["deliveries"][0] for e in got["events"][1:]]
    assert first["state"] == "dead" and first["last_error_code"] == "portal_invalid_transition"
    assert second["state"] == "pending"  # order: never delivered before the dead letter ahead of it
    assert portal_history(portal, free) == [2, 4, 9]
    with hub.runtime.sessions() as s:
        dead = jobs.list_jobs(s, state="dead")
        shown = jobs.show_job(s, dead[0]["id"])
    assert shown is not None and shown["peer_reply"]["error_code"] == 4
    # The one-stop system asks which of its dossiers have not reached the portal, to show its officers: the
    # blocked one, with the dead letter's error and the message waiting behind it; the other is not listed.
    listed = hub.http.get("/v1/dossiers", params={"delivery": "dead"})
    as_documented(hub.http.get("/openapi.json").json(), "get", "/v1/dossiers", listed)
    assert listed.json()["total"] == 1
    [item] = listed.json()["items"]
    assert item["MaHoSo"] == blocked and item["TrangThaiHoSo"] == 9
    [to_portal] = item["deliveries"]
    assert to_portal["destination"] == "national_portal" and (to_portal["waiting"], to_portal["dead"]) == (1, 1)
    assert to_portal["last_error_code"] == "portal_invalid_transition" and to_portal["attempts"] == 1
    for delivery in ("undelivered", "waiting"):  # the message in line behind the dead letter is waiting too
        assert [i["MaHoSo"] for i in hub.http.get(f"/v1/dossiers?delivery={delivery}").json()["items"]] == [blocked]
    assert hub.http.get("/v1/dossiers?delivery=dead&destination=sms").json() == {
        "total": 0, "limit": 100, "offset": 0, "items": []
    }  # fmt: skip
    other = hub.http.get("/v1/dossiers?delivery=dead", headers={"X-API-Key": creds.other_key})
    assert other.status_code == 200 and other.json()["total"] == 0  # another agency's client sees none of them
    for query, code in [
        ("delivery=lost", "validation_error"),
        ("destination=national_portal", "unsupported_query"),
        ("delivery=dead&overdue=true", "unsupported_query"),
        ("delivery=dead&destination=Portal%20X", "validation_error"),
        ("", "unsupported_query"),
    ]:
        refused = hub.http.get(f"/v1/dossiers?{query}")
        assert refused.status_code == 422 and refused.json()["code"] == code, (query, refused.text)
    # The operator fixes the portal side and replays: the dossier's events now flow, in order.
    portal.post("/_sandbox/reset")
    officer.call("DongBoHoSoMC", {"isUpdating": False, "data": [{**dossier(1), "MaHoSo": blocked}]})
    with hub.runtime.sessions.begin() as s:
        assert jobs.replay(s, by="test", dossier=blocked) == {"replayed": 1, "not_dead": []}
    hub.runtime.wake()
    assert hub.wait_idle() == {"delivered": 6}
    assert portal_history(portal, blocked) == [2, 4, 9]
    assert hub.http.get("/v1/dossiers?delivery=undelivered").json()["items"] == []  # synced: no longer listed


def test_a_portal_writing_its_error_codes_as_strings_is_understood(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer
) -> None:
    """Deployed portals answer `"error_code": "00"` (a one-stop system in the wild tests for that string): hub
    reads the number it stands for — "00" delivered, "04" a refused transition, a dead letter as 4 would be —
    instead of calling every reply malformed and retrying for ever."""
    hub = hub_factory()
    [moved, free] = file_and_walk(hub, 2, [])
    hub.wait_idle()
    officer.call("CapNhatTienDoHoSoMC", {"data": [step(moved, 8)]})  # stopped at the portal behind hub's back
    portal.post("/_sandbox/faults", json={"string_error_codes": True, "session_ttl": 0.2})
    time.sleep(0.3)  # hub's session has expired: "02" must be read as "sign in again", and the sign-in's "00"
    for code in (moved, free):
        hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 4))
    _wait_for(lambda: _states(hub) == {"delivered": 3, "dead": 1})
    assert portal_history(portal, free) == [2, 4]
    got = hub.http.get(f"/v1/dossiers/{moved}").json()
    assert got["events"][-1]["deliveries"][0]["last_error_code"] == "portal_invalid_transition"


def test_a_dead_letter_set_aside_lets_its_dossier_go_on_and_is_never_sent(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer
) -> None:
    """An officer at the portal asked for the fee (6) while the one-stop system asked for a supplement (5): the
    portal refuses 6→5 for good, and the dead letter holds back the dossier's next step. The operator decides the
    portal is right and sets the message aside, saying why: the next step (4, after the payment) goes, in order;
    the message set aside is never sent, cannot be replayed, and says who set it aside and why."""
    hub = hub_factory()
    [code] = file_and_walk(hub, 1, [])
    hub.wait_idle()
    officer.call("CapNhatTienDoHoSoMC", {"data": [step(code, 6)]})
    assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 5)).status_code == 202
    assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 4)).status_code == 202
    _wait_for(lambda: _states(hub).get("dead") == 1)
    time.sleep(0.3)
    assert _states(hub) == {"delivered": 1, "dead": 1, "pending": 1}  # the 4 waits behind the dead 5
    with hub.runtime.sessions.begin() as s:
        [dead] = jobs.list_jobs(s, state="dead")
        with pytest.raises(ValueError, match="reason"):
            jobs.set_aside(s, ids=[dead["id"]], by="ops:an", reason="  ")
        assert jobs.set_aside(s, ids=[dead["id"], 999_999], by="ops:an", reason="portal đã yêu cầu nộp phí") == {
            "set_aside": 1,
            "not_dead": [999_999],
        }
    hub.runtime.wake()
    assert hub.wait_idle() == {"delivered": 2, "set_aside": 1}
    assert portal_history(portal, code) == [2, 6, 4]  # the 5 never reached the portal; the 4 followed the 6
    with hub.runtime.sessions.begin() as s:
        assert jobs.replay(s, by="test", ids=[dead["id"]]) == {"replayed": 0, "not_dead": [dead["id"]]}  # final
        shown = jobs.show_job(s, dead["id"])
    assert shown is not None and shown["state"] == "set_aside" and shown["set_aside_by"] == "ops:an"
    assert shown["set_aside_reason"] == "portal đã yêu cầu nộp phí" and shown["last_error_code"]
    view = hub.http.get(f"/v1/dossiers/{code}")
    as_documented(hub.http.get("/openapi.json").json(), "get", "/v1/dossiers/{code}", view)  # set_aside_* included
    events = view.json()["events"]
    [aside] = events[1]["deliveries"]
    assert aside["state"] == "set_aside" and aside["set_aside_by"] == "ops:an" and aside["set_aside_at"]
    assert events[2]["deliveries"][0]["state"] == "delivered"
    assert "set_aside" in hub.http.get("/metrics").text
    # reconciliation counts the dossier as settled (nothing is on its way) and finds the portal where hub is
    checked = hub.runtime.reconcile()
    assert checked["in_sync"] == 1 and checked["in_progress"] == 0, checked


def test_retryable_failures_dead_letter_after_max_attempts(hub_factory: HubFactory, portal: httpx.Client) -> None:
    portal.post("/_sandbox/faults", json={"storm_5xx": 1000})  # the portal answers, with HTTP 500, every time
    hub = hub_factory(relay_max_attempts=3)
    file_and_walk(hub, 1, [4])
    _wait_for(lambda: _states(hub).get("dead") == 1, timeout=30)
    assert _states(hub) == {"dead": 1, "pending": 1}  # the second event waits behind the dead letter
    with hub.runtime.sessions() as s:
        [dead] = jobs.list_jobs(s, state="dead")
    assert dead["attempts"] == 3 and dead["last_error_code"] == "peer_http_5xx"


def test_an_outage_longer_than_the_attempt_budget_kills_nothing(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """A portal that is down (503) is not the messages' fault: however many probes it takes, nothing dies, and
    everything goes through, in order, once the portal is back."""
    portal.post("/_sandbox/faults", json={"outage_seconds": 120})  # down until told otherwise below
    hub = hub_factory(relay_max_attempts=2)
    codes = file_and_walk(hub, 3, [4, 9])

    def most_attempts() -> int:
        with hub.runtime.sessions() as s:
            return max(r["attempts"] for r in jobs.list_jobs(s, limit=100))

    _wait_for(lambda: most_attempts() > 2, timeout=15)  # probed more often than the budget for message failures
    assert _states(hub).get("dead", 0) == 0
    assert portal_history(portal, codes[0]) == []
    # what the one-stop system sees meanwhile: every dossier waiting, the first filed first, none dead
    waiting = hub.http.get("/v1/dossiers?delivery=waiting&destination=national_portal").json()
    assert waiting["total"] == 3 and [i["MaHoSo"] for i in waiting["items"]] == codes
    assert all([(d["waiting"], d["dead"]) for d in i["deliveries"]] == [(3, 0)] for i in waiting["items"])
    errors = [i["deliveries"][0]["last_error_code"] for i in waiting["items"]]  # a 503; or not tried: one probes
    assert "peer_http_unavailable" in errors and set(errors) <= {"peer_http_unavailable", None}
    page = hub.http.get("/v1/dossiers?delivery=undelivered&limit=1&offset=2").json()
    assert page["total"] == 3 and [i["MaHoSo"] for i in page["items"]] == codes[2:]
    assert hub.http.get("/v1/dossiers?delivery=dead").json()["total"] == 0
    portal.post("/_sandbox/faults", json={"outage_seconds": 0})  # the portal is back
    assert hub.wait_idle(timeout=30) == {"delivered": 9}
    for code in codes:
        assert portal_history(portal, code) == [2, 4, 9]


def test_a_portal_that_asks_to_wait_is_not_called_again_before_it_said(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """The portal throttles hub (429 with Retry-After: 2): hub stays away for the two seconds it was told — not
    probing every 50 ms as its own backoff would —, then delivers everything, in order, no attempt used up."""
    hub = hub_factory(relay_max_attempts=2)
    [warm] = file_and_walk(hub, 1, [])  # a session with the portal already held
    hub.wait_idle()
    portal.post("/_sandbox/faults", json={"rate_limit_seconds": 2})
    asked_at = time.monotonic()
    codes = file_and_walk(hub, 3, [4, 9], first_seq=2)

    def told() -> list[str]:  # what an operator reads meanwhile (hub jobs show, the console)
        with hub.runtime.sessions() as s:
            return [r["last_error"] or "" for r in jobs.list_jobs(s, limit=100) if r["state"] == "pending"]

    # the sandbox asks for the whole seconds left of its 2 s window: 1 if filing took over a second on a busy machine
    said = re.compile(r"HTTP 429 \(asked to wait [12] s\)")
    _wait_for(lambda: any(said.search(e) for e in told()), timeout=5)
    assert hub.wait_idle(timeout=30) == {"delivered": 10}
    assert time.monotonic() - asked_at >= 1.9  # nothing went through before the portal said it would take calls
    assert portal.get("/_sandbox/faults").json()["rate_limited"] == 1  # one call told to wait, none after it
    for code in codes:
        assert portal_history(portal, code) == [2, 4, 9]
    assert portal_history(portal, warm) == [2]


def test_unknown_ids_are_reported_not_replayed(hub_factory: HubFactory, portal: httpx.Client) -> None:
    hub = hub_factory()
    file_and_walk(hub, 1, [])
    hub.wait_idle()
    with hub.runtime.sessions.begin() as s:
        assert jobs.replay(s, by="test", ids=[1, 424242]) == {"replayed": 0, "not_dead": [1, 424242]}


class PortalOfficer:
    """Acts directly at the national portal (as its own users would), to create drift behind hub's back."""

    def __init__(self, portal: httpx.Client, password: str) -> None:
        self.portal = portal
        self.password = password

    def call(self, service: str, payload: dict[str, Any]) -> None:
        auth = self.portal.post(
            "/api/auth", json={"username": PORTAL_USER, "password": self.password}, headers={"dstcode": "000.00.00.G22"}
        ).json()
        assert auth["error_code"] == 0, auth
        r = self.portal.post(
            "/api/service", json={"session": auth["session"], "madonvi": "000.00.00.G22", "service": service, **payload}
        )
        assert r.json()["error_code"] == 0, r.text


@pytest.fixture
def officer(portal: httpx.Client, creds: Creds) -> PortalOfficer:
    return PortalOfficer(portal, creds.portal_password)


def _states(hub: Hub) -> dict[str, int]:
    with hub.runtime.sessions() as s:
        return jobs.totals(s)


def _wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_maintenance_mode_stops_dispatch_and_keeps_ingest(hub_factory: HubFactory, portal: httpx.Client) -> None:
    hub = hub_factory()
    hub.runtime.maintenance.set(True, by="test")
    codes = file_and_walk(hub, 3, [4])  # ingest goes on: every request answered 202
    time.sleep(1.5)  # several poll intervals of the embedded worker
    assert _states(hub) == {"pending": 6}
    assert portal.get("/_sandbox/received").json()["count"] == 0
    assert hub.http.get("/readyz").json()["maintenance"] is True
    # how long it has been on (HubMaintenanceLong; the backlog and stale-job alerts hold while it is on)
    on_for = re.search(r"^hub_maintenance_on_seconds ([0-9.e+]+)$", hub.http.get("/metrics").text, re.MULTILINE)
    assert on_for is not None and 1.0 <= float(on_for.group(1)) < 60
    hub.runtime.maintenance.set(False, by="test")
    hub.runtime.wake()
    assert hub.wait_idle() == {"delivered": 6}
    assert "\nhub_maintenance_on_seconds 0.0\n" in hub.http.get("/metrics").text
    for code in codes:
        assert portal_history(portal, code) == [2, 4]


def test_the_correlation_id_follows_a_message_to_the_peer(
    hub_factory: HubFactory, portal: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """One id from the client's request, through the worker's log lines and the exchange record, to the peer."""
    import logging

    from sqlalchemy import select

    from hub.store.models import Exchange

    hub = hub_factory()
    caplog.set_level(logging.INFO, logger="hub.relay")
    d = dossier(1)
    r = hub.http.post("/v1/dossiers", json=d, headers={"X-Correlation-ID": "trail-0001"})
    assert r.status_code == 202 and r.headers["X-Correlation-ID"] == "trail-0001"
    assert hub.wait_idle() == {"delivered": 1}
    delivered = [rec for rec in caplog.records if rec.getMessage() == "delivered"]
    assert [getattr(rec, "correlation_id", None) for rec in delivered] == ["trail-0001"]
    with hub.runtime.sessions() as s:
        sent = s.scalars(select(Exchange).where(Exchange.operation == "DongBoHoSoMC")).all()
    assert [x.correlation_id for x in sent] == ["trail-0001"]
    owner = str(d["SoGiayToChuHoSo"])
    assert all(owner not in f"{rec.getMessage()} {vars(rec)}" for rec in caplog.records)  # no personal ID logged


def test_rows_of_a_worker_that_died_after_claiming_are_delivered_once_after_its_lease(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """A worker claims a batch and dies before delivering it (kill -9 between claim and HTTP). Once the lease has
    expired the rows are back in line and delivered, in order; if the worker comes back and records what it
    thought happened, nothing changes (its claim token was cleared)."""
    from hub.services.dossiers import NATIONAL_PORTAL
    from hub.sync import outbox

    lease = 1.0  # long enough that the drain just after the claim runs within it on a loaded machine
    hub = hub_factory(start_worker=False, relay_lease_seconds=lease)
    codes = file_and_walk(hub, 3, [4, 9])
    with hub.runtime.sessions.begin() as s:  # the doomed worker's claim: the first event of each dossier
        doomed = outbox.claim(s, 50, lease, [NATIONAL_PORTAL])
    assert len(doomed) == 3
    relay = hub.runtime.relay
    assert relay.drain() == 0  # leased to the dead worker: nothing to take yet, nothing behind them either
    time.sleep(lease * 1.25)  # the lease, and the relay's interval between releases of expired leases (lease / 4)
    assert relay.drain() == 3  # the expired heads
    while relay.drain():
        pass
    for code in codes:
        assert portal_history(portal, code) == [2, 4, 9]
    assert set(applied_keys(portal).values()) == {1}
    with hub.runtime.sessions.begin() as s:  # the worker comes back and records an outcome for its old batch
        late = [outbox.Outcome(c, "retry", error_code="x", error="x", retry_at=c.created_at) for c in doomed]
        assert outbox.record(s, late, []) == 0
    assert hub.wait_idle() == {"delivered": 9}


def in_flight(hub: Hub) -> int:
    from sqlalchemy import func, select

    from hub.store.models import OutboxMessage

    with hub.runtime.sessions() as s:
        return int(s.scalar(select(func.count()).where(OutboxMessage.state == "in_flight")) or 0)


def test_a_batch_slower_than_its_lease_is_not_claimed_again_while_its_worker_lives(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """Leases are short (a dead worker's rows come back within one), so a live worker renews those of the batch
    it is still delivering: a second worker draining meanwhile takes none of them, and each event is sent once."""
    import threading

    from hub.sync.relay import Relay

    # renewed every 0.67 s: slack for a loaded 2-core machine tracing coverage (0.6 s was not, once; 1.2 s once
    # lapsed on SQLite, the renewal waiting behind the other worker's claims for the write lock)
    lease = 2.0
    hub = hub_factory(start_worker=False, relay_lease_seconds=lease, read_timeout=5.0)
    codes = file_and_walk(hub, 3, [])
    portal.post("/_sandbox/faults", json={"latency_ms": 1.5 * lease * 1000}).raise_for_status()  # each call
    first = hub.runtime.relay
    other = Relay(hub.runtime.sessions, first.deliverers, policy=first.policy, lease_seconds=lease)
    slow = threading.Thread(target=first.drain_step)
    slow.start()
    taken = 0
    try:
        deadline = time.monotonic() + 10
        while in_flight(hub) < 3:  # the first worker has claimed all three
            assert slow.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        while slow.is_alive():  # a session opened, then the deliveries: three leases long
            taken += other.drain_step()[0]
            time.sleep(0.05)
    finally:
        slow.join()
        other.close()
    assert taken == 0
    sent = Counter(i["idempotency_key"] for i in portal.get("/_sandbox/received").json()["items"])
    assert len(sent) == 3 and set(sent.values()) == {1}, sent
    for code in codes:
        assert portal_history(portal, code) == [2]


def test_a_file_system_without_locks_does_not_stop_the_embedded_worker(
    hub_factory: HubFactory, portal: httpx.Client, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The delivery lock file beside the SQLite database may sit on a mount that refuses flock (ENOLCK): hub starts
    all the same and delivers (a dead process's leases then simply run out)."""
    import errno

    from hub.sync import embedded

    if backend != "sqlite":
        pytest.skip("the lock file is kept beside a SQLite database only")

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(embedded.fcntl, "flock", no_locks)
    hub = hub_factory()
    codes = file_and_walk(hub, 2, [4])
    assert hub.wait_idle() == {"delivered": 4}
    for code in codes:
        assert portal_history(portal, code) == [2, 4]


class Served:
    """`hub serve` in a process of its own on a free port, as a province runs it (embedded worker; SQLite in
    `var_dir` unless a database URL is given), started, killed with -9 and started again on the same data."""

    def __init__(self, var_dir: Path, creds: Creds, portal_url: str, **env: str) -> None:
        import json
        import os
        import sys

        from tests.conftest import listen_port

        self.port = listen_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        self.env.update(
            HUB_VAR_DIR=str(var_dir),
            HUB_SECRET_KEY=creds.secret_key,
            HUB_CLIENTS=json.dumps([{"name": "onestop", "api_key": creds.api_key, "agencies": ["000.00.17.*"]}]),
            HUB_NATIONAL_PORTAL_URL=portal_url,
            HUB_NATIONAL_PORTAL_USERNAME=PORTAL_USER,
            HUB_NATIONAL_PORTAL_PASSWORD=creds.portal_password,
            **env,
        )
        self.bin = str(Path(sys.executable).with_name("hub"))
        self.proc: Any = None

    def start(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [self.bin, "serve", "--port", str(self.port), "--no-sandbox"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "hub serve did not come up"
            time.sleep(0.1)

    def kill9(self) -> None:
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def test_hub_killed_mid_delivery_resumes_at_once_when_restarted(
    tmp_path: Path, creds: Creds, portal_server: ServerThread, portal: httpx.Client
) -> None:
    """Embedded mode, as a province runs it: `hub serve` is killed (-9) while deliveries are in flight at a slow
    portal, then started again. The rows it had claimed go back in line at once — no other process was
    delivering from its database — not after their 60 s lease; every event reaches the portal once, in order."""
    served = Served(tmp_path, creds, portal_server.url, HUB_RELAY_LEASE_SECONDS="60")

    def states(code: str) -> list[str]:
        got = client.get(f"/v1/dossiers/{code}").json()
        return [d["state"] for e in got["events"] for d in e["deliveries"]]

    portal.post("/_sandbox/faults", json={"latency_ms": 3000}).raise_for_status()
    served.start()
    try:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=10) as client:
            codes = []
            for i in range(1, 6):
                d = dossier(700 + i, status=2)
                assert client.post("/v1/dossiers", json=d).status_code == 202
                codes.append(d["MaHoSo"])
            for code in codes:
                assert client.post(f"/v1/dossiers/{code}/progress", json=step(code, 4)).status_code == 202
            deadline = time.monotonic() + 20
            while not any("in_flight" in states(code) for code in codes):
                assert time.monotonic() < deadline, "nothing was ever in flight"
                time.sleep(0.05)
        served.kill9()
        portal.post("/_sandbox/faults", json={"latency_ms": 0}).raise_for_status()
        restarted = time.monotonic()
        served.start()
        deadline = restarted + 20  # a third of the lease the killed process held
        while not all(portal_history(portal, code) == [2, 4] for code in codes):
            assert time.monotonic() < deadline, {code: portal_history(portal, code) for code in codes}
            time.sleep(0.2)
        assert set(applied_keys(portal).values()) == {1} and len(applied_keys(portal)) == 10
        with httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=10) as client:
            deadline = time.monotonic() + 10
            while not all(set(states(code)) == {"delivered"} for code in codes):  # hub records the outcomes too
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        served.stop()


def test_hub_killed_under_ingest_load_keeps_every_answered_request_and_takes_the_retries_once(
    tmp_path: Path, creds: Creds, portal_server: ServerThread, portal: httpx.Client, backend: str,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """One-stop systems keep posting while `hub serve` is killed (-9); each then sends again, with the same
    Idempotency-Key, whatever got no answer, and goes on once hub is back. A 202 is never lost, a request is never
    applied twice, nothing is half-written: every dossier reaches the portal with its statuses once, in order."""
    import threading

    env = {"HUB_DATABASE_URL": request.getfixturevalue("pg_url")} if backend == "postgresql" else {}
    # on PostgreSQL the killed process's claims wait out their lease (other hosts may share the database)
    served = Served(tmp_path, creds, portal_server.url, HUB_RELAY_LEASE_SECONDS="2", **env)
    walk = [4, 5, 4, 9]
    answered: dict[str, str] = {}  # Idempotency-Key -> event id of its 202
    sent: dict[str, tuple[str, dict[str, Any]]] = {}  # Idempotency-Key -> the request
    lock = threading.Lock()
    down, back = threading.Event(), threading.Event()
    retried: list[str] = []

    def one_stop(first: int, count: int) -> None:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=10) as client:
            for i in range(first, first + count):
                d = dossier(i, status=2)
                code = d["MaHoSo"]
                steps = [("/v1/dossiers", d)] + [(f"/v1/dossiers/{code}/progress", step(code, s)) for s in walk]
                for n, (path, body) in enumerate(steps):
                    key = f"{code}/{n}"
                    with lock:
                        sent[key] = (path, body)
                    while True:
                        try:
                            r = client.post(path, json=body, headers={"Idempotency-Key": key})
                        except httpx.TransportError:
                            down.wait()
                            back.wait(60)  # hub is being restarted: send the same request again
                            retried.append(key)
                            continue
                        assert r.status_code == 202, r.text
                        with lock:
                            assert answered.setdefault(key, r.json()["event_id"]) == r.json()["event_id"]
                        break

    served.start()
    try:
        clients = [threading.Thread(target=one_stop, args=(800 + 25 * k, 25)) for k in range(6)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while len(answered) < 100:
            assert time.monotonic() < deadline, len(answered)
            time.sleep(0.01)
        served.kill9()
        down.set()
        before = dict(answered)
        served.start()
        back.set()
        for c in clients:
            c.join(timeout=120)
        assert len(answered) == 6 * 25 * (1 + len(walk))
        assert retried  # some requests were cut off by the kill, and sent again
        with httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=10) as client:
            for key in list(before)[::7]:  # an answered request sent again: the same answer, nothing new
                path, body = sent[key]
                r = client.post(path, json=body, headers={"Idempotency-Key": key})
                assert r.status_code == 202 and r.json()["event_id"] == before[key]
        codes = sorted({key.rsplit("/", 1)[0] for key in answered})
        deadline = time.monotonic() + 120
        while not all(portal_history(portal, code) == [2, *walk] for code in codes):
            assert time.monotonic() < deadline, [c for c in codes if portal_history(portal, c) != [2, *walk]][:5]
            time.sleep(0.5)
        assert set(applied_keys(portal).values()) == {1}
        assert len(applied_keys(portal)) == len(answered)
    finally:
        served.stop()


@pytest.mark.parametrize("drops", [1, 2])
def test_a_connection_the_portal_closes_without_answering_is_tried_once_more(drops: int) -> None:
    """A kept-alive connection the portal closed (its idle timeout) as hub reused it ends "without response": the
    request never reached the portal. hub sends it once more on a fresh connection (every POST it makes there is
    safe to repeat); a portal that drops it again is down (`PeerUnavailable`) — not a spurious outage for one
    stale socket, which made a reconciliation stop asking."""
    from hub.adapters.errors import PeerUnavailable
    from hub.adapters.national_portal import NationalPortalClient
    from tests.helpers import dropping_peer

    answer = b'{"error_code": 0, "message": "ok", "session": "s"}'
    with dropping_peer(drops, b"application/json", answer) as (url, seen):
        client = NationalPortalClient(url, username="u", password="p", dstcode="000.00.17.H56")
        try:
            if drops == 1:
                client.sign_in(correlation_id="c")  # the second attempt answered
            else:
                with pytest.raises(PeerUnavailable):
                    client.sign_in(correlation_id="c")
        finally:
            client.close()
    assert len(seen) == 2  # tried twice, not more


@pytest.mark.parametrize(
    "reply",
    [
        b"[" * 5000 + b"]" * 5000,  # 10 kB, deeper than the JSON parser recurses: RecursionError inside json.loads
        b'{"error_code": ' + b"9" * 5000 + b"}",  # an integer longer than Python converts
        b"\xff\xfe{}",
        b'{"error_code": true, "message": "ok"}',  # JSON's true is no error code, though Python's bool is an int
        b'{"error_code": "OK", "message": "ok"}',
        b'{"error_code": 1.5, "message": "ok"}',
    ],
)
def test_a_portal_reply_hub_cannot_parse_is_a_malformed_reply_not_a_bug(reply: bytes) -> None:
    """Whatever the portal (or a proxy in front of it) answers, the adapter classifies it at the boundary: a
    retryable `peer_malformed_reply` with its exchange recorded — never an unexpected error in the relay."""
    from fastapi import FastAPI, Response

    from hub.adapters.errors import PeerProtocolError
    from hub.adapters.national_portal import NationalPortalClient

    app = FastAPI()

    @app.post("/api/auth")
    def auth() -> Response:
        return Response(reply, media_type="application/json")

    server = ServerThread(app).start()
    client = NationalPortalClient(server.url, username="u", password="p", dstcode="000.00.17.H56")
    seen: list[Any] = []
    try:
        with pytest.raises(PeerProtocolError) as caught:
            client.sign_in(correlation_id="c", on_exchange=seen.append)
        assert caught.value.code == "peer_malformed_reply" and caught.value.retryable
        assert [r.outcome for r in seen] == ["retryable"]
    finally:
        client.close()
        server.stop()


def test_an_outage_is_logged_when_it_starts_once_a_minute_while_it_lasts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker's loop retries the database (or the broker) every tick; its log says so at the start, then once
    per interval — not a line a second for an hour — and once when it is back."""
    import logging

    from hub.logs import Outage

    logger = logging.getLogger("hub.test-outage")
    outage = Outage(logger, "test: database", every=0.3)
    with caplog.at_level(logging.WARNING, logger="hub.test-outage"):
        outage.ok()  # nothing was wrong: nothing to say
        for _ in range(20):
            outage.failed(ConnectionRefusedError("connection refused"))
        assert [r.getMessage() for r in caplog.records] == ["test: database unavailable, retrying: connection refused"]
        time.sleep(0.35)
        outage.failed("still refused")
        outage.ok()
        outage.ok()
    said = [r.getMessage() for r in caplog.records]
    assert said[1:] == ["test: database unavailable, retrying: still refused", "test: database back"]
    assert caplog.records[-1].unavailable_seconds >= 0.35  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("99999999999999", 3600.0),  # a peer asking for days is asked again after an hour
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),  # an HTTP-date: a minute after "now" below
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # already past
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("²", None),  # a Latin-1 byte that str.isdigit takes for a digit
        ("\u0663", None),  # an Arabic-Indic three: not RFC 9110's DIGIT
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_rfc_9110_writes_it(header: str | None, seconds: float | None) -> None:
    from datetime import UTC, datetime

    from hub.adapters.http import retry_after

    assert retry_after(header, now=datetime(2015, 10, 21, 7, 27, tzinfo=UTC)) == seconds


@given(
    st.text(max_size=60)
    | st.from_regex(r"\A\s*[0-9]{1,30}\s*\Z")
    | st.from_regex(
        r"\A(Mon|Sun), [0-9]{1,2} (Jan|Feb|Dec) [0-9]{1,6} [0-9]{1,2}:[0-9]{2}:[0-9]{2} (GMT|\+0700|-9999)?\Z"
    )
)
def test_retry_after_never_raises_and_stays_within_an_hour(header: str) -> None:
    """Whatever a peer puts in Retry-After: a wait hub can use (0 to an hour), or nothing — never an error."""
    from hub.adapters.http import MAX_RETRY_AFTER, retry_after

    seconds = retry_after(header)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


def test_a_long_scheduled_job_does_not_hold_deliveries_back(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """In embedded mode the scheduled jobs ran in the worker's own thread, between two drains: a reconciliation
    asking a slow portal about every open dossier (minutes, hourly) held every delivery back meanwhile. They run
    in a thread of their own: statuses go on reaching the portal while one runs."""
    import threading

    from hub.sync.embedded import EmbeddedWorker

    hub = hub_factory(start_worker=False)
    running, done = threading.Event(), threading.Event()

    def reconcile() -> None:  # as long as it takes
        running.set()
        done.wait(30)

    worker = EmbeddedWorker(hub.runtime.relay, 0.05, [(0.01, reconcile)]).start()
    try:
        assert running.wait(5)
        codes = file_and_walk(hub, 3, [4], first_seq=60)
        deadline = time.monotonic() + 10
        while any(portal_history(portal, c) != [2, 4] for c in codes):
            assert time.monotonic() < deadline, [portal_history(portal, c) for c in codes]
            time.sleep(0.05)
        assert not done.is_set()  # delivered while the job was still running
    finally:
        done.set()
        worker.stop()


def test_one_embedded_process_runs_the_scheduled_jobs_and_another_takes_over(
    hub_factory: HubFactory, tmp_path: Path, backend: str
) -> None:
    """`hub serve --workers N` in embedded mode: every process's worker ran every scheduled job, N reconciliations
    an hour each asking the portal about every open dossier. The one holding the jobs lock — a flock beside a SQLite
    database, an advisory lock of a session of its own on PostgreSQL — runs them; when it stops (or dies: the
    kernel or the database lets go of its lock) another takes them on at its next round."""
    import threading

    from hub.sync.embedded import EmbeddedWorker, JobsLock, PgJobsLock

    hub = hub_factory(start_worker=False)
    ran: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(name: str) -> EmbeddedWorker:
        def poll_portal() -> None:
            with lock:
                ran[name] += 1

        url = hub.settings.effective_database_url
        jobs_lock = JobsLock(tmp_path / "hub.db") if backend == "sqlite" else PgJobsLock(url)
        return EmbeddedWorker(hub.runtime.relay, 0.02, [(0.02, poll_portal)], jobs_lock=jobs_lock)

    workers = {"a": worker("a").start(), "b": worker("b").start()}
    try:
        deadline = time.monotonic() + 10
        while sum(ran.values()) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with lock:
            assert len(ran) == 1, ran  # one of them, not both
            [(leader, _)] = ran.items()
        other = "b" if leader == "a" else "a"
        workers.pop(leader).stop()
        while ran[other] < 3:
            assert time.monotonic() < deadline + 10
            time.sleep(0.02)
    finally:
        for w in workers.values():
            w.stop()
