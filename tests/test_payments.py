"""Fee payments against the DVC payment-platform sandbox: create (idempotent), pay through the pay page, verified
callbacks applied exactly once (50 concurrent duplicates → one credit), forged / amount-changed / replayed /
unknown callbacks refused with the platform's codes and nothing changed, lost callbacks settled by querying,
receipts, and reconciliation against the daily statement — on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from hub.adapters.payment.dvc import CONFIRM_FIELDS, mac
from hub.sandbox.common import ServerThread
from hub.store.models import Payment, PaymentCallback, StatusEvent
from tests.api_helpers import as_documented, assert_problem
from tests.conftest import PAY_PARTNER, PAY_SECRET, Creds, Hub, HubFactory
from tests.helpers import console_as, dossier, outage, step

PARTNER, SECRET = PAY_PARTNER, PAY_SECRET
HUB_BIN = str(Path(sys.executable).with_name("hub"))
FEES = [{"TenPhiLePhi": "Lệ phí cấp bản sao trích lục", "MaPhiLePhi": "LPTL", "HinhThucThu": 1, "Gia": 8000}]


@pytest.fixture
def hub(hub_factory: HubFactory, pay_server: ServerThread, platform: httpx.Client) -> Hub:
    h = hub_factory(
        payment_dvc_url=pay_server.url,
        payment_dvc_partner=PARTNER,
        payment_dvc_secret=SECRET,
        payment_query_after_seconds=0,
        payment_check_interval=0,
    )
    # the platform must call back this hub, whose port is known only now
    h.runtime.payments.callback_url = lambda name: f"{h.server.url}/v1/payments/callbacks/{name}"
    return h


def awaiting_payment(hub: Hub, n: int = 1, fees: list[dict[str, Any]] = FEES) -> str:
    d = dossier(n, MaTTHC="2.000635", TenTTHC="Cấp bản sao trích lục khai sinh", DanhSachLePhi=fees)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    for status in (4, 6):
        assert hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], status)).status_code == 202
    return str(d["MaHoSo"])


def payment_of(hub: Hub, reference: str) -> dict[str, Any]:
    r = hub.http.get(f"/v1/payments/{reference}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_for(cond: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def dossier_status(hub: Hub, code: str) -> int:
    status: int = hub.http.get(f"/v1/dossiers/{code}").json()["TrangThaiHoSo"]
    return status


def verdicts(hub: Hub) -> list[tuple[str, str]]:
    with hub.runtime.sessions() as s:
        return [(c.verdict, c.answer_code) for c in s.scalars(select(PaymentCallback).order_by(PaymentCallback.id))]


def cli_env(hub: Hub, tmp_path: Path) -> dict[str, str]:
    """The environment `hub payments …` runs in, beside this hub: its database, key and platform."""
    return {
        "PATH": str(Path(sys.executable).parent),
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_DATABASE_URL": hub.settings.effective_database_url,
        "HUB_SECRET_KEY": hub.settings.secret_key.get_secret_value() if hub.settings.secret_key else "",
        "HUB_PAYMENT_DVC_URL": hub.settings.payment_dvc_url,
        "HUB_PAYMENT_DVC_PARTNER": PARTNER,
        "HUB_PAYMENT_DVC_SECRET": SECRET,
        "HUB_NATIONAL_PORTAL_PASSWORD": "unused",
    }


def create(hub: Hub, code: str) -> dict[str, Any]:
    r = hub.http.post("/v1/payments", json={"MaHoSo": code})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_pay_and_the_dossier_moves_on_once(hub: Hub, platform: httpx.Client, portal: httpx.Client) -> None:
    code = awaiting_payment(hub)
    payment = create(hub, code)
    assert payment["amount"] == 8000 and payment["currency"] == "VND" and payment["status"] == "pending"
    again = hub.http.post("/v1/payments", json={"MaHoSo": code})
    assert again.status_code == 200 and again.json()["reference"] == payment["reference"]  # idempotent
    page = httpx.get(payment["pay_url"])
    assert page.status_code == 200 and "8,000" in page.text
    paid = httpx.post(payment["pay_url"])
    assert "Thanh toán thành công" in paid.text
    wait_for(lambda: payment_of(hub, payment["reference"])["status"] == "paid")
    settled = payment_of(hub, payment["reference"])
    assert settled["settled_by"] == "callback" and settled["transaction_id"].startswith("GD")
    assert dossier_status(hub, code) == 4  # out of 6, through the relay
    hub.wait_idle()
    history = [h["status"] for h in portal.get(f"/_sandbox/dossiers/{code}").json()["history"]]
    assert history == [2, 4, 6, 4]  # the national portal learned it
    receipt = hub.http.get(f"/v1/payments/{payment['reference']}/receipt")
    assert receipt.status_code == 200 and receipt.content.startswith(b"%PDF")
    assert receipt.headers["content-type"] == "application/pdf"
    # the province moves its agencies to another platform (hub restarted without the DVC platform's settings):
    # a receipt of the old one's payments is a 503 that says so, not a 500
    dvc = hub.runtime.payments.platforms.pop("dvc")
    gone = assert_problem(
        hub.http.get(f"/v1/payments/{payment['reference']}/receipt"), 503, "payment_platform_unavailable"
    )
    assert "'dvc' is not configured" in gone["detail"]
    hub.runtime.payments.platforms["dvc"] = dvc
    assert verdicts(hub) == [("applied", "00")]
    metrics = hub.http.get("/metrics").text
    assert 'hub_payment_callbacks_total{code="00",platform="dvc",verdict="applied"} 1.0' in metrics
    assert 'hub_payments{platform="dvc",status="paid"} 1.0' in metrics
    answers = platform.get("/_sandbox/payments").json()["answers"]
    assert [a["body"]["MaLoi"] for a in answers] == ["00"]


def test_a_platform_writing_amounts_as_text_is_credited(hub: Hub, platform: httpx.Client) -> None:
    """The platform's partners write every value as a string (SoTien "8000"); a CONFIRM so written verifies (the
    MAC is over the text) and is credited, and a QUERY so answered reads the amount — not "malformed" for ever."""
    platform.post("/_sandbox/faults", json={"amounts_as_text": True})
    code = awaiting_payment(hub)
    payment = create(hub, code)
    assert "Thanh toán thành công" in httpx.post(payment["pay_url"]).text
    wait_for(lambda: payment_of(hub, payment["reference"])["status"] == "paid")
    assert payment_of(hub, payment["reference"])["amount"] == 8000
    assert verdicts(hub) == [("applied", "00")]
    assert dossier_status(hub, code) == 4
    # a wrong amount written as text is still a wrong amount
    code2 = awaiting_payment(hub, 2)
    other = create(hub, code2)
    platform.post("/_sandbox/faults", json={"amount_delta": -1000})
    httpx.post(other["pay_url"])
    wait_for(lambda: len(verdicts(hub)) == 2)
    assert verdicts(hub)[-1][0] != "applied" and payment_of(hub, other["reference"])["status"] != "paid"


def test_fifty_concurrent_duplicate_callbacks_credit_once(hub: Hub, platform: httpx.Client) -> None:
    code = awaiting_payment(hub)
    payment = create(hub, code)
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    httpx.post(payment["pay_url"])
    r = platform.post(f"/_sandbox/callback/{payment['reference']}", json={"copies": 50, "concurrent": True})
    answers = r.json()["answers"]
    assert len(answers) == 50 and {a["body"]["MaLoi"] for a in answers} == {"00"}
    assert sorted(v for v, _ in verdicts(hub)) == ["applied"] + ["duplicate"] * 49
    with hub.runtime.sessions() as s:
        progress = s.scalar(select(func.count()).select_from(StatusEvent).where(StatusEvent.kind == "dossier.progress"))
        paid = s.scalars(select(Payment).where(Payment.status == "paid")).all()
    assert progress == 3 and len(paid) == 1  # 4, 6 by the province; 4 by the payment — once
    assert dossier_status(hub, code) == 4


@pytest.mark.parametrize(
    ("order", "code"),
    [
        ({"kind": "forged"}, "97"),
        ({"amount_delta": -1000}, "04"),
        ({"kind": "old"}, "07"),
        ({"kind": "future"}, "07"),
    ],
)
def test_untrustworthy_callbacks_change_nothing(
    hub: Hub, platform: httpx.Client, order: dict[str, Any], code: str
) -> None:
    dossier_code = awaiting_payment(hub)
    payment = create(hub, dossier_code)
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    httpx.post(payment["pay_url"])
    [answer] = platform.post(f"/_sandbox/callback/{payment['reference']}", json=order).json()["answers"]
    assert answer["body"]["MaLoi"] == code
    assert payment_of(hub, payment["reference"])["status"] == "pending"
    assert dossier_status(hub, dossier_code) == 6
    assert verdicts(hub) == [("rejected", code)]


def _signed_confirm(**fields: Any) -> dict[str, Any]:
    msg = {
        "LoaiBanTin": "CONFIRM",
        "MaLoi": "00",
        "MaDoiTac": PARTNER,
        "MaThamChieu": "HUB000000UNKNOWN",
        "SoTien": 8000,
        "MaTienTe": "VND",
        "MaGiaoDich": "GDTEST0001",
        "MaNganHang": "NCB",
        "ThoiGianGD": (datetime.now(UTC) + timedelta(hours=7)).strftime("%Y%m%d%H%M%S"),
        "ThongTinGiaoDich": "test",
        **fields,
    }
    msg["MaXacThuc"] = mac(msg, CONFIRM_FIELDS, SECRET)
    return msg


def test_unknown_reference_other_transaction_and_garbage(hub: Hub, platform: httpx.Client) -> None:
    url = "/v1/payments/callbacks/dvc"
    unknown = hub.http.post(url, json=_signed_confirm())
    assert unknown.json()["MaLoi"] == "01"
    as_documented(hub.http.get("/openapi.json").json(), "post", "/v1/payments/callbacks/{platform}", unknown)
    code = awaiting_payment(hub)
    payment = create(hub, code)
    httpx.post(payment["pay_url"])
    wait_for(lambda: payment_of(hub, payment["reference"])["status"] == "paid")
    other = _signed_confirm(MaThamChieu=payment["reference"], MaGiaoDich="GDSOMETHINGELSE")
    assert hub.http.post(url, json=other).json()["MaLoi"] == "02"  # already paid by another transaction
    assert payment_of(hub, payment["reference"])["transaction_id"] != "GDSOMETHINGELSE"
    too_deep = b'{"MaThamChieu": ' + b"[" * 3000 + b"]" * 3000 + b"}"  # 6 kB: past the JSON parser's recursion
    # a code with non-ASCII characters (hmac.compare_digest refused the str: a 500) or a lone surrogate in a field
    odd_code = json.dumps({**_signed_confirm(), "MaXacThuc": "é" * 64}).encode()
    surrogate = json.dumps({**_signed_confirm(), "ThongTinGiaoDich": "\ud800"}).encode()
    for garbage in (b"{not json", b"[]", json.dumps({"MaXacThuc": "0" * 64}).encode(), b"x" * 20000, too_deep,
                    odd_code, surrogate):  # fmt: skip
        r = hub.http.post(url, content=garbage, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["MaLoi"] in ("97", "99")
    # signed, but with a transaction time that is no time: the platform's own "99" answer, not hub's problem+json
    odd = hub.http.post(url, json=_signed_confirm(MaThamChieu=payment["reference"], ThoiGianGD="20261399250000"))
    assert odd.status_code == 200 and odd.json()["MaLoi"] == "99", odd.text
    assert hub.http.post("/v1/payments/callbacks/nope", json={}).status_code == 404


def test_lost_callback_is_settled_by_querying(hub: Hub, platform: httpx.Client) -> None:
    code = awaiting_payment(hub)
    payment = create(hub, code)
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    assert hub.runtime.check_payments() == {"still_pending": 1}  # not paid yet: nothing to settle
    httpx.post(payment["pay_url"])
    time.sleep(0.2)
    assert payment_of(hub, payment["reference"])["status"] == "pending"  # no callback ever came
    with hub.runtime.sessions.begin() as s:  # checked a minute ago: due again
        p = s.scalars(select(Payment)).one()
        p.last_checked_at = p.last_checked_at - timedelta(minutes=2) if p.last_checked_at else None
    assert hub.runtime.check_payments() == {"applied": 1}
    settled = payment_of(hub, payment["reference"])
    assert settled["status"] == "paid" and settled["settled_by"] == "query"
    assert dossier_status(hub, code) == 4
    # what HubPaymentCallbacksLost watches: payments found paid only by asking, beside those a callback settled
    metrics = hub.http.get("/metrics").text
    assert 'hub_payments_paid{platform="dvc",settled_by="query"} 1.0' in metrics
    assert 'settled_by="callback"' not in metrics
    # the late callback that finally arrives is a harmless duplicate
    [late] = platform.post(f"/_sandbox/callback/{payment['reference']}", json={}).json()["answers"]
    assert late["body"]["MaLoi"] == "00" and verdicts(hub)[-1] == ("duplicate", "00")


def test_an_operator_asks_about_one_payment_now(hub: Hub, platform: httpx.Client, tmp_path: Path) -> None:
    """A citizen says they paid; the callback never came and the scheduled check asked a moment ago (it waits a
    minute before asking again). `hub payments check REF` asks about that payment now and settles it — and only
    it: another pending payment is left to the schedule."""
    code, other = awaiting_payment(hub, 1), awaiting_payment(hub, 2)
    payment, untouched = create(hub, code), create(hub, other)
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    assert hub.runtime.check_payments() == {"still_pending": 2}
    httpx.post(payment["pay_url"])
    httpx.post(untouched["pay_url"])
    assert hub.runtime.check_payments() == {}  # both asked a moment ago: the schedule waits
    env = cli_env(hub, tmp_path)
    run = subprocess.run(
        [HUB_BIN, "payments", "check", payment["reference"], "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"applied": 1}
    settled = payment_of(hub, payment["reference"])
    assert settled["status"] == "paid" and settled["settled_by"] == "query"
    assert dossier_status(hub, code) == 4
    assert payment_of(hub, untouched["reference"])["status"] == "pending" and dossier_status(hub, other) == 6
    # asking again about a payment that is already paid asks nothing
    again = hub.runtime.payments.check_pending(correlation_id="t", references=[payment["reference"], "HUBNOSUCH"])
    assert again == {}
    with hub.runtime.sessions.begin() as s:  # made at a platform hub is no longer configured for: said so
        s.scalars(select(Payment).where(Payment.reference == untouched["reference"])).one().platform = "gone"
    gone = hub.runtime.payments.check_pending(correlation_id="t", references=[untouched["reference"]])
    assert gone == {"platform_not_configured": 1}


def test_an_operator_gives_up_a_pay_link_so_that_a_new_payment_can_be_made(
    hub: Hub, platform: httpx.Client, tmp_path: Path
) -> None:
    """The fee on a pay link was wrong: until the link expires (72 h) the one-stop system cannot make the dossier's
    payment for the corrected fee (409 payment_exists). `hub payments give-up REF --reason …` gives the link up
    now — after asking the platform: a link the citizen paid meanwhile is credited instead, and one the platform
    cannot be asked about is left as it is. Given up, the link is expired as an abandoned one is (the dossier's
    history says so) and the operator's action is kept with the reason; the new payment is then made."""
    env = cli_env(hub, tmp_path)

    def give_up(reference: str, *more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HUB_BIN, "payments", "give-up", reference, *more],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    d = dossier(19, MaTTHC="2.000635", TenTTHC="Cấp bản sao trích lục khai sinh", DanhSachLePhi=FEES)
    code = d["MaHoSo"]
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    for status in (4, 6):
        assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status)).status_code == 202
    wrong = create(hub, code)
    corrected_fee = {**d, "TrangThaiHoSo": 6, "DanhSachLePhi": [{**FEES[0], "Gia": 5000}]}  # the agency's correction
    r = hub.http.post("/v1/dossiers", params={"isUpdating": "true"}, json=corrected_fee)
    assert r.status_code == 202, r.text
    assert_problem(hub.http.post("/v1/payments", json={"MaHoSo": code}), 409, "payment_exists")
    assert give_up(wrong["reference"]).returncode == 2  # no reason: refused, nothing changed
    with outage(platform):
        down = give_up(wrong["reference"], "--reason", "sai lệ phí")
    assert down.returncode == 1 and "payment_platform_unavailable" in down.stderr, down.stderr
    assert payment_of(hub, wrong["reference"])["status"] == "pending"  # the citizen may have paid: left as it is
    done = give_up(wrong["reference"], "--reason", "sai lệ phí, đã sửa thành 5.000 đồng", "--by", "ke.toan", "--json")
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said == {"reference": wrong["reference"], "given_up": True, "platform_said": "still_pending"}
    assert payment_of(hub, wrong["reference"])["status"] == "expired"
    kinds = [e["kind"] for e in hub.http.get(f"/v1/dossiers/{code}").json()["events"]]
    assert kinds[-1] == "payment.expired"
    from hub.services import actions

    with hub.runtime.sessions() as s:
        [kept] = [a for a in actions.recent(s) if a["action"] == "payment_given_up"]
    assert kept["actor"] == "ke.toan" and kept["target"]["reason"].startswith("sai lệ phí")
    assert kept["outcome"] == {"given_up": True, "platform_said": "still_pending"}
    again = give_up(wrong["reference"], "--reason", "again")
    assert again.returncode == 1 and "payment_not_pending" in again.stderr
    corrected = create(hub, code)
    assert corrected["reference"] != wrong["reference"] and corrected["amount"] == 5000
    # a link the citizen paid (its confirmation lost): credited, not given up
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    httpx.post(corrected["pay_url"]).raise_for_status()
    paid = give_up(corrected["reference"], "--reason", "nhầm", "--json")
    assert paid.returncode == 1 and json.loads(paid.stdout)["platform_said"] == "applied"
    assert payment_of(hub, corrected["reference"])["status"] == "paid" and dossier_status(hub, code) == 4


