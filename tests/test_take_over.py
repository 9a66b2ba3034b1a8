"""Dossiers already in progress when hub is put in between (ADR 0041): a one-stop system connected to hub mid-way
sends dossiers hub has never seen at whatever status they have reached, many of them synced to the portal before.
Sent with isUpdating=true, hub takes each over at its status and relays it as an update — the portal's copy moves
on, or the portal takes it as new if it never had it; without it, a new dossier still starts in 1 or 2."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from hub.store.models import Exchange
from tests.api_helpers import assert_problem
from tests.conftest import OTHER_AGENCY, Creds, HubFactory
from tests.helpers import as_one_stop_writes_it, dossier, step
from tests.test_dvcqg_compat import CLIENT, PortalClient
from tests.test_relay import PortalOfficer, portal_history


@pytest.fixture
def officer(portal: httpx.Client, creds: Creds) -> PortalOfficer:
    return PortalOfficer(portal, creds.portal_password)


def _sent(portal: httpx.Client, code: str) -> list[tuple[bool, int]]:
    """(isUpdating, error_code) of each DongBoHoSoMC of `code` the portal received."""
    items = portal.get("/_sandbox/received", params={"operation": "DongBoHoSoMC"}).json()["items"]
    return [
        (i["body"]["isUpdating"], i["reply"]["error_code"])
        for i in items
        if i["body"] and i["body"]["data"][0]["MaHoSo"] == code
    ]


def test_a_dossier_in_progress_is_taken_over_at_its_status_and_moves_on_at_the_portal(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer
) -> None:
    hub = hub_factory()
    # synced to the portal by the one-stop system before hub was put in between: accepted, then processing
    synced_before = dossier(1, status=4)
    officer.call("DongBoHoSoMC", {"isUpdating": False, "data": [{**synced_before, "TrangThaiHoSo": 2}]})
    officer.call("CapNhatTienDoHoSoMC", {"data": [step(synced_before["MaHoSo"], 4)]})
    code = synced_before["MaHoSo"]

    # without isUpdating, a dossier hub has not seen must start in 1 or 2 — and the problem says what to do
    refused = assert_problem(hub.http.post("/v1/dossiers", json=synced_before), 409, "invalid_initial_status")
    assert "isUpdating=true" in refused["detail"]
    assert hub.http.get(f"/v1/dossiers/{code}").status_code == 404  # nothing half-written

    r = hub.http.post("/v1/dossiers", params={"isUpdating": "true"}, json=synced_before)
    assert r.status_code == 202, r.text
    taken = r.json()
    assert taken["taken_over"] is True and taken["TrangThaiHoSo"] == 4 and taken["previous_status"] is None
    assert taken["seq"] == 1
    # from here on the transition table holds as for any dossier
    assert_problem(hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 2)), 409, "invalid_transition")
    assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 9)).status_code == 202
    assert hub.wait_idle() == {"delivered": 2}
    assert portal_history(portal, code) == [2, 4, 4, 9]  # relayed as an update of the portal's copy
    assert _sent(portal, code) == [(False, 0), (True, 0)]  # the officer's, then hub's update
    view = hub.http.get(f"/v1/dossiers/{code}").json()
    assert view["TrangThaiHoSo"] == 9 and [e["TrangThaiHoSo"] for e in view["events"]] == [4, 9]


def test_a_dossier_taken_over_that_the_portal_never_had_is_sent_to_it_as_new(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """The one-stop system said the dossier was synced before; the portal does not have it (its sync failed
    then, or it went elsewhere): the portal answers "unknown dossier" to the update and hub sends it as new."""
    hub = hub_factory()
    d = dossier(2, status=10)  # a result already returned: a one-stop system syncing only at the end
    r = hub.http.post("/v1/dossiers", params={"isUpdating": "True"}, json=d)
    assert r.status_code == 202 and r.json()["taken_over"] is True
    assert hub.wait_idle() == {"delivered": 1}
    assert _sent(portal, d["MaHoSo"]) == [(True, 5), (False, 0)]
    assert portal_history(portal, d["MaHoSo"]) == [10]
    # terminal at hub as at the portal: nothing moves it on
    step_after = step(d["MaHoSo"], 4)
    assert_problem(hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step_after), 409, "invalid_transition")
    # the same message again (a one-stop system unsure it was taken): the same answer, nothing new
    again = hub.http.post("/v1/dossiers", params={"isUpdating": "true"}, json=d)
    assert again.status_code == 202 and again.json() == r.json()


def test_a_dossier_new_to_hub_but_known_to_the_portal_is_sent_there_as_an_update(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer
) -> None:
    """Sent to hub as new (at 2) though the portal has it — from before hub, or from an attempt whose answer was
    lost at a portal that keeps no idempotency keys: "already exists" is answered by sending it as an update."""
    hub = hub_factory()
    d = dossier(3, status=2)
    officer.call("DongBoHoSoMC", {"isUpdating": False, "data": [d]})
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    assert hub.wait_idle() == {"delivered": 1}
    assert _sent(portal, d["MaHoSo"]) == [(False, 0), (False, 7), (True, 0)]
    assert portal_history(portal, d["MaHoSo"]) == [2, 2]
    # the "already exists" hub answered itself is on the record as handled, not as a failure: at go-live, when
    # many dossiers go the wrong way first, the error rate (HubPeerErrors, the console's) does not count them
    with hub.runtime.sessions() as s:
        record = s.execute(
            select(Exchange.operation, Exchange.outcome, Exchange.error_code)
            .where(Exchange.peer == "national_portal", Exchange.operation == "DongBoHoSoMC")
            .order_by(Exchange.id)
        ).all()
    assert [tuple(row) for row in record] == [
        ("DongBoHoSoMC", "handled", "portal_dossier_exists"),
        ("DongBoHoSoMC", "ok", None),
    ]
    metrics = hub.http.get("/metrics").text
    assert 'hub_exchanges_total{operation="DongBoHoSoMC",outcome="handled",peer="national_portal"} 1.0' in metrics


def test_a_batch_marked_isupdating_takes_over_what_hub_has_not_seen(hub_factory: HubFactory) -> None:
    hub = hub_factory()
    known = dossier(4, status=2)
    assert hub.http.post("/v1/dossiers", json=known).status_code == 202
    in_progress = dossier(5, status=5)
    items = [in_progress, {**known, "TrangThaiHoSo": 10}, {**known, "TrangThaiHoSo": 4}]
    unmarked = hub.http.post("/v1/dossiers/batch", json={"data": [in_progress]}).json()["results"]
    assert unmarked[0]["status"] == 409 and unmarked[0]["problem"]["code"] == "invalid_initial_status"
    outcomes = hub.http.post("/v1/dossiers/batch", json={"isUpdating": True, "data": items}).json()["results"]
    assert [o["status"] for o in outcomes] == [202, 409, 202]
    assert outcomes[0]["taken_over"] is True and outcomes[0]["TrangThaiHoSo"] == 5
    assert "taken_over" not in outcomes[2]  # hub knew it: an ordinary change
    assert outcomes[1]["problem"]["code"] == "invalid_transition"  # a known dossier follows the table regardless
    assert hub.http.get(f"/v1/dossiers/{in_progress['MaHoSo']}").json()["TrangThaiHoSo"] == 5


def test_a_one_stop_system_written_for_the_portal_goes_live_through_hub_with_dossiers_in_progress(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer, creds: Creds
) -> None:
    """OpenCPS decides isUpdating from TraCuuHoSo: "True" when the look-up's `result` is not empty. Through hub, a
    dossier hub does not hold is looked up at the portal, so one synced there before is sent as an update and
    taken over; one neither has is "not found" (and is sent as new)."""
    hub = hub_factory()
    one_stop = PortalClient(hub.http, CLIENT, creds.api_key)
    one_stop.sign_in()
    d = dossier(6, status=6)
    officer.call("DongBoHoSoMC", {"isUpdating": False, "data": [{**d, "TrangThaiHoSo": 2}]})
    officer.call("CapNhatTienDoHoSoMC", {"data": [step(d["MaHoSo"], 4)]})

    looked_up = one_stop.call("TraCuuHoSo", mahoso=d["MaHoSo"])
    assert looked_up["error_code"] == "00" and looked_up["result"][0]["TrangThaiHoSo"] == 4  # the portal's copy
    owner = looked_up["data"]["SoGiayToChuHoSo"]  # masked, as hub shows its own dossiers
    assert owner == "*" * (len(d["SoGiayToChuHoSo"]) - 3) + d["SoGiayToChuHoSo"][-3:]
    has_sync = bool(looked_up["result"])
    sent = one_stop.call("DongBoHoSoMC", isUpdating="True" if has_sync else "False", data=[as_one_stop_writes_it(d)])
    assert sent == {"error_code": "00", "message": "Thành công"}
    assert hub.wait_idle() == {"delivered": 1}
    assert portal_history(portal, d["MaHoSo"]) == [2, 4, 6]
    mine = one_stop.call("TraCuuHoSo", mahoso=d["MaHoSo"])  # now hub's own record
    assert mine["data"]["TrangThaiHoSo"] == 6

    nowhere = dossier(7)["MaHoSo"]
    assert one_stop.call("TraCuuHoSo", mahoso=nowhere) == {
        "error_code": "05",
        "message": f"Không tìm thấy hồ sơ {nowhere}",
        "result": [],
    }
    # the portal's "not found" is an answer, not a failure of the portal's: a one-stop system going live asks it of
    # every dossier it holds, and an error rate counting them would page operators about a portal that works
    with hub.runtime.sessions() as s:
        looked = s.execute(
            select(Exchange.outcome, Exchange.error_code)
            .where(Exchange.peer == "national_portal", Exchange.operation == "TraCuuHoSo")
            .order_by(Exchange.id)
        ).all()
    assert [tuple(row) for row in looked] == [("ok", None), ("handled", "portal_unknown_dossier")]
    metrics = hub.http.get("/metrics").text
    assert 'outcome="permanent"' not in metrics and 'outcome="handled",peer="national_portal"} 1.0' in metrics
    # the portal down: not "not found" (which would have the dossier sent as new), but "try again"
    portal.post("/_sandbox/faults", json={"outage_seconds": 60})
    down = one_stop.call("TraCuuHoSo", mahoso=nowhere)
    assert down["error_code"] == "99" and down["result"] == [] and "try again" in down["message"]
    # an agency the client may not act for is refused before the portal is asked
    portal.post("/_sandbox/reset")
    other = one_stop.call("TraCuuHoSo", mahoso=dossier(8, agency=OTHER_AGENCY)["MaHoSo"])
    assert other["error_code"] != "00" and other["result"] == []


def test_a_dossier_taken_over_at_the_status_the_portal_already_holds_it_at_is_delivered_not_dead(
    hub_factory: HubFactory, portal: httpx.Client, officer: PortalOfficer
) -> None:
    """A result already returned (10) before go-live, at the portal too: the update hub relays would move it from 10
    to 10, which the portal refuses as a transition. The portal holds what the message says — hub asks it
    (TraCuuHoSo) and counts the delivery done, instead of a dead letter an operator would have to set aside; and
    the refusal it settled so is on the record as handled, not as a failure of the portal's (a go-live of a
    province's closed dossiers would otherwise raise HubPeerErrors about a portal that works)."""
    hub = hub_factory()
    d = dossier(9, status=10)
    officer.call("DongBoHoSoMC", {"isUpdating": False, "data": [{**d, "TrangThaiHoSo": 2}]})
    for status in (4, 9, 10):
        officer.call("CapNhatTienDoHoSoMC", {"data": [step(d["MaHoSo"], status)]})
    assert hub.http.post("/v1/dossiers", params={"isUpdating": "true"}, json=d).status_code == 202
    assert hub.wait_idle() == {"delivered": 1}
    [delivery] = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["events"][0]["deliveries"]
    assert delivery["state"] == "delivered"
    assert portal_history(portal, d["MaHoSo"]) == [2, 4, 9, 10]  # nothing applied twice
    with hub.runtime.sessions() as s:
        from sqlalchemy import select

        from hub.store.models import OutboxMessage

        reply = s.scalars(select(OutboxMessage.peer_reply).where(OutboxMessage.id == delivery["outbox_id"])).one()
    assert reply is not None and reply["already_applied"] is True and "already at status 10" in reply["message"]
    with hub.runtime.sessions() as s:
        record = s.execute(
            select(Exchange.operation, Exchange.outcome, Exchange.error_code)
            .where(Exchange.peer == "national_portal", Exchange.operation != "auth")
            .order_by(Exchange.id)
        ).all()
    assert [tuple(row) for row in record] == [  # in the order they were made
        ("DongBoHoSoMC", "handled", "portal_invalid_transition"),
        ("TraCuuHoSo", "ok", None),
    ]
    metrics = hub.http.get("/metrics").text
    assert 'outcome="permanent"' not in metrics
