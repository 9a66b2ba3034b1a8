"""Sandbox of a VNPay-style gateway: the signed pay URL opens a pay page, paying sends the IPN (a signed GET) to
the merchant's configured IPN URL — with duplicates, forged, amount-changed, lost or declined ones on demand —
`querydr` answers about a transaction, and a signed daily statement lists the paid ones."""

from __future__ import annotations

import hashlib
import hmac
import html
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline

from hub.domain.privacy import same_text
from hub.sandbox.common import Faults, PeerState, add_control_routes, apply_faults, send_copies

QUERY_FIELDS = ["vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TxnRef", "vnp_TransactionDate",
                "vnp_CreateDate", "vnp_IpAddr", "vnp_OrderInfo"]  # fmt: skip
QUERY_REPLY_FIELDS = ["vnp_ResponseId", "vnp_Command", "vnp_ResponseCode", "vnp_Message", "vnp_TmnCode", "vnp_TxnRef",
                      "vnp_Amount", "vnp_BankCode", "vnp_PayDate", "vnp_TransactionNo", "vnp_TransactionType",
                      "vnp_TransactionStatus", "vnp_OrderInfo", "vnp_PromotionCode", "vnp_PromotionAmount"]  # fmt: skip


def _canonical(params: dict[str, str]) -> str:
    items = sorted(
        (k, v) for k, v in params.items() if k.startswith("vnp_") and k not in ("vnp_SecureHash", "vnp_SecureHashType")
    )
    return "&".join(f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in items if v not in ("", None))


def _sign(params: dict[str, str], secret: str) -> str:
    return hmac.new(secret.encode(), _canonical(params).encode("utf-8", "surrogatepass"), hashlib.sha512).hexdigest()


def _pipe(values: list[str], secret: str) -> str:
    return hmac.new(secret.encode(), "|".join(values).encode("utf-8", "surrogatepass"), hashlib.sha512).hexdigest()


def _now(shift: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + timedelta(hours=7) + shift).strftime("%Y%m%d%H%M%S")


@dataclass
class VnpayFaults(Faults):
    duplicates: int = 0
    drop_callback: bool = False
    forge_callback: bool = False
    amount_delta: int = 0  # đồng added to the IPN's amount (signed correctly)
    fail_payment: bool = False


@dataclass
class VnpayState(PeerState):
    faults: VnpayFaults = field(default_factory=VnpayFaults)
    merchants: dict[str, dict[str, str]] = field(default_factory=dict)  # tmn -> {secret, ipn_url}
    txns: dict[str, dict[str, Any]] = field(default_factory=dict)  # vnp_TxnRef -> transaction
    answers: list[dict[str, Any]] = field(default_factory=list)
    vlock: threading.Lock = field(default_factory=threading.Lock)