def test_an_operator_gives_a_pay_link_up_from_the_console(hub: Hub, platform: httpx.Client) -> None:
    """The same from the dossier's page in the console: a reason, a confirmation that says the platform is asked
    first, then the link is given up and the page says so. A viewer has no such button and is refused."""
    code = awaiting_payment(hub, 20)
    pay = create(hub, code)
    viewer = console_as(hub, "xem.thoi", "viewer")
    page = viewer.get(f"/ops/dossiers/{code}").text
    assert 'class="give-up"' not in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    form = {"csrf": token.group(1), "reference": pay["reference"], "dossier": code, "reason": "sai lệ phí"}
    assert viewer.post("/ops/payments/give-up", data=form).status_code == 403
    operator = console_as(hub, "ke.toan.3", "operator")
    page = operator.get(f"/ops/dossiers/{code}").text
    assert 'class="give-up"' in page and "Hủy link thanh toán" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    form["csrf"] = token.group(1)
    blank = operator.post("/ops/payments/give-up", data={**form, "reason": "  "}, follow_redirects=True)
    assert "Cần ghi lý do" in blank.text and payment_of(hub, pay["reference"])["status"] == "pending"
    asked = operator.post("/ops/payments/give-up", data=form)
    assert asked.status_code == 200 and f"Hủy link thanh toán {pay['reference']}?" in asked.text
    assert "hub hỏi nền tảng thanh toán trước" in asked.text
    assert payment_of(hub, pay["reference"])["status"] == "pending"  # asked to confirm: nothing done yet
    done = operator.post("/ops/payments/give-up", data={**form, "confirmed": "yes"}, follow_redirects=True)
    assert str(done.url).endswith(f"/ops/dossiers/{code}") and "Đã hủy link thanh toán" in done.text
    assert payment_of(hub, pay["reference"])["status"] == "expired"
    again = operator.post("/ops/payments/give-up", data={**form, "confirmed": "yes"}, follow_redirects=True)
    assert "Không hủy link thanh toán: khoản thanh toán không còn chờ" in again.text


