"""Client of a VNPay-style gateway: the pay URL is built and signed locally (parameters sorted by name,
query-string encoded, HMAC-SHA512 in `vnp_SecureHash`, amount × 100), the IPN arrives as a GET with the same
signing, and answers carry `RspCode` (00 ok, 01 order not found, 02 already confirmed, 04 invalid amount,
97 bad signature, 99 other). `querydr` asks the gateway about a transaction; the daily statement is signed too."""

from __future__ import annotations

import hashlib
import hmac
import ssl
import uuid
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote_plus

import httpx

from hub.adapters.errors import PeerAuthFailed, PeerProtocolError, PeerRejected, PeerUnavailable, reply_parsed
from hub.adapters.http import json_object, post_checked
from hub.adapters.payment.base import Callback, CallbackRejected, Created, PaymentOrder, QueryResult, StatementLine
from hub.domain.dates import format_national, parse_national, utcnow
from hub.domain.errors import InvalidDate
from hub.domain.privacy import same_text

PEER = "payment_vnpay"
VERSION = "2.1.0"
QUERY_FIELDS = ["vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TxnRef", "vnp_TransactionDate",
                "vnp_CreateDate", "vnp_IpAddr", "vnp_OrderInfo"]  # fmt: skip
QUERY_REPLY_FIELDS = ["vnp_ResponseId", "vnp_Command", "vnp_ResponseCode", "vnp_Message", "vnp_TmnCode", "vnp_TxnRef",
                      "vnp_Amount", "vnp_BankCode", "vnp_PayDate", "vnp_TransactionNo", "vnp_TransactionType",
                      "vnp_TransactionStatus", "vnp_OrderInfo", "vnp_PromotionCode", "vnp_PromotionAmount"]  # fmt: skip
# our service's answer codes -> VNPay's RspCode (a replay outside the window is "99": VNPay has no code for it)
RSP = {"00": "00", "01": "01", "02": "02", "04": "04", "07": "99", "97": "97", "99": "99"}


def canonical(params: dict[str, str]) -> str:
    """The signed string: vnp_* parameters except the hash, sorted by name, each `name=quote_plus(value)`."""
    items = sorted(
        (k, v) for k, v in params.items() if k.startswith("vnp_") and k not in ("vnp_SecureHash", "vnp_SecureHashType")
    )
    return "&".join(f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in items if v not in ("", None))


def sign(params: dict[str, str], secret: str) -> str:
    return hmac.new(secret.encode(), canonical(params).encode("utf-8", "surrogatepass"), hashlib.sha512).hexdigest()


def pipe_sign(values: list[str], secret: str) -> str:
    return hmac.new(secret.encode(), "|".join(values).encode("utf-8", "surrogatepass"), hashlib.sha512).hexdigest()


