"""The VNPay-style gateway behind the same PaymentPlatform protocol: a locally signed pay URL (sorted parameters,
HMAC-SHA512, amount × 100), IPN as a signed GET answered with RspCode, 50 concurrent repeats → one credit (and
"02 already confirmed"), forged / amount-changed IPNs refused, a lost IPN settled by querydr, reconciliation."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from hub.sandbox import payment_vnpay
from hub.sandbox.common import ServerThread
from hub.store.models import PaymentCallback
from tests.api_helpers import as_documented
from tests.conftest import Hub, HubFactory
from tests.helpers import dossier, step

TMN = "HUBTEST1"
SECRET = secrets.token_hex(16)
FEES = [{"TenPhiLePhi": "Lệ phí chứng thực", "Gia": 2000}]


@pytest.fixture(scope="session")
def vnpay_server() -> Iterator[ServerThread]:
    server = ServerThread(payment_vnpay.create_app({})).start()
    yield server
    server.stop()


@pytest.fixture
def gateway(vnpay_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vnpay_server.url, timeout=30) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


@pytest.fixture
def hub(hub_factory: HubFactory, vnpay_server: ServerThread, gateway: httpx.Client) -> Hub:
    h = hub_factory(
        payment_vnpay_pay_url=f"{vnpay_server.url}/paymentv2/vpcpay.html",
        payment_vnpay_api_url=vnpay_server.url,
        payment_vnpay_merchant=TMN,
        payment_vnpay_secret=SECRET,
        payment_platforms={"000.00.17.*": "vnpay"},
        payment_query_after_seconds=0,
        payment_check_interval=0,
    )
    # the merchant registers its IPN URL in the gateway's portal
    gateway.post(
        "/_sandbox/merchants",
        json={"tmn": TMN, "secret": SECRET, "ipn_url": f"{h.server.url}/v1/payments/callbacks/vnpay"},
    )
    return h


def awaiting_payment(hub: Hub, n: int = 1) -> str:
    d = dossier(n, MaTTHC="2.000815", TenTTHC="Chứng thực bản sao từ bản chính", DanhSachLePhi=FEES)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    for status in (4, 6):
        assert hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], status)).status_code == 202
    return str(d["MaHoSo"])


def pay(hub: Hub, code: str) -> dict[str, Any]:
    r = hub.http.post("/v1/payments", json={"MaHoSo": code})
    assert r.status_code == 201, r.text
    payment: dict[str, Any] = r.json()
    return payment


def pay_at_gateway(gateway: httpx.Client, payment: dict[str, Any]) -> None:
    """What the citizen does: open the pay URL, then press the button."""
    assert httpx.get(payment["pay_url"]).status_code == 200
    assert httpx.post(f"{gateway.base_url}/paymentv2/pay/{payment['reference']}").status_code == 200


def status_of(hub: Hub, reference: str) -> str:
    status: str = hub.http.get(f"/v1/payments/{reference}").json()["status"]
    return status


def wait_for(cond: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_signed_pay_url_ipn_and_the_dossier_moves_on(hub: Hub, gateway: httpx.Client) -> None:
    code = awaiting_payment(hub)
    payment = pay(hub, code)
    assert payment["platform"] == "vnpay" and payment["amount"] == 2000
    query = parse_qs(urlsplit(payment["pay_url"]).query)
    assert query["vnp_Amount"] == ["200000"] and query["vnp_TmnCode"] == [TMN]  # amount × 100
    assert len(query["vnp_SecureHash"][0]) == 128  # HMAC-SHA512
    tampered = payment["pay_url"].replace("vnp_Amount=200000", "vnp_Amount=100")
    assert httpx.get(tampered).status_code == 400  # the gateway checks our signature
    page = httpx.get(payment["pay_url"])
    assert page.status_code == 200 and "2,000" in page.text
    reference = payment["reference"]
    httpx.post(f"{gateway.base_url}/paymentv2/pay/{reference}")
    wait_for(lambda: status_of(hub, reference) == "paid")
    assert hub.http.get(f"/v1/dossiers/{code}").json()["TrangThaiHoSo"] == 4
    answers = gateway.get("/_sandbox/transactions").json()["answers"]
    assert [a["body"]["RspCode"] for a in answers] == ["00"]
    receipt = hub.http.get(f"/v1/payments/{reference}/receipt")
    assert receipt.status_code == 409 and receipt.json()["code"] == "receipt_not_offered"


def test_fifty_concurrent_ipn_repeats_credit_once(hub: Hub, gateway: httpx.Client) -> None:
    payment = pay(hub, awaiting_payment(hub))
    gateway.post("/_sandbox/faults", json={"drop_callback": True})
    pay_at_gateway(gateway, payment)
    r = gateway.post(f"/_sandbox/ipn/{payment['reference']}", json={"copies": 50, "concurrent": True})
    assert r.status_code == 200, r.text
    codes = sorted(a["body"]["RspCode"] for a in r.json()["answers"])
    assert codes == ["00"] + ["02"] * 49  # the rest: "already confirmed", as VNPay expects
    with hub.runtime.sessions() as s:
        applied = s.scalars(select(PaymentCallback).where(PaymentCallback.verdict == "applied")).all()
    assert len(applied) == 1


@pytest.mark.parametrize(("order", "code"), [({"kind": "forged"}, "97"), ({"amount_delta": 1000}, "04")])
def test_forged_or_changed_ipn_changes_nothing(
    hub: Hub, gateway: httpx.Client, order: dict[str, Any], code: str
) -> None:
    dossier_code = awaiting_payment(hub)
    payment = pay(hub, dossier_code)
    gateway.post("/_sandbox/faults", json={"drop_callback": True})
    pay_at_gateway(gateway, payment)
    [answer] = gateway.post(f"/_sandbox/ipn/{payment['reference']}", json=order).json()["answers"]
    assert answer["body"]["RspCode"] == code
    assert status_of(hub, payment["reference"]) == "pending"
    assert hub.http.get(f"/v1/dossiers/{dossier_code}").json()["TrangThaiHoSo"] == 6


def test_lost_ipn_is_settled_by_querydr_and_reconciled(hub: Hub, gateway: httpx.Client) -> None:
    payment = pay(hub, awaiting_payment(hub))
    gateway.post("/_sandbox/faults", json={"drop_callback": True})
    pay_at_gateway(gateway, payment)
    assert hub.runtime.check_payments() == {"applied": 1}
    assert status_of(hub, payment["reference"]) == "paid"
    today = (datetime.now(UTC) + timedelta(hours=7)).date()
    result = hub.runtime.payments.reconcile("vnpay", today, correlation_id="t")
    assert result["summary"]["matched"] == 1 and result["hub_total"] == result["platform_total"] == 2000
    unknown = hub.http.get("/v1/payments/callbacks/vnpay", params={"vnp_TxnRef": "X", "vnp_SecureHash": "0" * 128})
    assert unknown.json()["RspCode"] == "97"
    accented = hub.http.get("/v1/payments/callbacks/vnpay", params={"vnp_TxnRef": "X", "vnp_SecureHash": "é" * 128})
    assert accented.status_code == 200 and accented.json()["RspCode"] == "97", accented.text
    as_documented(hub.http.get("/openapi.json").json(), "get", "/v1/payments/callbacks/{platform}", accented)
    # signed, but with a pay time that is no time: the gateway's own "99" answer, not hub's problem+json
    from hub.adapters.payment.vnpay import sign

    ipn = {"vnp_TmnCode": TMN, "vnp_TxnRef": payment["reference"], "vnp_Amount": "200000", "vnp_ResponseCode": "00",
           "vnp_TransactionStatus": "00", "vnp_TransactionNo": "1", "vnp_PayDate": "20261399250000"}  # fmt: skip
    odd = hub.http.get("/v1/payments/callbacks/vnpay", params={**ipn, "vnp_SecureHash": sign(ipn, SECRET)})
    assert odd.status_code == 200 and odd.json()["RspCode"] == "99", odd.text


def test_a_gateway_throttling_its_query_api_is_asked_once_until_its_wait_is_over(
    hub: Hub, gateway: httpx.Client
) -> None:
    """The gateway's query API throttles hub (429, Retry-After: 2): the check of pending payments asks once, leaves
    the others for later, and asks again only once the wait is over — then finds what was paid meanwhile."""
    payments = [pay(hub, awaiting_payment(hub, 60 + i)) for i in range(3)]
    gateway.post("/_sandbox/faults", json={"rate_limit_seconds": 2})
    try:
        refs = [p["reference"] for p in payments]
        check = hub.runtime.payments.check_pending
        assert check(correlation_id="t", references=refs) == {"errors": 1, "not_asked": 2}
        assert check(correlation_id="t", references=refs) == {"not_asked": 3}
        assert gateway.get("/_sandbox/faults").json()["rate_limited"] == 1
    finally:
        gateway.post("/_sandbox/faults", json={"rate_limit_seconds": 0})
    gateway.post("/_sandbox/faults", json={"drop_callback": True})  # paid, its IPN lost: only a query finds it
    try:
        pay_at_gateway(gateway, payments[0])
    finally:
        gateway.post("/_sandbox/faults", json={"drop_callback": False})
    time.sleep(2.1)
    assert check(correlation_id="t", references=refs) == {"applied": 1, "still_pending": 2}


def test_a_key_the_gateway_does_not_hold_is_told_apart_and_asked_once(hub: Hub, gateway: httpx.Client) -> None:
    """The gateway holds another key for hub's terminal (it was changed at the gateway's portal and not in hub's
    settings): querydr answers 97 (invalid checksum), unsigned. That is said as hub's credentials refused —
    the operators' to fix, naming the settings — not as a forged answer, and the check of pending payments asks once
    for all of them."""
    from hub.adapters.errors import PeerAuthFailed

    payments = [pay(hub, awaiting_payment(hub, 80 + i)) for i in range(2)]
    gateway.post("/_sandbox/merchants", json={"tmn": TMN, "secret": secrets.token_hex(16), "ipn_url": "http://x/"})
    with pytest.raises(PeerAuthFailed) as refused:
        hub.runtime.payment_platforms["vnpay"].query(payments[0]["reference"], correlation_id="t")
    assert refused.value.code == "peer_auth_failed" and "HUB_PAYMENT_VNPAY_SECRET" in str(refused.value)
    refs = [p["reference"] for p in payments]
    assert hub.runtime.payments.check_pending(correlation_id="t", references=refs) == {"errors": 1, "not_asked": 1}