def test_abandoned_pay_links_neither_crowd_out_newer_payments_nor_wait_for_ever(
    hub: Hub, platform: httpx.Client
) -> None:
    """Citizens open pay links and never pay. The scheduled check asks those asked longest ago first — one made
    later is asked on the next run even when the run is full (here, 2 a run) — asks an old one only every 15
    minutes, and gives a payment up as expired once it is unpaid past HUB_PAYMENT_EXPIRE_AFTER_HOURS: the
    dossier can have a new one, and a confirmation of the old one arriving late is still credited."""
    codes = [awaiting_payment(hub, n) for n in (1, 2, 3)]
    first, second, late = (create(hub, code) for code in codes)
    payments = hub.runtime.payments

    def back(reference: str, **ago: timedelta) -> None:  # make a payment (or its last question) older
        with hub.runtime.sessions.begin() as s:
            p = s.scalars(select(Payment).where(Payment.reference == reference)).one()
            for field, by in ago.items():
                setattr(p, field, getattr(p, field) - by)

    def asked() -> dict[str, datetime | None]:
        with hub.runtime.sessions() as s:
            return {p.reference: p.last_checked_at for p in s.scalars(select(Payment))}

    for p in (first, second, late):
        back(p["reference"], created_at=timedelta(hours=2))
    back(late["reference"], created_at=-timedelta(minutes=1))  # made a minute after the others
    assert payments.check_pending(correlation_id="t", limit=2) == {"still_pending": 2}
    assert asked()[late["reference"]] is None  # the run was full
    for p in (first, second):
        back(p["reference"], last_checked_at=timedelta(minutes=16))  # due again
    assert payments.check_pending(correlation_id="t", limit=2) == {"still_pending": 2}
    assert asked()[late["reference"]] is not None  # never asked: first in line, before the older ones asked before
    assert payments.check_pending(correlation_id="t", limit=2) == {"still_pending": 1}  # the one left over
    assert payments.check_pending(correlation_id="t") == {}  # asked under 15 minutes ago, all of them
    # three days on, still unpaid: given up
    back(first["reference"], created_at=timedelta(hours=72), last_checked_at=timedelta(minutes=16))
    assert payments.check_pending(correlation_id="t") == {"expired": 1}
    assert payment_of(hub, first["reference"])["status"] == "expired" and dossier_status(hub, codes[0]) == 6
    again = create(hub, codes[0])  # the dossier can have a new payment
    assert again["reference"] != first["reference"] and again["status"] == "pending"
    # the citizen had paid the old link after all: its confirmation is credited, the dossier moves on
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    httpx.post(first["pay_url"])
    [answer] = platform.post(f"/_sandbox/callback/{first['reference']}", json={}).json()["answers"]
    assert answer["body"]["MaLoi"] == "00"
    assert payment_of(hub, first["reference"])["status"] == "paid" and dossier_status(hub, codes[0]) == 4


