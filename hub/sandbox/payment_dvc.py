"""Sandbox of the national portal's DVC payment platform: INIT / QUERY / GET_BILL on `POST /api/payment`
(validated against contracts/payment_dvc), a pay page the citizen (or a test) pays through, CONFIRM callbacks
to the partner's `UrlThongBao` — with duplicates, late, forged, amount-changed and lost ones on demand — a
receipt PDF, and a signed daily statement. Hashes follow the contracts' `x-hash-fields`."""

from __future__ import annotations

import asyncio
import hashlib
import html
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline

from hub.adapters.http import parse_json
from hub.domain.privacy import same_text
from hub.sandbox import contracts
from hub.sandbox.common import Faults, PeerState, add_control_routes, rate_limited, send_copies

VN = timedelta(hours=7)


def _fields(name: str) -> list[str]:
    return list(contracts.load_json(f"payment_dvc/{name}.schema.json")["x-hash-fields"])


def _mac(msg: dict[str, Any], fields: list[str], secret: str) -> str:
    parts = ["" if msg.get(f) is None else str(msg.get(f)) for f in fields]
    return hashlib.sha256("|".join([*parts, secret]).encode("utf-8", "surrogatepass")).hexdigest()


def _now_national(shift: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + VN + shift).strftime("%Y%m%d%H%M%S")


@dataclass
class PaymentFaults(Faults):
    duplicates: int = 0  # extra copies of each CONFIRM
    callback_delay: float = 0.0  # seconds before the CONFIRM is sent
    drop_callback: bool = False  # never send the CONFIRM (hub must query)
    forge_callback: bool = False  # send the CONFIRM with a wrong MaXacThuc
    amount_delta: int = 0  # add this to SoTien in the CONFIRM (and keep the hash valid)
    fail_payment: bool = False  # the bank declines: CONFIRM with MaLoi 51
    pay_url: str = ""  # answer INIT with this UrlThanhToan (signed): a platform gone wrong, e.g. "javascript:…"
    amounts_as_text: bool = False  # SoTien written as a string ("8000") in CONFIRM and QUERY, as Java partners do


@dataclass
class PaymentState(PeerState):
    faults: PaymentFaults = field(default_factory=PaymentFaults)
    partners: dict[str, str] = field(default_factory=dict)  # MaDoiTac -> secret
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # MaThamChieu -> payment
    answers: list[dict[str, Any]] = field(default_factory=list)  # what the partner answered to each CONFIRM
    extra_lines: list[dict[str, Any]] = field(default_factory=list)  # statement lines hub never heard of
    hidden: set[str] = field(default_factory=set)  # references left out of the statement
    plock: threading.Lock = field(default_factory=threading.Lock)


