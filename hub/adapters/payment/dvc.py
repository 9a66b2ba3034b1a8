"""Client of the national portal's DVC payment platform (v1.0.6-era messages: INIT, CONFIRM, QUERY, GET_BILL).
`MaXacThuc` = SHA-256 hex over the message's fields joined with `|`, followed by the partner secret; the field
lists are the contracts' `x-hash-fields` (contracts/payment_dvc/). Replies are verified like callbacks."""

from __future__ import annotations

import hashlib
import ssl
from datetime import date, datetime
from typing import Any

import httpx

from hub.adapters.errors import PeerAuthFailed, PeerProtocolError, PeerRejected, PeerUnavailable, reply_parsed
from hub.adapters.http import json_object, parse_json, post_checked
from hub.adapters.payment.base import (
    Callback,
    CallbackRejected,
    Created,
    PaymentOrder,
    QueryResult,
    StatementLine,
)
from hub.domain.dates import format_national, parse_national, utcnow
from hub.domain.errors import InvalidDate
from hub.domain.numbers import whole_number
from hub.domain.privacy import same_text

PEER = "payment_dvc"
VERSION = "1.0.6"
INIT_FIELDS = ["LoaiBanTin", "PhienBan", "MaDoiTac", "MaThamChieu", "SoTien", "LoaiHinhThanhToan", "MaKenhThanhToan",
               "MaThietBi", "NgonNgu", "MaTienTe", "MaNganHang", "ThongTinGiaoDich", "ThoiGianGD", "Ip"]  # fmt: skip
INIT_REPLY_FIELDS = ["MaLoi", "MaDoiTac", "MaThamChieu", "UrlThanhToan"]
CONFIRM_FIELDS = ["LoaiBanTin", "MaLoi", "MaDoiTac", "MaThamChieu", "SoTien", "MaTienTe", "MaGiaoDich", "MaNganHang",
                  "ThoiGianGD", "ThongTinGiaoDich"]  # fmt: skip
QUERY_FIELDS = ["LoaiBanTin", "PhienBan", "MaDoiTac", "MaThamChieu", "ThoiGianGD"]
QUERY_REPLY_FIELDS = ["MaLoi", "MaDoiTac", "MaThamChieu", "TrangThaiGD", "SoTien", "MaGiaoDich"]
MAX_CALLBACK_BYTES = 16 * 1024


REFUSED_MAC = "97"  # MaLoi: the message's MaXacThuc does not verify, or the partner is unknown to the platform