def test_a_paid_payment_hub_gave_up_on_is_recovered_by_the_operator_or_the_statement(
    hub: Hub, platform: httpx.Client, tmp_path: Path
) -> None:
    """Two pay links given up as expired, then paid after all — and neither confirmation reaches hub. The scheduled
    check no longer asks about them; an operator's question credits one, the day's reconciliation the other (asked
    about at the platform on the statement's word, credited on its answer, reported as `recovered`): both dossiers
    move on, and nothing is credited twice."""
    codes = [awaiting_payment(hub, n) for n in (31, 32)]
    payments = [create(hub, code) for code in codes]
    with hub.runtime.sessions.begin() as s:
        for p in s.scalars(select(Payment)):
            p.created_at -= timedelta(hours=73)
    assert hub.runtime.payments.check_pending(correlation_id="t") == {"expired": 2}
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    for p in payments:
        httpx.post(p["pay_url"]).raise_for_status()
    assert hub.runtime.payments.check_pending(correlation_id="t") == {}  # given up: not asked on schedule
    by_operator, by_statement = (p["reference"] for p in payments)
    env = cli_env(hub, tmp_path)
    run = subprocess.run(
        [HUB_BIN, "payments", "check", by_operator, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and json.loads(run.stdout) == {"applied": 1}, run.stderr
    assert payment_of(hub, by_operator)["status"] == "paid" and dossier_status(hub, codes[0]) == 4
    today = (datetime.now(UTC) + timedelta(hours=7)).date()
    run = subprocess.run(
        [HUB_BIN, "payments", "reconcile", "--date", today.isoformat(), "--format", "json", "--no-repair"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # drift: a paid line hub does not have as paid
    report = json.loads(run.stdout)
    assert report["summary"]["missing_at_hub"] == 1 and report["summary"]["matched"] == 1
    [missing] = [r for r in report["rows"] if r["result"] == "missing_at_hub"]
    assert missing["reference"] == by_statement and missing["note"] == f"hub has {by_statement} as expired"
    assert payment_of(hub, by_statement)["status"] == "expired"  # a report credits nothing
    counts = hub.runtime.reconcile_payments(today)
    assert counts["dvc.recovered"] == 1 and counts["dvc.matched"] == 1 and counts["dvc.missing_at_hub"] == 0
    settled = payment_of(hub, by_statement)
    assert settled["status"] == "paid" and settled["settled_by"] == "query" and dossier_status(hub, codes[1]) == 4
    metrics = hub.http.get("/metrics").text
    assert 'hub_payment_reconciliation_drift{platform="dvc",result="recovered"} 1.0' in metrics
    again = hub.runtime.payments.reconcile("dvc", today, correlation_id="t")
    assert again["summary"]["matched"] == 2 and again["summary"]["recovered"] == 0
    with hub.runtime.sessions() as s:
        applied = s.scalars(select(PaymentCallback.reference).where(PaymentCallback.verdict == "applied")).all()
    assert sorted(applied) == sorted([by_operator, by_statement])


def test_a_citizen_is_not_sent_to_pay_twice_and_paying_twice_is_flagged(hub: Hub, platform: httpx.Client) -> None:
    """A pay link given up as expired, paid after all with its confirmation lost: asking for a new payment asks the
    platform about the old one first and answers it, paid — no second link, the dossier moves on. When a citizen
    does pay two links of one dossier, both are booked and the console says a refund is owed."""

    def give_up(reference: str) -> None:
        with hub.runtime.sessions.begin() as s:
            p = s.scalars(select(Payment).where(Payment.reference == reference)).one()
            p.created_at -= timedelta(hours=73)
        assert hub.runtime.payments.check_pending(correlation_id="t", references=[reference]) == {"expired": 1}

    code = awaiting_payment(hub, 41)
    old = create(hub, code)
    give_up(old["reference"])
    platform.post("/_sandbox/faults", json={"drop_callback": True})
    httpx.post(old["pay_url"]).raise_for_status()
    again = hub.http.post("/v1/payments", json={"MaHoSo": code})
    assert again.status_code == 200, again.text  # the old one, paid: not a new link
    assert again.json()["reference"] == old["reference"] and again.json()["status"] == "paid"
    assert dossier_status(hub, code) == 4
    platform.post("/_sandbox/faults", json={"drop_callback": False})
    # an old link still unpaid when the new one is made, then both paid
    told = _Kept()
    logging.getLogger("hub.payments").addHandler(told)
    code = awaiting_payment(hub, 42)
    first = create(hub, code)
    give_up(first["reference"])
    second = create(hub, code)
    assert second["reference"] != first["reference"]
    for p in (second, first):
        httpx.post(p["pay_url"]).raise_for_status()
    # each confirmation comes on its own thread of the platform's: wait for both
    wait_for(lambda: all(payment_of(hub, p["reference"])["status"] == "paid" for p in (first, second)))
    assert dossier_status(hub, code) == 4
    console = console_as(hub, "ke.toan", "viewer")
    page = console.get(f"/ops/dossiers/{code}").text
    assert 'id="paid-twice"' in page and "cần hoàn trả" in page
    assert 'id="paid-twice"' not in console.get(f"/ops/dossiers/{awaiting_payment(hub, 43)}").text
    logging.getLogger("hub.payments").removeHandler(told)
    [said] = [r for r in told.records if r.getMessage() == "dossier paid twice: a refund is owed"]
    paid = {first["reference"], second["reference"]}  # the later credited says which one came before
    assert said.dossier == code and {said.reference, *said.also_paid} == paid  # type: ignore[attr-defined]


def test_a_payment_for_a_dossier_no_longer_waiting_for_one_is_noted_for_a_refund(
    hub: Hub, platform: httpx.Client
) -> None:
    """The citizen withdraws the dossier (7) while its pay page is open, then pays: the platform took the money,
    hub books it and the dossier stays withdrawn — and its history says a payment came it did not wait for, so
    the agency sees that a refund may be owed (the console's timeline, the one-stop system's view of the dossier).
    The citizen's own view shows the payment, not the agency's note."""
    code = awaiting_payment(hub, 44)
    pay = create(hub, code)
    assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 7, "Công dân rút hồ sơ")).status_code == 202
    told = _Kept()
    logging.getLogger("hub.payments").addHandler(told)
    try:
        httpx.post(pay["pay_url"]).raise_for_status()
        wait_for(lambda: payment_of(hub, pay["reference"])["status"] == "paid")
    finally:
        logging.getLogger("hub.payments").removeHandler(told)
    view = hub.http.get(f"/v1/dossiers/{code}").json()
    assert view["TrangThaiHoSo"] == 7
    last = view["events"][-1]
    assert (last["kind"], last["TrangThaiHoSo"], last["deliveries"]) == ("payment.not_awaited", 7, [])
    [said] = [r for r in told.records if "not waiting" in r.getMessage()]
    assert said.reference == pay["reference"] and said.status == 7  # type: ignore[attr-defined]
    page = console_as(hub, "ke.toan.2", "viewer").get(f"/ops/dossiers/{code}").text
    assert "Nhận thanh toán khi hồ sơ không chờ nộp phí: xem xét hoàn trả" in page
    from hub.services.citizens import _history
    from hub.store.models import Dossier, StatusEvent

    with hub.runtime.sessions() as s:
        steps = _history(
            s.scalars(select(StatusEvent).join(Dossier).where(Dossier.code == code).order_by(StatusEvent.seq)).all()
        )
    assert steps and all(step_["kind"] != "payment_not_awaited" for step_ in steps)  # the citizen's view
    # a dossier that waited for it moves on, with no such note
    waiting = awaiting_payment(hub, 45)
    httpx.post(create(hub, waiting)["pay_url"]).raise_for_status()
    wait_for(lambda: dossier_status(hub, waiting) == 4)
    kinds = [e["kind"] for e in hub.http.get(f"/v1/dossiers/{waiting}").json()["events"]]
    assert "payment.not_awaited" not in kinds


class _Kept(logging.Handler):
    """The records a logger wrote (the tests' own; hub's log configuration may keep them from the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_declined_payment_leaves_the_dossier_waiting_and_allows_a_new_one(hub: Hub, platform: httpx.Client) -> None:
    code = awaiting_payment(hub)
    payment = create(hub, code)
    platform.post("/_sandbox/faults", json={"fail_payment": True})
    httpx.post(payment["pay_url"])
    wait_for(lambda: payment_of(hub, payment["reference"])["status"] == "failed")
    assert dossier_status(hub, code) == 6
    platform.post("/_sandbox/faults", json={"fail_payment": False})
    second = create(hub, code)
    assert second["reference"] != payment["reference"]


def test_bad_requests_are_clear_problems(hub: Hub, creds: Creds, hub_factory: HubFactory) -> None:
    d = dossier(7, DanhSachLePhi=FEES)
    hub.http.post("/v1/dossiers", json=d)
    r = hub.http.post("/v1/payments", json={"MaHoSo": d["MaHoSo"]})
    assert r.status_code == 409 and r.json()["code"] == "payment_not_requested"
    r = hub.http.post("/v1/payments", json={"MaHoSo": "000.00.17.H56-241015-9999"})
    assert r.status_code == 404 and r.json()["code"] == "dossier_not_found"
    code = awaiting_payment(hub, 8)
    wrong = [{"TenPhiLePhi": "Lệ phí cấp bản sao trích lục", "SoTien": 9000}]
    r = hub.http.post("/v1/payments", json={"MaHoSo": code, "fees": wrong})
    assert r.status_code == 422 and r.json()["code"] == "fees_mismatch"
    r = hub.http.post("/v1/payments", json={"MaHoSo": code, "fees": [{"TenPhiLePhi": "x", "SoTien": 8000.5}]})
    assert r.status_code == 422  # money is whole đồng, never a float
    other = {"X-API-Key": creds.other_key}
    r = hub.http.post("/v1/payments", json={"MaHoSo": code}, headers=other)
    assert r.status_code == 403 and r.json()["code"] == "agency_not_allowed"
    assert hub.http.get("/v1/payments/HUBNOPE").json()["code"] == "payment_not_found"
    free = awaiting_payment(hub, 9, fees=[{"TenPhiLePhi": "Miễn lệ phí", "Gia": 0}])
    assert hub.http.post("/v1/payments", json={"MaHoSo": free}).json()["code"] == "nothing_to_pay"


def test_amounts_are_checked_against_the_catalogue(hub: Hub) -> None:
    hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t")
    code = awaiting_payment(hub, 11, fees=[{"TenPhiLePhi": "Lệ phí cấp bản sao trích lục", "Gia": 12000}])
    r = hub.http.post("/v1/payments", json={"MaHoSo": code})
    assert r.status_code == 422 and r.json()["code"] == "fee_not_in_catalogue"
    assert create(hub, awaiting_payment(hub, 12))["amount"] == 8000  # 8,000 đ is the catalogue's fee


def test_the_same_payment_asked_for_at_once_is_created_once(hub: Hub, platform: httpx.Client) -> None:
    """A double click, or a one-stop system retrying after its own timeout: ten requests for one dossier's payment
    at once while the platform takes 0.4 s to answer INIT. One asks the platform (201); the nine others wait for
    its answer and give the same payment (200) — one INIT at the platform, one pay link."""
    code = awaiting_payment(hub, 16)
    platform.post("/_sandbox/faults", json={"latency_ms": 400})
    try:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: hub.http.post("/v1/payments", json={"MaHoSo": code}), range(10)))
    finally:
        platform.post("/_sandbox/faults", json={"latency_ms": 0})
    assert sorted(r.status_code for r in answers) == [200] * 9 + [201], [r.text for r in answers]
    assert len({(r.json()["reference"], r.json()["pay_url"]) for r in answers}) == 1
    [made] = platform.get("/_sandbox/payments").json()["items"]
    assert made["inits"] == 1


def test_a_request_that_died_creating_a_payment_is_taken_over(
    hub: Hub, platform: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hub stopped (or its thread died) between writing the payment and hearing the platform's INIT answer: the
    payment is left claimed, with no pay link. Another request for it waits while the claim holds — a 503 with a
    Retry-After when it holds too long — and, once it lapses, asks the platform itself with the same reference. A
    failed INIT claims nothing: the client's retry asks again at once."""
    from hub.services import payments

    code = awaiting_payment(hub, 17)
    with outage(platform):
        assert_problem(hub.http.post("/v1/payments", json={"MaHoSo": code}), 503, "payment_platform_unavailable")

    def claim(seconds: float) -> str:
        with hub.runtime.sessions.begin() as s:
            p = s.scalars(select(Payment).where(Payment.dossier_code == code)).one()
            assert p.pay_url is None
            p.init_until = datetime.now(UTC) + timedelta(seconds=seconds)
            return p.reference

    with hub.runtime.sessions() as s:  # the failed INIT left no claim
        assert s.scalars(select(Payment.init_until).where(Payment.dossier_code == code)).one() is None
    monkeypatch.setattr(payments, "INIT_WAIT", 0.5)
    claim(20)
    held = assert_problem(hub.http.post("/v1/payments", json={"MaHoSo": code}), 503, "payment_platform_unavailable")
    assert "another request" in held["detail"] and 1 <= int(held["retry_after"]) <= 20
    assert platform.get("/_sandbox/payments").json()["items"] == []  # it did not ask the platform meanwhile
    monkeypatch.setattr(payments, "INIT_WAIT", 15.0)
    reference = claim(1)
    started = time.monotonic()
    made = create(hub, code)  # waits out the claim, then asks
    assert time.monotonic() - started >= 0.5
    assert made["reference"] == reference and made["pay_url"]
    [at_platform] = platform.get("/_sandbox/payments").json()["items"]
    assert at_platform["reference"] == reference and at_platform["inits"] == 1


def test_a_payment_whose_pay_link_never_came_is_given_up_like_an_abandoned_one(
    hub: Hub, platform: httpx.Client
) -> None:
    """The platform down when a payment is made: hub keeps the payment, with no pay link, for the client's retry.
    If no retry comes (the one-stop system gave up, the dossier was withdrawn), the scheduled check asks the
    platform about it like any pending payment and gives it up as expired in time — it does not stay pending for
    ever, on the console's count and in the metric. A payment whose INIT is in flight is not asked about."""
    code = awaiting_payment(hub, 18)
    with outage(platform):
        assert_problem(hub.http.post("/v1/payments", json={"MaHoSo": code}), 503, "payment_platform_unavailable")
    with hub.runtime.sessions.begin() as s:
        p = s.scalars(select(Payment).where(Payment.dossier_code == code)).one()
        assert (p.status, p.pay_url) == ("pending", None)
        p.created_at -= timedelta(hours=73)
        p.init_until = datetime.now(UTC) + timedelta(seconds=20)  # a request on it now
        reference = p.reference
    assert hub.runtime.payments.check_pending(correlation_id="t") == {}
    with hub.runtime.sessions.begin() as s:
        s.scalars(select(Payment).where(Payment.reference == reference)).one().init_until = None
    assert hub.runtime.payments.check_pending(correlation_id="t") == {"expired": 1}
    assert payment_of(hub, reference)["status"] == "expired"
    # an operator can ask the platform about it from the console, as about any payment (it has no pay link)
    operator = console_as(hub, "ke.toan.4", "operator")
    page = operator.get(f"/ops/dossiers/{code}").text
    assert f'name="reference" value="{reference}"><input type="hidden" name="dossier"' in page
    assert 'class="ask-platform"' in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    asked = operator.post(
        "/ops/payments/check", data={"csrf": token.group(1), "reference": reference, "dossier": code},
        follow_redirects=True,
    )  # fmt: skip
    assert "Nền tảng vẫn chưa ghi nhận thanh toán" in asked.text
    made = create(hub, code)  # the one-stop system asks again, later: a new payment, with its pay link
    assert made["reference"] != reference and made["pay_url"]


def test_hub_killed_while_creating_a_payment_makes_it_at_once_when_restarted(
    tmp_path: Path, creds: Creds, portal_server: ServerThread, pay_server: ServerThread, platform: httpx.Client
) -> None:
    """Embedded mode: `hub serve` is killed (-9) while the platform is slow to answer a payment's INIT — the payment
    written and claimed, no pay link. Started again, no other process can be creating it: the claim is cleared,
    and the one-stop system's retry makes the payment at once, with the same reference — not a wait for the dead
    request's claim to lapse, then a 503."""
    import sqlite3
    import threading

    from tests.test_relay import Served

    served = Served(
        tmp_path, creds, portal_server.url,
        HUB_PAYMENT_DVC_URL=pay_server.url, HUB_PAYMENT_DVC_PARTNER=PARTNER, HUB_PAYMENT_DVC_SECRET=SECRET,
    )  # fmt: skip

    def claimed() -> list[tuple[str, str | None]]:
        with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as conn:
            return list(conn.execute("SELECT reference, init_until FROM payments"))

    served.start()
    try:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=30) as client:
            d = dossier(21, MaTTHC="2.000635", TenTTHC="Cấp bản sao trích lục khai sinh", DanhSachLePhi=FEES)
            code = d["MaHoSo"]
            assert client.post("/v1/dossiers", json=d).status_code == 202
            for status in (4, 6):
                assert client.post(f"/v1/dossiers/{code}/progress", json=step(code, status)).status_code == 202
            platform.post("/_sandbox/faults", json={"latency_ms": 5000}).raise_for_status()

            def ask() -> None:  # its answer never comes: hub is killed first
                with (
                    contextlib.suppress(httpx.TransportError),
                    httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=30) as own,
                ):
                    own.post("/v1/payments", json={"MaHoSo": code})

            threading.Thread(target=ask, daemon=True).start()
            wait_for(lambda: bool(claimed()) and claimed()[0][1] is not None)
        [(reference, _)] = claimed()
        served.kill9()
        platform.post("/_sandbox/faults", json={"latency_ms": 0}).raise_for_status()
        served.start()
        assert claimed() == [(reference, None)]  # cleared at start-up
        with httpx.Client(base_url=served.url, headers={"X-API-Key": creds.api_key}, timeout=30) as client:
            started = time.monotonic()
            again = client.post("/v1/payments", json={"MaHoSo": code})
            assert again.status_code == 201, again.text
            assert time.monotonic() - started < 5
            assert again.json()["reference"] == reference and again.json()["pay_url"]
    finally:
        served.stop()