class VnpayClient:
    name = "vnpay"
    duplicate_code = "02"  # VNPay expects "already confirmed" for a repeated IPN

    def __init__(
        self,
        pay_url: str,
        api_url: str,
        *,
        merchant: str,
        secret: str,
        return_url: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.pay_url = pay_url
        self.merchant = merchant
        self._secret = secret
        self.return_url = return_url
        self._http = httpx.Client(
            base_url=api_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            trust_env=False,
            verify=tls if tls is not None else True,
        )

    def close(self) -> None:
        self._http.close()

    def create(self, order: PaymentOrder, *, correlation_id: str) -> Created:
        now = utcnow()
        params = {
            "vnp_Version": VERSION,
            "vnp_Command": "pay",
            "vnp_TmnCode": self.merchant,
            "vnp_Amount": str(order.amount * 100),  # VNPay counts in 1/100 đồng
            "vnp_CurrCode": "VND",
            "vnp_TxnRef": order.reference,
            "vnp_OrderInfo": order.description[:255],
            "vnp_OrderType": "other",
            "vnp_Locale": "vn",
            "vnp_ReturnUrl": self.return_url,
            "vnp_IpAddr": order.client_ip,
            "vnp_CreateDate": format_national(now),
            "vnp_ExpireDate": format_national(now + timedelta(minutes=15)),
        }
        query = canonical(params)
        return Created(pay_url=f"{self.pay_url}?{query}&vnp_SecureHash={sign(params, self._secret)}")

    def parse_callback(self, body: bytes, content_type: str | None, query: dict[str, str]) -> Callback:
        params = {k: v for k, v in query.items() if k.startswith("vnp_")}
        given = params.get("vnp_SecureHash", "")
        if not given or not same_text(given.lower(), sign(params, self._secret)):
            raise CallbackRejected("97", "vnp_SecureHash does not verify")
        if params.get("vnp_TmnCode") != self.merchant:
            raise CallbackRejected("99", "IPN for another merchant")
        try:
            raw_amount = int(params["vnp_Amount"])
            if raw_amount % 100:
                raise ValueError("vnp_Amount is not a whole number of đồng")
            ok = params.get("vnp_ResponseCode") == "00" and params.get("vnp_TransactionStatus") == "00"
            return Callback(
                reference=params["vnp_TxnRef"],
                success=ok,
                amount=raw_amount // 100,
                currency="VND",
                transaction_id=params["vnp_TransactionNo"],
                bank=params.get("vnp_BankCode") or None,
                at=parse_national(params["vnp_PayDate"]),
                error_code=params.get("vnp_ResponseCode", ""),
            )
        except (KeyError, ValueError, InvalidDate) as exc:
            raise CallbackRejected("99", f"malformed IPN: {exc}") from None

    def answer(self, code: str, message: str) -> tuple[int, dict[str, Any]]:
        return 200, {"RspCode": RSP.get(code, "99"), "Message": message[:200]}

    def _post(self, path: str, body: dict[str, Any], correlation_id: str) -> dict[str, Any]:
        r = post_checked(self._http, path, body, peer=PEER, correlation_id=correlation_id)
        return json_object(r, peer=PEER, what=path)

    def query(self, reference: str, *, correlation_id: str) -> QueryResult:
        now = format_national(utcnow())
        body = {
            "vnp_RequestId": uuid.uuid4().hex[:32],
            "vnp_Version": VERSION,
            "vnp_Command": "querydr",
            "vnp_TmnCode": self.merchant,
            "vnp_TxnRef": reference,
            "vnp_TransactionDate": now,
            "vnp_CreateDate": now,
            "vnp_IpAddr": "127.0.0.1",
            "vnp_OrderInfo": f"Truy van {reference}",
        }
        body["vnp_SecureHash"] = pipe_sign([str(body[f]) for f in QUERY_FIELDS], self._secret)
        reply = self._post("/merchant_webapi/api/transaction", body, correlation_id)
        if reply.get("vnp_ResponseCode") == "91":  # transaction not found
            return QueryResult("unknown", None, None, None)
        if reply.get("vnp_ResponseCode") == "97":  # the request's checksum does not verify (it is not signed)
            raise PeerAuthFailed(
                PEER,
                f"the gateway refused hub's vnp_SecureHash (97 {str(reply.get('vnp_Message', ''))[:100]}): merchant "
                f"{self.merchant!r} (HUB_PAYMENT_VNPAY_MERCHANT) or HUB_PAYMENT_VNPAY_SECRET is not what it holds",
                reply=reply,
            )
        expected = pipe_sign([str(reply.get(f, "")) for f in QUERY_REPLY_FIELDS], self._secret)
        if not same_text(str(reply.get("vnp_SecureHash", "")), expected):
            raise PeerProtocolError(
                PEER, "querydr: reply's vnp_SecureHash does not verify", code="payment_reply_forged"
            )
        status = {"00": "paid", "01": "pending"}.get(str(reply.get("vnp_TransactionStatus")), "failed")
        pay_date = str(reply.get("vnp_PayDate") or "")
        with reply_parsed(PEER, "querydr"):
            amount = int(reply["vnp_Amount"]) // 100 if str(reply.get("vnp_Amount", "")).isdigit() else None
            return QueryResult(
                status,
                amount,
                str(reply.get("vnp_TransactionNo") or "") or None,
                parse_national(pay_date) if pay_date else None,
            )

    def receipt(self, reference: str, *, correlation_id: str) -> bytes:
        raise PeerRejected(PEER, "the gateway issues no receipt document", code="receipt_not_offered")

    def statement(self, day: date, *, correlation_id: str) -> list[StatementLine]:
        try:
            r = self._http.get(
                "/merchant_webapi/statement", params={"vnp_TmnCode": self.merchant, "date": day.strftime("%Y%m%d")}
            )
        except httpx.HTTPError as exc:
            raise PeerUnavailable(PEER, f"statement: {exc.__class__.__name__}") from None
        if r.status_code != 200:
            raise PeerUnavailable(PEER, f"statement: HTTP {r.status_code}")
        data = json_object(r, peer=PEER, what="statement")
        lines = data.get("transactions")
        if not isinstance(lines, list):
            raise PeerProtocolError(PEER, "statement: no transactions list")
        with reply_parsed(PEER, "statement"):
            total = sum(int(x.get("vnp_Amount", 0)) for x in lines)
        expected = pipe_sign([self.merchant, day.strftime("%Y%m%d"), str(len(lines)), str(total)], self._secret)
        if not same_text(str(data.get("vnp_SecureHash", "")), expected):
            raise PeerProtocolError(PEER, "statement: vnp_SecureHash does not verify", code="payment_reply_forged")
        with reply_parsed(PEER, "statement"):
            return [
                StatementLine(
                    str(x["vnp_TransactionNo"]),
                    str(x["vnp_TxnRef"]),
                    int(x["vnp_Amount"]) // 100,
                    "VND",
                    parse_national(x["vnp_PayDate"]),
                )
                for x in lines
            ]