def _said(text: Any) -> dict[str, Any]:
    """A refusal's JSON object, or nothing (it may be HTML from a proxy, or cut off)."""
    try:
        said = parse_json(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return said if isinstance(said, dict) else {}


def whole_dong(value: Any) -> int | None:
    """An amount in đồng as the platform writes it: a JSON number, or the same in a string ("50000") — its
    partners build messages with every value a string (INIT's SoTien is `String.valueOf(amount)` in one-stop
    systems in service) and the MAC is over the text either way. None for anything else (true, 1.5, "5e4")."""
    return whole_number(value, 15)


def mac(message: dict[str, Any], fields: list[str], secret: str) -> str:
    """SHA-256 hex of the fields' values joined with '|', then '|' and the partner secret."""
    parts = ["" if message.get(f) is None else str(message.get(f)) for f in fields]
    return hashlib.sha256("|".join([*parts, secret]).encode("utf-8", "surrogatepass")).hexdigest()


class DvcPaymentClient:
    name = "dvc"
    duplicate_code = "00"  # the DVC platform retries until it hears 00

    def __init__(
        self,
        base_url: str,
        *,
        partner: str,
        secret: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.partner = partner
        self._secret = secret
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            trust_env=False,
            verify=tls if tls is not None else True,
        )

    def close(self) -> None:
        self._http.close()

    # -- outbound --------------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], correlation_id: str) -> httpx.Response:
        try:
            return post_checked(self._http, path, body, peer=PEER, correlation_id=correlation_id)
        except PeerRejected as exc:
            said = _said(exc.reply)
            if said.get("MaLoi") == REFUSED_MAC:
                raise self._refused(said) from None
            raise

    def _refused(self, said: dict[str, Any]) -> PeerAuthFailed:
        return PeerAuthFailed(
            PEER,
            f"the platform refused hub's MaXacThuc (MaLoi 97 {str(said.get('MoTaLoi', ''))[:100]}): partner "
            f"{self.partner!r} (HUB_PAYMENT_DVC_PARTNER) or HUB_PAYMENT_DVC_SECRET is not what the platform holds",
            reply=said,
        )

    def _json(self, r: httpx.Response, path: str) -> dict[str, Any]:
        reply = json_object(r, peer=PEER, what=path)
        if reply.get("MaLoi") == REFUSED_MAC:  # the refusal of `_post`, answered 200
            raise self._refused(reply)
        return reply

    def _verified(self, reply: dict[str, Any], fields: list[str], path: str) -> dict[str, Any]:
        given = reply.get("MaXacThuc")
        if not isinstance(given, str) or not same_text(given, mac(reply, fields, self._secret)):
            raise PeerProtocolError(PEER, f"{path}: reply's MaXacThuc does not verify", code="payment_reply_forged")
        return reply

    def create(self, order: PaymentOrder, *, correlation_id: str) -> Created:
        body: dict[str, Any] = {
            "LoaiBanTin": "INIT",
            "PhienBan": VERSION,
            "MaDoiTac": self.partner,
            "MaThamChieu": order.reference,
            "SoTien": order.amount,
            "LoaiHinhThanhToan": "PAY",
            "MaKenhThanhToan": "1",
            "MaThietBi": "1",
            "NgonNgu": "vi-VN",
            "MaTienTe": "VND",
            "MaNganHang": "",
            "ThongTinGiaoDich": order.description[:255],
            "ThoiGianGD": format_national(utcnow()),
            "Ip": order.client_ip,
            "UrlThongBao": order.callback_url,
            "ThongTinBienLai": {
                "MaDVC": f"{order.procedure_code}.01",
                "MaHoSo": order.dossier_code,
                "TenNguoiNop": order.payer_name or "",
                "PhiLePhi": order.fees,
            },
        }
        body["MaXacThuc"] = mac(body, INIT_FIELDS, self._secret)
        reply = self._verified(
            self._json(self._post("/api/payment", body, correlation_id), "INIT"), INIT_REPLY_FIELDS, "INIT"
        )
        if reply.get("MaLoi") != "00" or not isinstance(reply.get("UrlThanhToan"), str):
            raise PeerRejected(
                PEER,
                f"INIT refused: {reply.get('MaLoi')} {reply.get('MoTaLoi')}",
                code="payment_init_refused",
                reply=reply,
            )
        return Created(pay_url=reply["UrlThanhToan"])

    def _query_body(self, kind: str, reference: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "LoaiBanTin": kind,
            "PhienBan": VERSION,
            "MaDoiTac": self.partner,
            "MaThamChieu": reference,
            "ThoiGianGD": format_national(utcnow()),
        }
        body["MaXacThuc"] = mac(body, QUERY_FIELDS, self._secret)
        return body

    def query(self, reference: str, *, correlation_id: str) -> QueryResult:
        reply = self._json(self._post("/api/payment", self._query_body("QUERY", reference), correlation_id), "QUERY")
        if reply.get("MaLoi") == "01":
            return QueryResult("unknown", None, None, None)
        self._verified(reply, QUERY_REPLY_FIELDS, "QUERY")
        status = {"0": "pending", "1": "paid", "2": "failed"}.get(str(reply.get("TrangThaiGD")), "unknown")
        at = reply.get("ThoiGianGD")
        with reply_parsed(PEER, "QUERY"):
            return QueryResult(
                status,
                whole_dong(reply.get("SoTien")),
                reply.get("MaGiaoDich") or None,
                parse_national(at) if isinstance(at, str) and at else None,
            )

    def receipt(self, reference: str, *, correlation_id: str) -> bytes:
        r = self._post("/api/payment", self._query_body("GET_BILL", reference), correlation_id)
        if not r.headers.get("content-type", "").startswith("application/pdf") or not r.content.startswith(b"%PDF"):
            raise PeerProtocolError(PEER, "GET_BILL: reply is not a PDF")
        return r.content

    def statement(self, day: date, *, correlation_id: str) -> list[StatementLine]:
        try:
            r = self._http.get("/api/statement", params={"MaDoiTac": self.partner, "Ngay": day.strftime("%Y%m%d")})
        except httpx.HTTPError as exc:
            raise PeerUnavailable(PEER, f"statement: {exc.__class__.__name__}") from None
        if r.status_code != 200:
            raise PeerUnavailable(PEER, f"statement: HTTP {r.status_code}")
        data = self._json(r, "statement")
        lines = data.get("GiaoDich")
        if not isinstance(lines, list):
            raise PeerProtocolError(PEER, "statement: no GiaoDich list")
        with reply_parsed(PEER, "statement"):
            total = sum(int(x.get("SoTien", 0)) for x in lines)
        expected = hashlib.sha256(
            f"{data.get('MaDoiTac')}|{data.get('Ngay')}|{len(lines)}|{total}|{self._secret}".encode(
                "utf-8", "surrogatepass"
            )
        ).hexdigest()
        if not same_text(str(data.get("MaXacThuc", "")), expected):
            raise PeerProtocolError(PEER, "statement: MaXacThuc does not verify", code="payment_reply_forged")
        with reply_parsed(PEER, "statement"):
            return [
                StatementLine(
                    str(x["MaGiaoDich"]),
                    str(x["MaThamChieu"]),
                    int(x["SoTien"]),
                    str(x["MaTienTe"]),
                    parse_national(x["ThoiGianGD"]),
                )
                for x in lines
            ]

    # -- inbound ---------------------------------------------------------------------------------------------

    def parse_callback(self, body: bytes, content_type: str | None, query: dict[str, str]) -> Callback:
        if len(body) > MAX_CALLBACK_BYTES:
            raise CallbackRejected("99", "callback too large")
        try:
            msg = parse_json(body)
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejected("99", "callback is not JSON") from None
        if not isinstance(msg, dict):
            raise CallbackRejected("99", "callback is not an object")
        given = msg.get("MaXacThuc")
        if not isinstance(given, str) or not same_text(given, mac(msg, CONFIRM_FIELDS, self._secret)):
            raise CallbackRejected("97", "MaXacThuc does not verify")
        # only now is anything in it trusted
        if msg.get("LoaiBanTin") != "CONFIRM" or msg.get("MaDoiTac") != self.partner:
            raise CallbackRejected("99", "not a CONFIRM for this partner")
        try:
            amount = whole_dong(msg["SoTien"])
            if amount is None:
                raise ValueError("SoTien must be a whole number of đồng")
            at = parse_national(str(msg["ThoiGianGD"]))
            return Callback(
                reference=str(msg["MaThamChieu"]),
                success=msg["MaLoi"] == "00",
                amount=amount,
                currency=str(msg["MaTienTe"]),
                transaction_id=str(msg["MaGiaoDich"]),
                bank=str(msg.get("MaNganHang") or "") or None,
                at=at,
                error_code=str(msg["MaLoi"]),
            )
        except (KeyError, ValueError, TypeError, InvalidDate) as exc:
            raise CallbackRejected("99", f"malformed CONFIRM: {exc}") from None

    def answer(self, code: str, message: str) -> tuple[int, dict[str, Any]]:
        return 200, {"MaLoi": code, "MoTaLoi": message}


def parse_day(value: str) -> date:
    return datetime.strptime(value, "%Y-%m-%d").date()  # noqa: DTZ007 - a calendar day, not an instant