def test_a_platform_that_asks_to_wait_is_passed_on_to_the_client(hub: Hub, platform: httpx.Client) -> None:
    """The platform throttles hub (429, Retry-After: 3): the one-stop system asking for a pay link gets 503 with the
    same wait in Retry-After; another request meanwhile gets 503 at once with what is left of it, and the platform
    is not called again before its wait is over; after it, the same request makes the payment."""
    code, other = awaiting_payment(hub, 13), awaiting_payment(hub, 14)
    platform.post("/_sandbox/faults", json={"rate_limit_seconds": 3})
    try:
        r = hub.http.post("/v1/payments", json={"MaHoSo": code})
        assert r.status_code == 503 and r.json()["code"] == "payment_platform_unavailable"
        assert 2 <= int(r.headers["Retry-After"]) <= 3 and r.json()["retry_after"] == int(r.headers["Retry-After"])
        r = hub.http.post("/v1/payments", json={"MaHoSo": other})
        assert r.status_code == 503 and 1 <= int(r.headers["Retry-After"]) <= 3
        assert platform.get("/_sandbox/faults").json()["rate_limited"] == 1  # one call told to wait, none after
    finally:
        platform.post("/_sandbox/faults", json={"rate_limit_seconds": 0})
    time.sleep(3.1)
    assert create(hub, code)["status"] == "pending"