def create_app(merchants: dict[str, dict[str, str]], state: VnpayState | None = None) -> FastAPI:
    st = state or VnpayState()
    st.merchants.update(merchants)
    app = FastAPIOffline(redoc_url=None, title="Sandbox: VNPay-style gateway", docs_url="/_sandbox/docs")
    app.state.peer = st

    def reset_extra() -> None:
        st.txns.clear()
        st.answers.clear()

    add_control_routes(app, st, extra_reset=reset_extra)

    @app.post("/_sandbox/merchants")
    async def set_merchant(request: Request) -> dict[str, Any]:
        """{tmn, secret, ipn_url}: register (or change) a merchant, as its portal would."""
        m = await request.json()
        st.merchants[m["tmn"]] = {"secret": m["secret"], "ipn_url": m.get("ipn_url", "")}
        return {"merchants": sorted(st.merchants)}

    @app.get("/paymentv2/vpcpay.html", response_class=HTMLResponse)
    def pay_page(request: Request) -> HTMLResponse:
        params = dict(request.query_params)
        tmn = params.get("vnp_TmnCode", "")
        merchant = st.merchants.get(tmn)
        if merchant is None or not same_text(params.get("vnp_SecureHash", ""), _sign(params, merchant["secret"])):
            return HTMLResponse("<p id=result>Sai chữ ký (code 97)</p>", status_code=400)
        ref = params["vnp_TxnRef"]
        with st.vlock:
            txn = st.txns.setdefault(ref, {"ref": ref, "tmn": tmn, "amount": int(params["vnp_Amount"]),
                                           "info": params.get("vnp_OrderInfo", ""), "status": "01",
                                           "no": None, "pay_date": None})  # fmt: skip
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>VNPay (sandbox)</title>"
            f"<h1>{html.escape(txn['info'])}</h1><p>Số tiền: {txn['amount'] // 100:,} VND</p>"
            f"<form method=post action='/paymentv2/pay/{html.escape(ref)}'><button id=pay>Thanh toán</button></form>"
        )

    @app.post("/paymentv2/pay/{ref}", response_class=HTMLResponse)
    def pay(ref: str) -> HTMLResponse:
        with st.vlock:
            txn = st.txns.get(ref)
            if txn is None:
                return HTMLResponse("<p id=result>Không tìm thấy giao dịch</p>", status_code=404)
            if txn["status"] == "01":
                txn["status"] = "02" if st.faults.fail_payment else "00"
                txn["no"] = str(14000000 + len(st.answers) + int(uuid.uuid4().int % 1000000))
                txn["pay_date"] = _now()
                txn["settled"] = txn["amount"] + st.faults.amount_delta * 100
        if not st.faults.drop_callback:
            threading.Thread(target=send_ipn, args=(ref,), daemon=True).start()
        return HTMLResponse(
            f"<p id=result>{'Giao dịch thành công' if txn['status'] == '00' else 'Giao dịch thất bại'}</p>"
        )

    def ipn_params(txn: dict[str, Any], *, forged: bool = False) -> dict[str, str]:
        ok = txn["status"] == "00"
        params = {
            "vnp_TmnCode": txn["tmn"],
            "vnp_Amount": str(txn.get("settled", txn["amount"])),
            "vnp_BankCode": "NCB",
            "vnp_BankTranNo": f"VNP{txn['no']}",
            "vnp_CardType": "ATM",
            "vnp_OrderInfo": txn["info"],
            "vnp_PayDate": txn["pay_date"],
            "vnp_ResponseCode": "00" if ok else "24",
            "vnp_TransactionNo": txn["no"],
            "vnp_TransactionStatus": "00" if ok else "02",
            "vnp_TxnRef": txn["ref"],
        }
        secret = st.merchants[txn["tmn"]]["secret"]
        params["vnp_SecureHash"] = _sign(params, "forged" if forged else secret)
        return params

    def call_ipn(txn: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        url = st.merchants[txn["tmn"]].get("ipn_url", "")
        try:
            r = httpx.get(url, params=params, timeout=10)
            answer = {"status": r.status_code, "body": r.json() if r.content else None}
        except (httpx.HTTPError, ValueError) as exc:
            answer = {"status": None, "error": exc.__class__.__name__}
        with st.vlock:
            st.answers.append({"ref": txn["ref"], **answer})
        return answer

    def send_ipn(ref: str) -> None:
        txn = st.txns[ref]
        for _ in range(1 + max(0, st.faults.duplicates)):
            call_ipn(txn, ipn_params(txn, forged=st.faults.forge_callback))

    @app.post("/_sandbox/ipn/{ref}")
    async def ipn_on_demand(ref: str, request: Request) -> Response:
        """Send an IPN now: {kind: normal|forged, copies: n, concurrent: bool, amount_delta: đồng}."""
        order = await request.json()
        txn = st.txns.get(ref)
        if txn is None or txn["no"] is None:
            return JSONResponse({"detail": "no transaction"}, status_code=404)
        params = ipn_params(txn, forged=order.get("kind") == "forged")
        if order.get("amount_delta"):
            params["vnp_Amount"] = str(int(params["vnp_Amount"]) + int(order["amount_delta"]) * 100)
            params["vnp_SecureHash"] = _sign(params, st.merchants[txn["tmn"]]["secret"])
        copies = int(order.get("copies", 1))
        results = send_copies(lambda: call_ipn(txn, params), copies, concurrent=bool(order.get("concurrent")))
        return JSONResponse({"answers": results})

    @app.post("/merchant_webapi/api/transaction")
    async def querydr(request: Request) -> Response:
        fault = await apply_faults(st)  # latency, outage, rate limit (429 + Retry-After), 5xx, hangs, garbage
        if fault is not None:
            return fault
        body = await request.json()
        merchant = st.merchants.get(str(body.get("vnp_TmnCode", "")))
        if merchant is None or not same_text(
            str(body.get("vnp_SecureHash", "")), _pipe([str(body.get(f, "")) for f in QUERY_FIELDS], merchant["secret"])
        ):
            return JSONResponse({"vnp_ResponseCode": "97", "vnp_Message": "Invalid checksum"})
        txn = st.txns.get(str(body.get("vnp_TxnRef")))
        if txn is None:
            return JSONResponse({"vnp_ResponseCode": "91", "vnp_Message": "Transaction not found"})
        reply = {
            "vnp_ResponseId": uuid.uuid4().hex[:32],
            "vnp_Command": "querydr",
            "vnp_ResponseCode": "00",
            "vnp_Message": "QueryDR Success",
            "vnp_TmnCode": txn["tmn"],
            "vnp_TxnRef": txn["ref"],
            "vnp_Amount": str(txn.get("settled", txn["amount"])),
            "vnp_BankCode": "NCB",
            "vnp_PayDate": txn["pay_date"] or "",
            "vnp_TransactionNo": txn["no"] or "",
            "vnp_TransactionType": "01",
            "vnp_TransactionStatus": txn["status"],
            "vnp_OrderInfo": txn["info"],
            "vnp_PromotionCode": "",
            "vnp_PromotionAmount": "",
        }
        reply["vnp_SecureHash"] = _pipe([str(reply[f]) for f in QUERY_REPLY_FIELDS], merchant["secret"])
        return JSONResponse(reply)

    @app.get("/merchant_webapi/statement")
    async def statement(vnp_TmnCode: str, date: str) -> Response:  # noqa: N803 - the gateway's names
        fault = await apply_faults(st)
        if fault is not None:
            return fault
        merchant = st.merchants.get(vnp_TmnCode)
        if merchant is None:
            return JSONResponse({"vnp_ResponseCode": "97"}, status_code=403)
        with st.vlock:
            paid = [
                t
                for t in st.txns.values()
                if t["tmn"] == vnp_TmnCode and t["status"] == "00" and (t["pay_date"] or "")[:8] == date
            ]
        lines = [
            {
                "vnp_TransactionNo": t["no"],
                "vnp_TxnRef": t["ref"],
                "vnp_Amount": t["settled"],
                "vnp_PayDate": t["pay_date"],
            }
            for t in paid
        ]
        total = sum(x["vnp_Amount"] for x in lines)
        signature = _pipe([vnp_TmnCode, date, str(len(lines)), str(total)], merchant["secret"])
        return JSONResponse({"transactions": lines, "vnp_SecureHash": signature})

    @app.get("/_sandbox/transactions")
    def transactions() -> dict[str, Any]:
        return {"items": list(st.txns.values()), "answers": st.answers}

    return app