def _pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF (Helvetica; text folded to ASCII, which the standard fonts can show)."""

    def ascii_(s: str) -> str:
        folded = unicodedata.normalize("NFKD", s.replace("Đ", "D").replace("đ", "d"))
        return "".join(c for c in folded if ord(c) < 128).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = "BT /F1 12 Tf 50 780 Td 16 TL " + " ".join(f"({ascii_(line)}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def create_app(partners: dict[str, str], state: PaymentState | None = None) -> FastAPI:
    st = state or PaymentState()
    st.partners.update(partners)
    app = FastAPIOffline(redoc_url=None, title="Sandbox: DVC payment platform", docs_url="/_sandbox/docs")
    app.state.peer = st

    def reset_extra() -> None:
        st.payments.clear()
        st.answers.clear()
        st.extra_lines.clear()
        st.hidden.clear()

    add_control_routes(app, st, extra_reset=reset_extra)
    init_fields, reply_fields = _fields("init.request"), _fields("init.reply")
    confirm_fields, query_fields = _fields("confirm"), _fields("query.request")

    def reply(partner: str, body: dict[str, Any], fields: list[str]) -> JSONResponse:
        body["MaXacThuc"] = _mac(body, fields, st.partners.get(partner, ""))
        return JSONResponse(body)

    # -- the partner's calls ---------------------------------------------------------------------------------

    @app.post("/api/payment")
    async def api(request: Request) -> Response:
        if st.faults.latency_ms:  # a slow platform: every call answered this much later
            await asyncio.sleep(st.faults.latency_ms / 1000)
        if st.faults.outage_until > time.time():
            return JSONResponse({"MaLoi": "99", "MoTaLoi": "sandbox outage"}, status_code=503)
        if (wait := rate_limited(st)) is not None:
            return JSONResponse(
                {"MaLoi": "99", "MoTaLoi": "sandbox rate limit"}, status_code=429, headers={"Retry-After": wait}
            )
        try:
            msg = parse_json(await request.body())
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"MaLoi": "99", "MoTaLoi": "not JSON"}, status_code=400)
        kind = msg.get("LoaiBanTin") if isinstance(msg, dict) else None
        partner = str(msg.get("MaDoiTac", "")) if isinstance(msg, dict) else ""
        secret = st.partners.get(partner)
        if kind == "INIT":
            problems = contracts.errors("payment_dvc/init.request.schema.json", msg)
            fields = init_fields
        elif kind in ("QUERY", "GET_BILL"):
            problems = contracts.errors("payment_dvc/query.request.schema.json", msg)
            fields = query_fields
        else:
            return JSONResponse({"MaLoi": "99", "MoTaLoi": "unknown LoaiBanTin"}, status_code=400)
        if problems:
            return JSONResponse({"MaLoi": "03", "MoTaLoi": "; ".join(problems)}, status_code=400)
        if secret is None or not same_text(str(msg["MaXacThuc"]), _mac(msg, fields, secret)):
            return JSONResponse({"MaLoi": "97", "MoTaLoi": "sai mã xác thực"}, status_code=400)
        ref = msg["MaThamChieu"]
        with st.plock:
            known = st.payments.get(ref)
            if kind == "INIT":
                if known is not None and known["amount"] != msg["SoTien"]:
                    return reply(partner, {"MaLoi": "05", "MoTaLoi": "MaThamChieu đã dùng với số tiền khác",
                                           "MaDoiTac": partner, "MaThamChieu": ref}, reply_fields)  # fmt: skip
                if known is None:
                    known = st.payments[ref] = {
                        "reference": ref,
                        "partner": partner,
                        "amount": msg["SoTien"],
                        "status": "pending",
                        "callback": msg["UrlThongBao"],
                        "receipt": msg["ThongTinBienLai"],
                        "description": msg["ThongTinGiaoDich"],
                        "transaction": None,
                        "paid_at": None,
                        "inits": 0,  # INITs received for it: a partner creating one payment should send one
                    }
                known["inits"] += 1
                url = st.faults.pay_url or f"{str(request.base_url).rstrip('/')}/pay/{ref}"
                return reply(partner, {"MaLoi": "00", "MoTaLoi": "Thành công", "MaDoiTac": partner,
                                       "MaThamChieu": ref, "UrlThanhToan": url}, reply_fields)  # fmt: skip
        if known is None:
            return JSONResponse({"MaLoi": "01", "MoTaLoi": "không tìm thấy giao dịch", "MaThamChieu": ref})
        if kind == "GET_BILL":
            if known["status"] != "paid":
                return JSONResponse({"MaLoi": "02", "MoTaLoi": "giao dịch chưa thanh toán"}, status_code=409)
            r = known["receipt"]
            lines = [
                "BIEN LAI THU PHI, LE PHI (sandbox)",
                f"Ma ho so: {r['MaHoSo']}",
                f"Nguoi nop: {r.get('TenNguoiNop', '')}",
                *[f"{f['TenPhiLePhi']}: {f['SoTien']:,} VND" for f in r["PhiLePhi"]],
                f"Tong cong: {known['amount']:,} VND",
                f"Ma giao dich: {known['transaction']}",
                f"Thoi gian: {known['paid_at']}",
            ]
            return Response(_pdf(lines), media_type="application/pdf")
        status = {"pending": "0", "paid": "1", "failed": "2"}[known["status"]]
        body = {
            "MaLoi": "00",
            "MaDoiTac": partner,
            "MaThamChieu": ref,
            "TrangThaiGD": status,
            "SoTien": str(known["amount"]) if st.faults.amounts_as_text else known["amount"],
            "MaGiaoDich": known["transaction"] or "",
            "ThoiGianGD": known["paid_at"] or "",
        }
        return reply(partner, body, ["MaLoi", "MaDoiTac", "MaThamChieu", "TrangThaiGD", "SoTien", "MaGiaoDich"])

    @app.get("/api/statement")
    def statement(MaDoiTac: str, Ngay: str) -> Response:  # noqa: N803 - the contract's names
        if st.faults.outage_until > time.time():
            return JSONResponse({"MaLoi": "99", "MoTaLoi": "sandbox outage"}, status_code=503)
        secret = st.partners.get(MaDoiTac)
        if secret is None:
            return JSONResponse({"MaLoi": "97", "MoTaLoi": "đối tác không tồn tại"}, status_code=403)
        with st.plock:
            lines = [
                {"MaGiaoDich": p["transaction"], "MaThamChieu": p["reference"], "SoTien": p["settled_amount"],
                 "MaTienTe": "VND", "ThoiGianGD": p["paid_at"]}
                for p in st.payments.values()
                if p["partner"] == MaDoiTac and p["status"] == "paid" and p["paid_at"][:8] == Ngay
                and p["reference"] not in st.hidden
            ] + [x for x in st.extra_lines if x["ThoiGianGD"][:8] == Ngay]  # fmt: skip
        total = sum(x["SoTien"] for x in lines)
        signature = hashlib.sha256(f"{MaDoiTac}|{Ngay}|{len(lines)}|{total}|{secret}".encode()).hexdigest()
        return JSONResponse({"MaDoiTac": MaDoiTac, "Ngay": Ngay, "GiaoDich": lines, "MaXacThuc": signature})

    # -- the citizen's side ----------------------------------------------------------------------------------

    @app.get("/pay/{ref}", response_class=HTMLResponse)
    def pay_page(ref: str) -> HTMLResponse:
        p = st.payments.get(ref)
        if p is None:
            return HTMLResponse("<p>Không tìm thấy giao dịch</p>", status_code=404)
        rows = "".join(f"<li>{html.escape(f['TenPhiLePhi'])}: {f['SoTien']:,} đ</li>" for f in p["receipt"]["PhiLePhi"])
        return HTMLResponse(
            f"<!doctype html><html lang=vi><meta charset=utf-8><title>Thanh toán lệ phí</title>"
            f"<h1>Thanh toán lệ phí hồ sơ {html.escape(p['receipt']['MaHoSo'])}</h1><ul>{rows}</ul>"
            f"<p>Tổng: <b>{p['amount']:,} đ</b></p><form method=post><button id=pay>Thanh toán</button></form>"
        )

    @app.post("/pay/{ref}", response_class=HTMLResponse)
    def pay(ref: str) -> HTMLResponse:
        with st.plock:
            p = st.payments.get(ref)
            if p is None:
                return HTMLResponse("<p>Không tìm thấy giao dịch</p>", status_code=404)
            if p["status"] == "pending":
                p["status"] = "failed" if st.faults.fail_payment else "paid"
                p["transaction"] = f"GD{uuid.uuid4().hex[:16].upper()}"
                p["paid_at"] = _now_national()
                p["settled_amount"] = p["amount"] + st.faults.amount_delta
        if not st.faults.drop_callback:
            threading.Thread(target=send_confirm, args=(ref,), daemon=True).start()
        ok = p["status"] == "paid"
        return HTMLResponse(f"<p id=result>{'Thanh toán thành công' if ok else 'Giao dịch không thành công'}</p>")

    def confirm_message(p: dict[str, Any], *, forged: bool = False, at: str | None = None) -> dict[str, Any]:
        secret = st.partners[p["partner"]]
        msg: dict[str, Any] = {
            "LoaiBanTin": "CONFIRM",
            "MaLoi": "00" if p["status"] == "paid" else "51",
            "MaDoiTac": p["partner"],
            "MaThamChieu": p["reference"],
            "SoTien": p.get("settled_amount", p["amount"]),
            "MaTienTe": "VND",
            "MaGiaoDich": p["transaction"],
            "MaNganHang": "NCB",
            "ThoiGianGD": at or p["paid_at"],
            "ThongTinGiaoDich": p["description"],
        }
        if st.faults.amounts_as_text:
            msg["SoTien"] = str(msg["SoTien"])
        msg["MaXacThuc"] = _mac(msg, confirm_fields, "not-the-secret" if forged else secret)
        return msg

    def post_confirm(p: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
        try:
            r = httpx.post(p["callback"], json=msg, timeout=10)
            answer = {"status": r.status_code, "body": r.json() if r.content else None}
        except (httpx.HTTPError, ValueError) as exc:
            answer = {"status": None, "error": exc.__class__.__name__}
        with st.plock:
            st.answers.append({"reference": p["reference"], "sent": msg, **answer})
        return answer

    def send_confirm(ref: str) -> None:
        f = st.faults
        if f.callback_delay:
            time.sleep(f.callback_delay)
        p = st.payments[ref]
        for _ in range(1 + max(0, f.duplicates)):
            post_confirm(p, confirm_message(p, forged=f.forge_callback))

    @app.post("/_sandbox/callback/{ref}")
    async def callback_on_demand(ref: str, request: Request) -> Response:
        """Send a CONFIRM now: {kind: normal|forged|old|future, copies: n, concurrent: bool, amount_delta: n}."""
        order = await request.json()
        p = st.payments.get(ref)
        if p is None or p["transaction"] is None:
            return JSONResponse({"detail": "no transaction for this reference"}, status_code=404)
        kind = order.get("kind", "normal")
        at = {"old": _now_national(-timedelta(days=30)), "future": _now_national(timedelta(days=1))}.get(kind)
        msg = confirm_message(p, forged=kind == "forged", at=at)
        if order.get("amount_delta"):
            changed = int(msg["SoTien"]) + int(order["amount_delta"])
            msg["SoTien"] = str(changed) if isinstance(msg["SoTien"], str) else changed
            msg["MaXacThuc"] = _mac(msg, confirm_fields, st.partners[p["partner"]])
        if order.get("transaction"):
            msg["MaGiaoDich"] = str(order["transaction"])
            msg["MaXacThuc"] = _mac(msg, confirm_fields, st.partners[p["partner"]])
        copies = int(order.get("copies", 1))
        results = send_copies(lambda: post_confirm(p, msg), copies, concurrent=bool(order.get("concurrent")))
        return JSONResponse({"answers": results})

    @app.get("/_sandbox/payments")
    def payments() -> dict[str, Any]:
        return {"items": list(st.payments.values()), "answers": st.answers}

    @app.post("/_sandbox/statement")
    async def statement_drift(request: Request) -> dict[str, Any]:
        """Make drift for reconciliation: {extra: [line...]} adds lines hub never saw; {hide: [ref...]} drops."""
        order = await request.json()
        with st.plock:
            st.extra_lines.extend(order.get("extra", []))
            st.hidden.update(order.get("hide", []))
        return {"extra": len(st.extra_lines), "hidden": sorted(st.hidden)}

    return app