@pytest.mark.parametrize("url", ["javascript:alert(document.cookie)", "data:text/html,<script>x</script>", "//x"])
def test_a_pay_link_that_is_not_a_web_page_never_reaches_the_citizen(
    hub: Hub, platform: httpx.Client, url: str
) -> None:
    """The platform answers INIT — correctly signed — with a link that is not a web address: the one-stop system
    would put it in front of the citizen (a script run on its page). hub refuses it like a failed INIT (503, the
    same request again later) and keeps no pay link; once the platform answers a web address, the same request
    makes the payment."""
    code = awaiting_payment(hub, 15)
    platform.post("/_sandbox/faults", json={"pay_url": url})
    try:
        r = hub.http.post("/v1/payments", json={"MaHoSo": code})
        assert r.status_code == 503 and r.json()["peer_error"] == "payment_pay_url_invalid", r.text
        assert url not in r.text
    finally:
        platform.post("/_sandbox/faults", json={"pay_url": ""})
    made = create(hub, code)
    assert made["pay_url"].startswith("http://127.0.0.1:")


def test_a_platform_down_or_throttling_is_asked_once_a_check_not_once_a_payment(
    hub: Hub, platform: httpx.Client
) -> None:
    """The periodic check of pending payments, the platform throttling hub (429, Retry-After: 2): one call is told
    to wait and the check's other payments are left for the next run — before, each of up to 200 payments was
    asked (against a platform that times out, 10 s apiece); until the wait is over no run asks again; after it,
    all are asked."""
    refs = [create(hub, awaiting_payment(hub, 50 + i))["reference"] for i in range(3)]
    platform.post("/_sandbox/faults", json={"rate_limit_seconds": 2})
    try:
        check = hub.runtime.payments.check_pending
        assert check(correlation_id="t", references=refs) == {"errors": 1, "not_asked": 2}
        assert check(correlation_id="t", references=refs) == {"not_asked": 3}  # the wait it asked for runs
        assert platform.get("/_sandbox/faults").json()["rate_limited"] == 1
        time.sleep(2.1)
        assert check(correlation_id="t", references=refs) == {"still_pending": 3}
    finally:
        platform.post("/_sandbox/faults", json={"rate_limit_seconds": 0})


