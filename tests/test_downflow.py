"""Down-flow: a dossier filed on the national portal is pushed to hub, routed by agency code to the province's
one-stop system through the outbox; the statuses the province then sets flow back up to the portal."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from hub.sandbox.common import ServerThread
from hub.sync import jobs
from tests.api_helpers import assert_problem
from tests.conftest import AGENCY, Creds, Hub, HubFactory
from tests.helpers import dossier, portal_cli_env, step


def push(portal: httpx.Client, hub: Hub, creds: Creds, d: dict[str, Any]) -> dict[str, Any]:
    r = portal.post("/_sandbox/push", json={"hub_url": hub.url, "api_key": creds.portal_key, "dossier": d})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def received(onestop: httpx.Client, outcome: str = "applied") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = onestop.get("/_sandbox/received", params={"outcome": outcome}).json()["items"]
    return items


def test_pushed_dossier_reaches_the_province_and_its_statuses_flow_back(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    hub = hub_factory()
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    d = dossier(1, status=1, KenhThucHien=2)
    answer = push(portal, hub, creds, d)
    assert answer["hub_status"] == 202 and answer["hub_reply"]["seq"] == 1
    assert push(portal, hub, creds, d)["hub_reply"] == answer["hub_reply"]  # a repeated push: same answer
    hub.wait_idle()
    [created] = received(onestop)
    assert created["operation"] == "createdossierfromdvcqg" and created["body"]["data"]["MaHoSo"] == d["MaHoSo"]
    # the province works on it and reports through hub, which relays to the portal
    code = d["MaHoSo"]
    for status in (2, 4, 9, 10):
        assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status)).status_code == 202
    hub.wait_idle()
    history = [h["status"] for h in portal.get(f"/_sandbox/dossiers/{code}").json()["history"]]
    assert history == [1, 2, 4, 9, 10]
    assert len(received(onestop)) == 1  # nothing echoed back down


def test_unroutable_agency_is_a_dead_letter_with_its_reason(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    hub = hub_factory()
    d = dossier(2, status=1)
    assert push(portal, hub, creds, d)["hub_status"] == 202
    with hub.runtime.sessions() as s:
        [dead] = jobs.list_jobs(s, state="dead")
    assert dead["last_error_code"] == "unroutable_agency" and AGENCY in dead["last_error"]
    assert received(onestop) == []
    hub.runtime.routes.add(AGENCY, onestop_server.url)
    with hub.runtime.sessions.begin() as s:
        assert jobs.replay(s, by="test", dossier=d["MaHoSo"])["replayed"] == 1
    hub.runtime.wake()
    assert hub.wait_idle() == {"delivered": 1}
    assert [r["body"]["data"]["MaHoSo"] for r in received(onestop)] == [d["MaHoSo"]]


def test_portal_pushes_while_the_province_is_down_arrive_in_order(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    hub = hub_factory()
    hub.runtime.routes.add("000.00.*", onestop_server.url)
    onestop.post("/_sandbox/faults", json={"outage_seconds": 120})  # down until told otherwise below
    d = dossier(3, status=1)
    push(portal, hub, creds, d)
    push(portal, hub, creds, {**d, "TrangThaiHoSo": 7, "GhiChu": "Công dân rút hồ sơ"})  # withdrawn on the portal
    deadline = time.monotonic() + 30
    while not any(j["attempts"] and j["last_error"] for j in _jobs(hub, d["MaHoSo"])):  # hub has tried and failed
        assert time.monotonic() < deadline, _jobs(hub, d["MaHoSo"])
        time.sleep(0.05)
    assert received(onestop) == []
    assert {j["state"] for j in _jobs(hub, d["MaHoSo"])} <= {"pending", "in_flight"}  # kept, neither lost nor dead
    onestop.post("/_sandbox/faults", json={"outage_seconds": 0})  # the province is back
    assert hub.wait_idle(timeout=30) == {"delivered": 2}
    ops = [(r["operation"], r["body"].get("TrangThaiHoSo")) for r in received(onestop)]
    assert ops == [("createdossierfromdvcqg", None), ("status", 7)]


def _jobs(hub: Hub, code: str) -> list[dict[str, object]]:
    with hub.runtime.sessions() as s:
        return jobs.list_jobs(s, dossier=code)


def test_only_the_portal_may_push_and_routes_are_validated(hub_factory: HubFactory, creds: Creds) -> None:
    hub = hub_factory(start_worker=False)
    assert_problem(hub.http.post("/v1/national/dossiers", json=dossier(4, status=1)), 403, "role_not_allowed")
    from hub.domain.errors import DomainError

    bad = [("H56", "http://x"), ("000.00.17.H56", "ftp://x"), ("000.00.17.H56", "not a url"), ("٠٠٠.*", "http://x")]
    for pattern, endpoint in bad:  # the last: Arabic-Indic digits, which str.isdigit() takes for digits
        with pytest.raises(DomainError):
            hub.runtime.routes.add(pattern, endpoint)
    hub.runtime.routes.add("000.00.17.H56", "http://127.0.0.1:1/")
    hub.runtime.routes.add("000.00.*", "http://127.0.0.1:2")
    from hub.services.routes import resolve

    with hub.runtime.sessions() as s:
        assert resolve(s, "000.00.17.H56") == "http://127.0.0.1:1"  # exact beats prefix
        assert resolve(s, "000.00.12.H29") == "http://127.0.0.1:2"
        assert resolve(s, "001.00.12.H29") is None


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        (httpx.Response(503), "peer_http_unavailable", True),
        (httpx.Response(500), "peer_http_5xx", True),
        (httpx.Response(200, json={"error_code": 3, "message": "x"}), "onestop_invalid_data", False),
        (httpx.Response(200, json={"error_code": 99, "message": "x"}), "onestop_error", True),
        (httpx.Response(200, text="<html/>"), "peer_malformed_reply", True),
        (httpx.Response(200, content=b"[" * 5000 + b"]" * 5000), "peer_malformed_reply", True),  # too deep to parse
        (httpx.Response(200, content=b" " * (5 * 1024 * 1024)), "peer_reply_too_large", True),  # read up to 4 MiB only
        (httpx.Response(400, text="bad"), "peer_http_4xx", False),
    ],
)
def test_one_stop_answers_are_classified(reply: httpx.Response, code: str, retryable: bool) -> None:
    from hub.adapters.errors import PeerError
    from hub.adapters.one_stop import OneStopClient

    client = OneStopClient(transport=httpx.MockTransport(lambda request: reply))
    seen: list[Any] = []
    with pytest.raises(PeerError) as exc:
        client.deliver(
            "http://onestop.test",
            "status",
            {"MaHoSo": "x"},
            idempotency_key="k",
            correlation_id="c",
            on_exchange=seen.append,
        )
    assert exc.value.code == code and exc.value.retryable is retryable
    assert [r.outcome for r in seen] == ["retryable" if retryable else "permanent"]


def test_polling_picks_up_a_lost_push_and_never_delivers_twice(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    hub = hub_factory()
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    lost = dossier(5, status=1)
    portal.post("/_sandbox/file", json={"dossier": lost}).raise_for_status()  # filed there, push never arrived
    pushed = dossier(6, status=1)
    push(portal, hub, creds, pushed)  # this one did arrive
    counts = hub.runtime.poll_portal()
    assert counts == {"seen": 2, "new_events": 1, "unchanged": 1, "invalid": 0, "errors": 0}
    assert ("TraCuuHoSoMoi", "ok") in outbound(hub, "poll")  # on the record of outbound exchanges, as every one
    hub.wait_idle()
    assert sorted(r["body"]["data"]["MaHoSo"] for r in received(onestop)) == sorted([lost["MaHoSo"], pushed["MaHoSo"]])
    # polling again, and pushing again, change nothing
    assert hub.runtime.poll_portal()["unchanged"] == 2
    push(portal, hub, creds, pushed)
    hub.wait_idle()
    assert len(received(onestop)) == 2
    # a change at the portal that was not pushed (the citizen withdrew) is caught by the next poll
    portal.post("/_sandbox/file", json={"dossier": {**lost, "TrangThaiHoSo": 7}}).raise_for_status()
    assert hub.runtime.poll_portal()["new_events"] == 1
    hub.wait_idle()
    assert [(r["operation"], r["body"].get("TrangThaiHoSo")) for r in received(onestop)][-1] == ("status", 7)


def test_polling_asks_for_a_window_of_filings_not_the_portals_whole_history(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, tmp_path: Any
) -> None:
    """Every five minutes the poll asked the portal for every dossier ever filed there for the province. It asks for
    the last HUB_PORTAL_POLL_DAYS (3) — back to its last answered poll when hub was away longer, so an outage leaves
    no gap — and `hub poll --since` reaches further by hand."""
    import json
    import random
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from hub.domain.dates import VN_TZ, parse_national
    from hub.sandbox.one_stop import make_dossier
    from hub.store.models import Flag
    from tests.test_cli import run

    def asked_since() -> datetime:
        calls = portal.get("/_sandbox/received", params={"operation": "TraCuuHoSoMoi"}).json()["items"]
        return parse_national(calls[-1]["body"]["TuNgay"])

    hub = hub_factory()
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    now = datetime.now(UTC)
    recent = dossier(31, status=1)
    old = make_dossier(AGENCY, 32, random.Random(3), status=1, when=now - timedelta(days=10))
    for d in (recent, old):
        portal.post("/_sandbox/file", json={"dossier": d}).raise_for_status()
    counts = hub.runtime.poll_portal()
    assert counts["seen"] == 1 and counts["new_events"] == 1  # the recent one; the old one was not even listed
    assert abs(asked_since() - (now - timedelta(days=3))) < timedelta(minutes=1)
    # hub was away for five days: its next poll goes back to its last answered one (less a margin), not three days
    with hub.runtime.sessions.begin() as s:
        away = (now - timedelta(days=5)).isoformat()
        s.execute(update(Flag).where(Flag.name.like("poll_portal:%")).values(value=away))
    assert hub.runtime.poll_portal() == {"seen": 1, "new_events": 0, "unchanged": 1, "invalid": 0, "errors": 0}
    assert abs(asked_since() - (now - timedelta(days=5, minutes=10))) < timedelta(minutes=1)
    assert abs(asked_since() - (now - timedelta(days=3))) > timedelta(days=1)
    # an operator who learns that pushes were lost for weeks asks further back
    env = portal_cli_env(hub, tmp_path)
    assert run(["poll", "--since", "last week"], tmp_path, env).returncode == 2
    since = (now - timedelta(days=12)).astimezone(VN_TZ).date()
    by_hand = run(["poll", "--json", "--since", since.isoformat()], tmp_path, env)
    assert by_hand.returncode == 0, by_hand.stderr
    assert json.loads(by_hand.stdout) == {
        "seen": 2, "new_events": 1, "unchanged": 1, "invalid": 0, "errors": 0,
    }  # fmt: skip
    hub.wait_idle()
    assert {r["body"]["data"]["MaHoSo"] for r in received(onestop)} == {recent["MaHoSo"], old["MaHoSo"]}


def test_a_one_stop_system_that_is_down_holds_back_no_other_one_stop_system(
    hub_factory: HubFactory, portal: httpx.Client, onestop: httpx.Client, onestop_server: ServerThread, creds: Creds
) -> None:
    """Two one-stop systems in the routing table, one of them down (a district system in maintenance). Every
    one-stop system was one peer to the relay: the first message of a batch found the down one, and the dossiers
    bound for the other waited with it, pause after pause, for as long as it stayed down. Each system is a peer of
    its own now: the other gets its dossiers, the down one is probed once a pause."""
    from tests.conftest import OTHER_AGENCY, listen_port

    hub = hub_factory()
    down = f"http://127.0.0.1:{listen_port()}"  # nobody listens: connection refused
    hub.runtime.routes.add(OTHER_AGENCY, down)
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    stuck = [dossier(90 + i, status=1, agency=OTHER_AGENCY) for i in range(3)]
    bound = [dossier(95 + i, status=1) for i in range(3)]
    for d in stuck + bound:  # those for the down system first in line
        push(portal, hub, creds, d)
    deadline = time.monotonic() + 15
    while len(received(onestop)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(r["body"]["data"]["MaHoSo"] for r in received(onestop)) == sorted(d["MaHoSo"] for d in bound)
    with hub.runtime.sessions() as s:
        waiting = [j for d in stuck for j in jobs.list_jobs(s, dossier=d["MaHoSo"]) if j["destination"] == "one_stop"]
    # waiting for their system: nothing lost, nothing dead (one may be in flight: the down system's probe, once a
    # pause — a clean-clone CI run caught one so)
    assert len(waiting) == 3 and {j["state"] for j in waiting} <= {"pending", "in_flight"}, waiting
    assert {j["last_error_code"] for j in waiting} <= {"peer_unavailable", None}  # probed, or not tried yet


def test_a_one_stop_system_that_hangs_holds_back_no_delivery_to_the_portal_in_the_same_batch(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds
) -> None:
    """A one-stop system that takes the connection and never answers (a hung application server) costs its probe a
    read timeout. The batch's peers were served one after the other: the portal's messages claimed with it waited
    for that timeout, at every probe of the hung system. Each peer's part of a batch goes beside the others' now."""
    import socket
    import threading

    from tests.conftest import OTHER_AGENCY
    from tests.helpers import step

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(hung.accept()[0]) for _ in range(16)], daemon=True).start()
    try:
        hub = hub_factory(start_worker=False, read_timeout=2.5)
        hub.runtime.routes.add(OTHER_AGENCY, f"http://127.0.0.1:{hung.getsockname()[1]}")
        d = dossier(120, status=2)
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
        assert hub.runtime.relay.drain() == 1  # filed at the portal: its next step is what the batch carries
        push(portal, hub, creds, dossier(121, status=1, agency=OTHER_AGENCY))  # for the hung one-stop system
        assert hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 4)).status_code == 202
        drained = threading.Thread(target=hub.runtime.relay.drain_step)
        drained.start()
        deadline = time.monotonic() + 10
        while [h["status"] for h in portal.get(f"/_sandbox/dossiers/{d['MaHoSo']}").json()["history"]] != [2, 4]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert drained.is_alive()  # the portal has its step while the probe of the hung system still waits
        drained.join(15)
        assert not drained.is_alive()
    finally:
        hung.close()
        for conn in held:
            conn.close()


def test_a_poll_the_portal_did_not_answer_is_a_failed_run_not_a_success(
    hub_factory: HubFactory, portal: httpx.Client, onestop_server: ServerThread, tmp_path: Any
) -> None:
    """The portal down for an hour: every poll counted its error and was recorded as a success — the console's
    sync-jobs page said "ok", hub_scheduled_job_last_success_age_seconds stayed low and HubScheduledJobStale never
    fired. A poll the portal did not answer is a failed run (with what it counted), its route's window is not moved
    on, and `hub poll` exits 1."""
    from tests.test_cli import run

    hub = hub_factory()
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    assert hub.runtime.poll_portal()["errors"] == 0
    with hub.runtime.sessions() as s:
        answered = jobs.last_run(s, "poll_portal", ok_only=True)
        assert answered is not None and answered.outcome == "ok"
    polled = last_polled(hub)
    portal.post("/_sandbox/faults", json={"outage_seconds": 60}).raise_for_status()
    try:
        assert hub.runtime.poll_portal() == {"seen": 0, "new_events": 0, "unchanged": 0, "invalid": 0, "errors": 1}
        with hub.runtime.sessions() as s:
            failed = jobs.last_run(s, "poll_portal")
            assert failed is not None and failed.outcome == "error"
            assert failed.detail["errors"] == 1 and "did not answer" in failed.detail["error"]
            still = jobs.last_run(s, "poll_portal", ok_only=True)
            assert still is not None and still.id == answered.id  # the last success is still the one before
        assert last_polled(hub) == polled  # the next answered poll goes back to before the outage
        by_hand = run(["poll", "--json"], tmp_path, portal_cli_env(hub, tmp_path))
        assert by_hand.returncode == 1 and '"errors": 1' in by_hand.stdout, by_hand.stdout + by_hand.stderr
    finally:
        portal.post("/_sandbox/faults", json={"outage_seconds": 0}).raise_for_status()
    assert hub.runtime.poll_portal()["errors"] == 0
    with hub.runtime.sessions() as s:
        back = jobs.last_run(s, "poll_portal")
        assert back is not None and back.outcome == "ok"
    assert last_polled(hub) > polled


def last_polled(hub: Hub) -> Any:
    from hub.sync.polling import last_polled as noted

    return noted(hub.runtime.sessions, "000.00.17.*")


def outbound(hub: Hub, correlation_id: str) -> list[tuple[str, str]]:
    """(operation, outcome) of the exchanges recorded under a correlation id, in order."""
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        rows = s.execute(
            select(Exchange.operation, Exchange.outcome)
            .where(Exchange.correlation_id == correlation_id)
            .order_by(Exchange.id)
        )
        return [(r.operation, r.outcome) for r in rows]


def inbound_records(hub: Hub) -> list[tuple[str, str | None]]:
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        rows = s.execute(
            select(Exchange.outcome, Exchange.error_code)
            .where(Exchange.operation == "inbound.push_dossier")
            .order_by(Exchange.id)
        ).all()
    return [(r.outcome, r.error_code) for r in rows]


def stored_for(hub: Hub, code: str) -> dict[str, int]:
    from sqlalchemy import text

    with hub.runtime.sessions() as s:
        return {
            "dossiers": s.execute(text("SELECT count(*) FROM dossiers WHERE code = :c"), {"c": code}).scalar_one(),
            "outbox": s.execute(text("SELECT count(*) FROM outbox")).scalar_one(),
            "events": s.execute(text("SELECT count(*) FROM status_events")).scalar_one(),
            "keys": s.execute(text("SELECT count(*) FROM idempotency_keys")).scalar_one(),
        }


@pytest.mark.parametrize(
    ("change", "key", "status", "code"),
    [
        ({"MaTTHC": "9.999999"}, None, 422, "unknown_procedure"),
        ({"MaHoSo": "H56-261201-0001"}, None, 422, "invalid_dossier_code"),
        ({"NgayTiepNhan": "20261345250000"}, None, 422, "invalid_date"),
        ({}, "not-the-portal-key", 401, "invalid_api_key"),
        ({"TrangThaiHoSo": 11}, None, 422, "invalid_status"),
    ],
)
def test_a_bad_push_is_refused_recorded_and_leaves_nothing(
    hub_factory: HubFactory,
    portal: httpx.Client,
    onestop: httpx.Client,
    onestop_server: ServerThread,
    creds: Creds,
    change: dict[str, Any],
    key: str | None,
    status: int,
    code: str,
) -> None:
    hub = hub_factory()
    hub.runtime.routes.add("000.00.*", onestop_server.url)
    d = {**dossier(5, status=1), **change}
    r = portal.post(
        "/_sandbox/push",
        json={"hub_url": hub.url, "api_key": key or creds.portal_key, "dossier": d, "unchecked": True},
    )
    answer = r.json()
    assert answer["hub_status"] == status and answer["hub_reply"]["code"] == code, answer
    assert stored_for(hub, d["MaHoSo"]) == {"dossiers": 0, "outbox": 0, "events": 0, "keys": 0}
    assert inbound_records(hub) == [("rejected", code)]
    # the same dossier, put right, goes through and is recorded as accepted
    good = dossier(6, status=1)
    assert push(portal, hub, creds, good)["hub_status"] == 202
    assert inbound_records(hub) == [("rejected", code), ("accepted", None)]
    hub.wait_idle()
    assert [r["body"]["data"]["MaHoSo"] for r in received(onestop)] == [good["MaHoSo"]]


def test_the_synced_catalogue_decides_which_procedures_are_known(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds
) -> None:
    hub = hub_factory(start_worker=False)
    d = dossier(7, status=1)
    assert push(portal, hub, creds, d)["hub_status"] == 202  # the shipped catalogue knows it
    from hub.domain.dates import utcnow
    from hub.store.models import Procedure

    with hub.runtime.sessions.begin() as s:  # a synced catalogue without that procedure
        s.add(Procedure(code="2.000001", name="Other", limit_working_days=5, fees=[], data={}, synced_at=utcnow()))
    answer = push(portal, hub, creds, {**dossier(8, status=1), "MaTTHC": d["MaTTHC"]})
    assert answer["hub_status"] == 422 and answer["hub_reply"]["code"] == "unknown_procedure"


def test_a_compressed_answer_is_read_and_an_endless_one_is_cut_off() -> None:
    """A one-stop system behind a proxy that gzips its answers is understood; one whose answer does not end is read
    only up to hub's cap (4 MiB of JSON), not into memory without bound."""
    import gzip
    import json

    from hub.adapters.errors import PeerProtocolError
    from hub.adapters.one_stop import OneStopClient

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/ok/"):
            body = gzip.compress(json.dumps({"error_code": 0, "message": "Thành công"}).encode())
            return httpx.Response(200, content=body, headers={"Content-Encoding": "gzip"})

        def endless() -> Any:
            while True:
                yield b" " * 65536

        return httpx.Response(200, content=endless())

    client = OneStopClient(transport=httpx.MockTransport(answer))
    seen: list[Any] = []
    reply = client.deliver("http://onestop.test/ok", "status", {"MaHoSo": "x"}, idempotency_key="k",
                           correlation_id="c", on_exchange=seen.append)  # fmt: skip
    assert reply["error_code"] == 0
    with pytest.raises(PeerProtocolError, match="larger than"):
        client.deliver("http://onestop.test/endless", "status", {"MaHoSo": "x"}, idempotency_key="k",
                       correlation_id="c", on_exchange=seen.append)  # fmt: skip
    assert [r.outcome for r in seen] == ["ok", "retryable"]
