"""Citizen notifications through a real SMTP server (aiosmtpd on loopback) and the SMS-gateway sandbox: the right
status changes notify, in Vietnamese with correct diacritics, once per event and channel — a repeated request or
a replayed delivery to the portal sends nothing again — and the citizen's contact never reaches the logs."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hub.sandbox.common import ServerThread
from hub.sandbox.notify import SmtpSink, create_sms_app
from hub.sync import jobs
from tests.conftest import Hub, HubFactory
from tests.helpers import console_as, dossier, step

SMS_KEY = secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def sms_server() -> Iterator[ServerThread]:
    server = ServerThread(create_sms_app({SMS_KEY})).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_factory: HubFactory, smtp: SmtpSink, sms_server: ServerThread, portal: httpx.Client) -> Hub:
    smtp.clear()
    httpx.post(f"{sms_server.url}/_sandbox/reset")
    return hub_factory(
        smtp_host=smtp.host, smtp_port=smtp.port, smtp_sender="motcua@hub.local",
        sms_gateway_url=sms_server.url, sms_api_key=SMS_KEY,
    )  # fmt: skip


def sent_sms(server: ServerThread) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(f"{server.url}/_sandbox/sms").json()["items"]
    return items


def test_status_changes_notify_once_in_vietnamese(
    hub: Hub, smtp: SmtpSink, sms_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    d = dossier(1, status=2, Email="nguyen.van.an@example.vn", ChuHoSo="Nguyễn Văn An")
    code = d["MaHoSo"]
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    walk = [(5, "Bổ sung bản sao giấy chứng sinh"), (4, "Tiếp tục xử lý"), (6, "Nộp lệ phí"), (4, "Đã nộp"),
            (9, "Đã ký"), (10, "Đã trả")]  # fmt: skip
    steps = [step(code, status, note) for status, note in walk]
    for k, body in enumerate(steps):
        r = hub.http.post(f"/v1/dossiers/{code}/progress", json=body, headers={"Idempotency-Key": f"s{k}"})
        assert r.status_code == 202
        hub.wait_idle()  # each told before the next step (one asking for papers or a fee after it would not be)
    # the same request again (a client retry: the same body, its ThoiDiemXuLy included) creates nothing, so notifies
    # nothing
    again = hub.http.post(f"/v1/dossiers/{code}/progress", json=steps[-1], headers={"Idempotency-Key": "s5"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    hub.wait_idle()
    subjects = [m["subject"] for m in smtp.messages]
    assert subjects == [
        f"Hồ sơ {code} đã được tiếp nhận",
        f"Hồ sơ {code} cần bổ sung giấy tờ",
        f"Hồ sơ {code}: đề nghị nộp phí, lệ phí",
        f"Hồ sơ {code} đã có kết quả",
    ]  # 9 and 10 are one "result ready"
    received = smtp.messages[0]
    assert received["to"] == ["nguyen.van.an@example.vn"] and "Kính gửi Nguyễn Văn An" in received["body"]
    due = d["NgayHenTra"]
    assert f"{due[6:8]}/{due[4:6]}/{due[0:4]}" in received["body"]  # NgayHenTra as dd/mm/yyyy
    assert "Bổ sung bản sao giấy chứng sinh" in smtp.messages[1]["body"]
    texts = [m["message"] for m in sent_sms(sms_server)]
    assert (
        len(texts) == 4
        and texts[0].startswith(f"Hồ sơ {code}")
        and all(m["phone"] == d["SoDienThoai"] for m in sent_sms(sms_server))
    )
    # replaying every delivery of the dossier's events to the portal sends no notification again
    with hub.runtime.sessions.begin() as s:
        from sqlalchemy import update

        from hub.store.models import OutboxMessage

        s.execute(update(OutboxMessage).where(OutboxMessage.destination == "national_portal").values(state="dead"))
    with hub.runtime.sessions.begin() as s:
        assert jobs.replay(s, by="test", all_dead=True)["replayed"] == 7
    hub.runtime.wake()
    hub.wait_idle()
    time.sleep(0.2)
    assert len(smtp.messages) == 4 and len(sent_sms(sms_server)) == 4
    # the citizen's contact never reaches the logs
    for rec in (r for r in caplog.records if r.name.startswith("hub")):
        text = f"{rec.getMessage()} {vars(rec)}"
        assert "nguyen.van.an@example.vn" not in text and d["SoDienThoai"] not in text


def test_dossiers_taken_over_tell_their_citizens_nothing_until_they_move_on(
    hub: Hub, smtp: SmtpSink, sms_server: ServerThread
) -> None:
    """Going live with dossiers in progress (ADR 0041): each reached its status before hub — received weeks ago,
    a supplement asked for, a result already returned — and its citizen was told then, or not, by the one-stop
    system. Hub tells them nothing again; from the next change on, it tells as for any dossier."""
    batch = [dossier(40 + status, status=status, Email=f"cd{status}@example.vn") for status in (2, 5, 6, 9, 10)]
    r = hub.http.post("/v1/dossiers/batch", json={"isUpdating": True, "data": batch})
    assert r.status_code == 200 and all(i.get("taken_over") for i in r.json()["results"]), r.text
    one = hub.http.post("/v1/dossiers", params={"isUpdating": "true"}, json=dossier(60, status=3, Email="x@example.vn"))
    assert one.status_code == 202 and one.json()["taken_over"] is True, one.text
    hub.wait_idle()
    time.sleep(0.2)
    assert smtp.messages == [] and sent_sms(sms_server) == []
    code = batch[1]["MaHoSo"]  # the supplement came: processing again, then the fee asked for
    for status, note in ((4, "Đã bổ sung"), (6, "Nộp lệ phí")):
        assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status, note)).status_code == 202
    hub.wait_idle()
    assert [m["subject"] for m in smtp.messages] == [f"Hồ sơ {code}: đề nghị nộp phí, lệ phí"]
    assert len(sent_sms(sms_server)) == 1


def test_a_notice_asking_for_what_the_dossier_no_longer_waits_for_is_not_sent(
    hub: Hub, smtp: SmtpSink, sms_server: ServerThread
) -> None:
    """The SMS gateway is down while a dossier asks for papers and gets them, then asks for its fee and is paid:
    when the gateway is back the citizen hears that the dossier was received — still true — but is not asked for
    papers they brought or a fee they paid. A second fee asked for later is asked."""
    httpx.post(f"{sms_server.url}/_sandbox/faults", json={"outage_seconds": 600})
    d = dossier(70, status=2)
    d.pop("Email", None)
    code = d["MaHoSo"]
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    for status, note in ((5, "Bổ sung giấy chứng sinh"), (4, "Đã bổ sung"), (6, "Nộp lệ phí"), (4, "Đã nộp")):
        assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status, note)).status_code == 202
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the portal has them all; the gateway has been tried and found down
        view = hub.http.get(f"/v1/dossiers/{code}").json()
        portal = [x for e in view["events"] for x in e["deliveries"] if x["destination"] == "national_portal"]
        if all(x["state"] == "delivered" for x in portal) and len(portal) == 5:
            break
        time.sleep(0.05)
    assert sent_sms(sms_server) == []
    httpx.post(f"{sms_server.url}/_sandbox/faults", json={"outage_seconds": 0})
    with hub.runtime.sessions.begin() as s:
        jobs.retry(s, by="test", destination="sms")
    hub.runtime.wake()
    hub.wait_idle()
    [received] = [m["message"] for m in sent_sms(sms_server)]
    assert "đã được tiếp nhận" in received
    view = hub.http.get(f"/v1/dossiers/{code}").json()
    sms = {e["TrangThaiHoSo"]: x for e in view["events"] for x in e["deliveries"] if x["destination"] == "sms"}
    assert set(sms) == {2, 5, 6} and all(x["state"] == "delivered" for x in sms.values())
    assert sms[5]["not_sent"] == sms[6]["not_sent"] == "moved_on" and "not_sent" not in sms[2]
    page = console_as(hub, "le.thi.xem", "viewer").get(f"/ops/dossiers/{code}").text
    assert page.count('class="not-sent">không gửi: hồ sơ đã sang bước khác') == 2  # on the operator's timeline
    # the next fee asked for, the gateway up: asked
    assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 6, "Phí bổ sung")).status_code == 202
    hub.wait_idle()
    assert "cần nộp phí, lệ phí" in sent_sms(sms_server)[-1]["message"] and len(sent_sms(sms_server)) == 2


def test_a_notice_the_gateway_refuses_for_good_holds_back_no_later_notice(
    hub: Hub, smtp: SmtpSink, sms_server: ServerThread
) -> None:
    """A brandname SMS gateway refuses a text that matches no template registered with the carriers — for good,
    for that kind of notice only. Its dead letter held back every later SMS of the dossier: the citizen asked for
    papers never heard that the fee was due, or that the result was ready, until an operator acted. A dead notice
    holds none back (ADR 0045); the portal's own messages keep the strict order; the email went throughout; and the
    dead letter, replayed once the template is registered, asks nothing the dossier no longer asks."""
    httpx.post(f"{sms_server.url}/_sandbox/faults", json={"refuse_text": "cần bổ sung"})
    try:
        d = dossier(80, status=2, Email="tran.thi.binh@example.vn")
        code = d["MaHoSo"]
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
        for status, note in ((5, "Bổ sung giấy chứng sinh"), (4, "Đã bổ sung"), (6, "Nộp lệ phí"), (9, "Đã ký")):
            assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status, note)).status_code == 202
            states = hub.wait_idle()  # each tried before the next step (an asking notice after it would not be sent)
        assert states == {"delivered": 5 + 4 + 3, "dead": 1}, states  # portal, email (2 5 6 9), SMS (2 6 9 | 5)
        texts = [m["message"] for m in sent_sms(sms_server)]
        assert len(texts) == 3 and "tiếp nhận" in texts[0] and "nộp phí" in texts[1] and "có kết quả" in texts[2]
        assert len(smtp.messages) == 4
        view = hub.http.get(f"/v1/dossiers/{code}").json()
        [dead] = [x for e in view["events"] for x in e["deliveries"] if x["state"] == "dead"]
        assert dead["destination"] == "sms" and dead["last_error_code"] == "sms_invalid"
        page = console_as(hub, "pham.van.sua", "operator").get(f"/ops/dossiers/{code}").text
        assert "1 thư chết của hồ sơ" in page and "thông báo cho công dân không chặn" in page
        assert "đang chặn" not in page
    finally:
        httpx.post(f"{sms_server.url}/_sandbox/faults", json={"refuse_text": ""})
    with hub.runtime.sessions.begin() as s:
        assert jobs.replay(s, by="test", dossier=code)["replayed"] == 1
    hub.runtime.wake()
    assert hub.wait_idle() == {"delivered": 13}
    assert len(sent_sms(sms_server)) == 3  # the papers were brought long ago: not asked for now
    # the portal's messages: one dead holds the dossier's later ones back, as ever
    other = dossier(81, status=2)
    assert hub.http.post("/v1/dossiers", json=other).status_code == 202
    hub.wait_idle()
    with hub.runtime.sessions.begin() as s:
        from sqlalchemy import update

        from hub.store.models import OutboxMessage

        s.execute(update(OutboxMessage).where(OutboxMessage.destination == "national_portal",
                                              OutboxMessage.state == "delivered").values(state="dead"))  # fmt: skip
    ocode = other["MaHoSo"]
    assert hub.http.post(f"/v1/dossiers/{ocode}/progress", json=step(ocode, 4)).status_code == 202
    time.sleep(0.5)
    view = hub.http.get(f"/v1/dossiers/{ocode}").json()
    assert [x["state"] for x in view["events"][-1]["deliveries"] if x["destination"] == "national_portal"] == [
        "pending"
    ]


def test_refusal_and_channels_the_citizen_has(hub: Hub, smtp: SmtpSink, sms_server: ServerThread) -> None:
    d = dossier(2, status=1)
    d.pop("Email", None)  # no email address: SMS only
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 3, "Không thuộc thẩm quyền"))
    assert r.status_code == 202
    hub.wait_idle()
    assert smtp.messages == []
    [sms] = sent_sms(sms_server)
    assert "không được tiếp nhận" in sms["message"] and "Không thuộc thẩm quyền" in sms["message"]


def test_contacts_that_are_not_one_address_or_number_are_not_written_to(
    hub: Hub, smtp: SmtpSink, sms_server: ServerThread
) -> None:
    """A one-stop system's data with a line break in the email (a second header: Bcc), a list of addresses, or a
    phone number that is none: no mail to anyone it names, no SMS, no dead letter holding the dossier's later
    notifications back — and the dossier reaches the portal. A number written with spaces is still texted."""
    forged = dossier(3, status=1, Email="an@example.vn\r\nBcc: lo@attacker.example", SoDienThoai="09 1234 5678")
    listed = dossier(4, status=1, Email="an@example.vn, lo@attacker.example", SoDienThoai="12345")
    for d in (forged, listed):
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
        assert hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 2)).status_code == 202
    states = hub.wait_idle()
    assert set(states) == {"delivered"}, states  # nothing dead, nothing waiting
    assert smtp.messages == []
    assert [m["phone"] for m in sent_sms(sms_server)] == ["0912345678"]  # the first dossier's, its spaces left out
    with hub.runtime.sessions() as s:
        kept = {(j["MaHoSo"], j["destination"]) for j in jobs.list_jobs(s, limit=100)}
    assert (listed["MaHoSo"], "national_portal") in kept and not {k for k in kept if k[1] == "email"}


def test_a_payment_credited_notifies_the_citizen(
    hub_factory: HubFactory, smtp: SmtpSink, sms_server: ServerThread, pay_server: ServerThread, platform: httpx.Client
) -> None:
    from tests.conftest import PAY_PARTNER as PARTNER
    from tests.conftest import PAY_SECRET as SECRET
    from tests.test_payments import awaiting_payment, create, payment_of, wait_for

    httpx.post(f"{sms_server.url}/_sandbox/reset")
    hub = hub_factory(
        sms_gateway_url=sms_server.url, sms_api_key=SMS_KEY, payment_dvc_url=pay_server.url,
        payment_dvc_partner=PARTNER, payment_dvc_secret=SECRET, payment_check_interval=0,
    )  # fmt: skip
    hub.runtime.payments.callback_url = lambda name: f"{hub.server.url}/v1/payments/callbacks/{name}"
    payment = create(hub, awaiting_payment(hub, 41))
    httpx.post(payment["pay_url"])
    wait_for(lambda: payment_of(hub, payment["reference"])["status"] == "paid")
    wait_for(lambda: any(m["message"].startswith("Đã nhận") for m in sent_sms(sms_server)))
    texts = [m["message"] for m in sent_sms(sms_server)]
    assert texts[-1].startswith("Đã nhận thanh toán phí, lệ phí của hồ sơ")
    assert sum("cần nộp phí, lệ phí 8.000 đồng" in t for t in texts) == 1  # status 6 was notified, once


def test_a_pay_link_given_up_unpaid_tells_the_citizen_to_pay_again_once(
    hub_factory: HubFactory, sms_server: ServerThread, pay_server: ServerThread, portal: httpx.Client
) -> None:
    """A citizen opens the pay link and never pays: when hub gives the payment up as expired, the dossier's history
    says so (its status unchanged, nothing sent to the portal) and the citizen is told, once, to pay again — but not
    when the dossier no longer waits for a payment (paid at the counter, say)."""
    from datetime import timedelta

    from sqlalchemy import select

    from hub.store.models import Payment
    from tests.conftest import PAY_PARTNER as PARTNER
    from tests.conftest import PAY_SECRET as SECRET
    from tests.test_payments import awaiting_payment, create, dossier_status, payment_of

    httpx.post(f"{sms_server.url}/_sandbox/reset")
    hub = hub_factory(
        sms_gateway_url=sms_server.url, sms_api_key=SMS_KEY, payment_dvc_url=pay_server.url,
        payment_dvc_partner=PARTNER, payment_dvc_secret=SECRET, payment_check_interval=0,
    )  # fmt: skip
    waiting, moved_on = awaiting_payment(hub, 51), awaiting_payment(hub, 52)
    links = {code: create(hub, code)["reference"] for code in (waiting, moved_on)}
    r = hub.http.post(f"/v1/dossiers/{moved_on}/progress", json=step(moved_on, 4, "Đã nộp lệ phí tại quầy"))
    assert r.status_code == 202
    hub.wait_idle()
    before_sms = len(sent_sms(sms_server))
    portal_before = portal.get("/_sandbox/received").json()["count"]
    with hub.runtime.sessions.begin() as s:  # three days on, never paid
        for p in s.scalars(select(Payment)):
            p.created_at -= timedelta(hours=73)
    assert hub.runtime.payments.check_pending(correlation_id="t") == {"expired": 2}
    assert hub.runtime.payments.check_pending(correlation_id="t") == {}  # given up once
    hub.wait_idle()
    new = sent_sms(sms_server)[before_sms:]
    assert [m["message"] for m in new] == [
        f"Yêu cầu thanh toán phí, lệ phí 8.000 đồng của hồ sơ {waiting} đã hết hạn mà chưa được thanh toán. "
        "Hồ sơ vẫn chờ nộp phí, lệ phí: vui lòng thanh toán lại trên Cổng Dịch vụ công."
    ]
    for code, status in ((waiting, 6), (moved_on, 4)):
        assert payment_of(hub, links[code])["status"] == "expired" and dossier_status(hub, code) == status
        last = hub.http.get(f"/v1/dossiers/{code}").json()["events"][-1]
        assert last["kind"] == "payment.expired" and last["TrangThaiHoSo"] == last["previous_status"] == status
        assert {d["destination"] for d in last["deliveries"]} == ({"sms"} if code == waiting else set())
    assert portal.get("/_sandbox/received").json()["count"] == portal_before  # the portal is told nothing
    # the dossier goes on as before: its next step is relayed and numbered after the expiry
    r = hub.http.post(f"/v1/dossiers/{waiting}/progress", json=step(waiting, 4, "Đã nộp lệ phí tại quầy"))
    assert r.status_code == 202
    hub.wait_idle()
    events = hub.http.get(f"/v1/dossiers/{waiting}").json()["events"]
    assert [e["kind"] for e in events[-2:]] == ["payment.expired", "dossier.progress"]
    assert events[-1]["seq"] == events[-2]["seq"] + 1
    assert {d["state"] for d in events[-1]["deliveries"]} == {"delivered"}


def test_a_mail_relay_refusing_hubs_credentials_holds_the_emails_and_hub_check_says_why(
    hub_factory: HubFactory, sms_server: ServerThread, portal: httpx.Client, tmp_path: Path
) -> None:
    """The province's mail relay asks hub to sign in (AUTH) and refuses HUB_SMTP_PASSWORD (535): a citizen's email
    waits for the settings to be put right — `peer_auth_failed`, not a dead letter for good (`email_rejected`, as
    before) — and `hub check` says so, naming the settings, without sending anything. With the right password the
    check says it signed in, and emails go."""
    from hub.services import preflight
    from hub.store.models import OutboxMessage

    relay = SmtpSink(credentials={"motcua": "mat-khau-smtp-dung-1"}).start()
    try:
        smtp = {"smtp_host": relay.host, "smtp_port": relay.port, "smtp_sender": "motcua@hub.local",
                "smtp_username": "motcua"}  # fmt: skip
        wrong = hub_factory(**smtp, smtp_password="mat-khau-sai-0000")
        d = dossier(70, status=2, Email="tran.thi.binh@example.vn")
        assert wrong.http.post("/v1/dossiers", json=d).status_code == 202
        deadline = time.monotonic() + 15
        while True:
            with wrong.runtime.sessions() as s:
                mail = s.scalars(select(OutboxMessage).where(OutboxMessage.destination == "email")).first()
            if mail is not None and mail.last_error_code:
                break
            assert time.monotonic() < deadline, "the email was never tried"
            time.sleep(0.1)
        assert mail.state in ("pending", "in_flight") and mail.last_error_code == "peer_auth_failed", mail.last_error
        assert relay.messages == []
        said = {c.name: c for c in preflight.run(wrong.runtime)}["email"]
        assert said.status == "fail" and "peer_auth_failed" in said.detail and "HUB_SMTP_PASSWORD" in said.detail
        right = hub_factory(**smtp, smtp_password="mat-khau-smtp-dung-1", var_dir=tmp_path / "right")
        said = {c.name: c for c in preflight.run(right.runtime)}["email"]
        assert (said.status, said.detail) == ("ok", f"{relay.host}:{relay.port}: signed in as motcua")
        assert relay.messages == []  # the check sends nothing
        other = dossier(71, status=2, Email="le.van.cuong@example.vn")
        assert right.http.post("/v1/dossiers", json=other).status_code == 202
        right.wait_idle()
        assert [m["to"] for m in relay.messages] == [["le.van.cuong@example.vn"]]
    finally:
        relay.stop()