def test_a_partner_secret_the_platform_does_not_hold_is_told_apart(
    hub_factory: HubFactory, pay_server: ServerThread, platform: httpx.Client
) -> None:
    """A province whose HUB_PAYMENT_DVC_SECRET is not the one the platform holds: the platform refuses every
    message's MaXacThuc (MaLoi 97). The client is answered 503 with peer_error `peer_auth_failed` — the operators'
    to fix, as `/peer-errors/peer_auth_failed` says — not a refusal of the payment itself (`peer_http_4xx`), and the
    scheduled check asks once for all its payments, not once a payment."""
    h = hub_factory(
        payment_dvc_url=pay_server.url,
        payment_dvc_partner=PARTNER,
        payment_dvc_secret="not-the-platforms-secret-0123",
        payment_query_after_seconds=0,
        payment_check_interval=0,
    )
    for n in (71, 72):
        problem = assert_problem(h.http.post("/v1/payments", json={"MaHoSo": awaiting_payment(h, n)}), 503,
                                 "payment_platform_unavailable")  # fmt: skip
        assert problem["peer_error"] == "peer_auth_failed", problem
    assert h.http.get("/peer-errors/peer_auth_failed").json()["retried"] is True
    with h.runtime.sessions() as s:
        refs = list(s.scalars(select(Payment.reference)))
    assert len(refs) == 2 and platform.get("/_sandbox/payments").json()["items"] == []
    assert h.runtime.payments.check_pending(correlation_id="t", references=refs) == {"errors": 1, "not_asked": 1}


def test_a_statement_line_breaking_the_contract_is_the_platforms_fault(hub: Hub, platform: httpx.Client) -> None:
    """A signed statement whose line carries an impossible time: reconciliation stops with the platform's error
    (503 payment_platform_unavailable, peer code peer_malformed_reply), not with an error of hub's own."""
    from hub.services.payments import PlatformUnavailable

    today = datetime.now(UTC) + timedelta(hours=7)
    bad = {"MaGiaoDich": "GDBADTIME", "MaThamChieu": "HUBBAD", "SoTien": 5000, "MaTienTe": "VND",
           "ThoiGianGD": today.strftime("%Y%m%d") + "996199"}  # fmt: skip
    platform.post("/_sandbox/statement", json={"extra": [bad]}).raise_for_status()
    with pytest.raises(PlatformUnavailable) as caught:
        hub.runtime.payments.reconcile("dvc", today.date(), correlation_id="t")
    assert caught.value.extra.get("peer_error") == "peer_malformed_reply"


def test_reconciliation_reports_each_kind_of_drift(hub: Hub, platform: httpx.Client, tmp_path: Path) -> None:
    refs = []
    for n in (21, 22, 23):
        payment = create(hub, awaiting_payment(hub, n))
        httpx.post(payment["pay_url"])
        refs.append(payment["reference"])
    wait_for(lambda: all(payment_of(hub, r)["status"] == "paid" for r in refs))
    txn = {r: payment_of(hub, r)["transaction_id"] for r in refs}
    today = datetime.now(UTC) + timedelta(hours=7)
    stamp = today.strftime("%Y%m%d%H%M%S")

    def line(transaction: str, reference: str, amount: int) -> dict[str, Any]:
        return {"MaGiaoDich": transaction, "MaThamChieu": reference, "SoTien": amount, "MaTienTe": "VND",
                "ThoiGianGD": stamp}  # fmt: skip

    drift = {
        "hide": [refs[1], refs[2]],
        "extra": [line("GDNOTATHUB", "HUBXXX", 5000), line(txn[refs[2]], refs[2], 7000)],
    }
    platform.post("/_sandbox/statement", json=drift)
    result = hub.runtime.payments.reconcile("dvc", today.date(), correlation_id="t")
    assert result["summary"] == {
        "matched": 1, "recovered": 0, "missing_at_hub": 1, "missing_at_platform": 1, "amount_mismatch": 1
    }  # fmt: skip
    by_kind = {r["result"]: r for r in result["rows"]}
    assert by_kind["matched"]["reference"] == refs[0]
    assert by_kind["missing_at_platform"]["reference"] == refs[1]
    assert by_kind["amount_mismatch"]["hub_amount"] == 8000 and by_kind["amount_mismatch"]["platform_amount"] == 7000
    assert by_kind["missing_at_hub"]["transaction_id"] == "GDNOTATHUB"
    # the same from the command line, as CSV for the finance office
    env = cli_env(hub, tmp_path)
    run = subprocess.run(
        [HUB_BIN, "payments", "reconcile", "--date", today.date().isoformat(), "--format", "csv"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # drift found
    lines = run.stdout.strip().splitlines()
    assert lines[0] == "result,reference,transaction_id,hub_amount,platform_amount,note" and len(lines) == 5
    # the daily job: its counts in the job's run (the console's sync-jobs page) and in the metrics
    counts = hub.runtime.reconcile_payments(today.date())
    assert counts == {
        "day": today.date().isoformat(), "dvc.matched": 1, "dvc.recovered": 0, "dvc.missing_at_hub": 1,
        "dvc.missing_at_platform": 1, "dvc.amount_mismatch": 1,
    }  # fmt: skip
    metrics = hub.http.get("/metrics").text
    assert 'hub_payment_reconciliation_drift{platform="dvc",result="amount_mismatch"} 1.0' in metrics
    assert 'result="matched"' not in metrics


def test_the_previous_days_statement_is_reconciled_once_a_day(hub: Hub, platform: httpx.Client) -> None:
    """Scheduled every hour: from HUB_PAYMENT_RECONCILE_HOUR (Vietnam time) on, the previous day is reconciled,
    once; a platform that does not give its statement fails the run, and the next run tries again."""
    from hub.store.models import JobRun

    def runs() -> list[tuple[str, dict[str, Any]]]:
        with hub.runtime.sessions() as s:
            q = select(JobRun).where(JobRun.name == "reconcile_payments").order_by(JobRun.id)
            return [(r.outcome, r.detail) for r in s.scalars(q)]

    yesterday = ((datetime.now(UTC) + timedelta(hours=7)).date() - timedelta(days=1)).isoformat()
    hub.runtime.settings = hub.runtime.settings.model_copy(update={"payment_reconcile_hour": 0})
    platform.post("/_sandbox/faults", json={"outage_seconds": 60})
    with pytest.raises(RuntimeError, match="dvc"):
        hub.runtime.reconcile_payments()
    platform.post("/_sandbox/faults", json={"outage_seconds": 0})
    assert hub.runtime.reconcile_payments() == {
        "day": yesterday, "dvc.matched": 0, "dvc.recovered": 0, "dvc.missing_at_hub": 0,
        "dvc.missing_at_platform": 0, "dvc.amount_mismatch": 0,
    }  # fmt: skip
    assert hub.runtime.reconcile_payments() == {}  # done for that day
    assert [(outcome, detail.get("day")) for outcome, detail in runs()] == [("error", None), ("ok", yesterday)]


def test_a_payment_reference_carries_the_day_in_vietnam() -> None:
    """MaThamChieu names the day as the province and the platform's statement count it: 01:00 on 5 December in
    Hà Nội is 18:00 UTC on the 4th."""
    from hub.services.payments import new_reference

    reference = new_reference(datetime(2026, 12, 4, 18, 0, tzinfo=UTC))
    assert reference.startswith("HUB261205") and len(reference) == 21
    assert new_reference(datetime(2026, 12, 4, 16, 59, tzinfo=UTC)).startswith("HUB261204")
