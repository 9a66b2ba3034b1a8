"""Sandbox of a provincial one-stop system (hệ thống một cửa điện tử): receives dossiers filed on the national
portal (`createdossierfromdvcqg`) and status changes, validated against contracts/one_stop, idempotent by the
`Idempotency-Key` header, with fault knobs. `OneStopClient` plays the one-stop's side towards hub."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from hub.adapters.http import parse_json
from hub.sandbox import contracts
from hub.sandbox.common import PeerState, add_control_routes, apply_faults


@dataclass
class OneStopState(PeerState):
    dossiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    apply_lock: threading.Lock = field(default_factory=threading.Lock)


def create_app(state: OneStopState | None = None) -> FastAPI:
    st = state or OneStopState()
    app = FastAPIOffline(redoc_url=None, title="Sandbox: provincial one-stop system", docs_url="/_sandbox/docs")
    app.state.peer = st
    add_control_routes(app, st, extra_reset=st.dossiers.clear)

    async def receive(request: Request, operation: str, schema: str) -> Response:
        fault = await apply_faults(st)
        if fault is not None:
            return fault
        key = request.headers.get("Idempotency-Key")
        try:
            body = parse_json(await request.body())
        except (ValueError, UnicodeDecodeError, ClientDisconnect):
            body = None
        problems = ["not JSON"] if body is None else contracts.errors(schema, body)
        if problems:
            reply = {"error_code": 3, "message": "Dữ liệu không hợp lệ: " + "; ".join(problems)}
            st.record(operation, key, body, "rejected", reply)
            return JSONResponse(reply)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with st.apply_lock:
            if key is not None and key in st.replies_by_key:
                seen_digest, seen_reply = st.replies_by_key[key]
                outcome = "duplicate" if seen_digest == digest else "rejected"
                reply = seen_reply if outcome == "duplicate" else {"error_code": 6, "message": "key reused"}
                st.record(operation, key, body, outcome, reply)
                return JSONResponse(reply)
            if operation == "createdossierfromdvcqg":
                code = body["data"]["MaHoSo"]
                st.dossiers[code] = {
                    "data": body["data"],
                    "status": body["data"]["TrangThaiHoSo"],
                    "history": [],
                }
            else:
                code = body["MaHoSo"]
                if code not in st.dossiers:
                    reply = {"error_code": 5, "message": f"Không tìm thấy hồ sơ {code}"}
                    st.record(operation, key, body, "rejected", reply)
                    return JSONResponse(reply)
                st.dossiers[code]["status"] = body["TrangThaiHoSo"]
                st.dossiers[code]["history"].append(body)
            reply = {"error_code": 0, "message": "Thành công"}
            if key is not None:
                st.replies_by_key[key] = (digest, reply)
            st.record(operation, key, body, "applied", reply)
        return JSONResponse(reply)

    @app.post("/api/createdossierfromdvcqg")
    async def create_dossier(request: Request) -> Response:
        return await receive(request, "createdossierfromdvcqg", "one_stop/createdossierfromdvcqg.request.schema.json")

    @app.post("/api/status")
    async def status(request: Request) -> Response:
        return await receive(request, "status", "one_stop/status.request.schema.json")

    @app.get("/_sandbox/dossiers")
    def dossiers() -> dict[str, Any]:
        return {"count": len(st.dossiers), "statuses": {c: d["status"] for c, d in st.dossiers.items()}}

    return app


# ---- the one-stop's side towards hub: realistic civil-status dossiers (hộ tịch, commune level) ----

PROCEDURES = [
    ("1.001193", "Thủ tục đăng ký khai sinh", "Đăng ký khai sinh cho con: {child}"),
    ("1.000656", "Thủ tục đăng ký khai tử", "Đăng ký khai tử cho: {child}"),
    ("1.000894", "Thủ tục đăng ký kết hôn", "Đăng ký kết hôn giữa {owner} và {child}"),
    ("2.000635", "Thủ tục cấp bản sao trích lục hộ tịch", "Trích lục khai sinh cho {owner}"),
    ("1.004873", "Thủ tục cấp Giấy xác nhận tình trạng hôn nhân", "Xác nhận tình trạng hôn nhân của {owner}"),
    ("2.000815", "Thủ tục chứng thực bản sao từ bản chính", "Chứng thực bản sao giấy tờ của {owner}"),
]
FAMILY = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
]
MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Đức", "Thu", "Hồng", "Quang", "Thanh", "Gia"]
GIVEN = ["An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Khang", "Linh", "Mai", "Nam", "Phúc", "Quyên", "Sơn", "Thảo",
         "Trang", "Vy", "Yến", "Hải", "Tâm", "Hương"]  # fmt: skip
VN_OFFSET = timedelta(hours=7)


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"


def _national(moment: datetime) -> str:
    return (moment.astimezone(UTC) + VN_OFFSET).strftime("%Y%m%d%H%M%S")


@functools.cache
def _catalogue_fees() -> dict[str, list[dict[str, Any]]]:
    """Each procedure's fees as the portal's catalogue (the sandbox's, from contracts/) lists them."""
    data = contracts.load_json("national_portal/data/procedures.json")["data"]
    return {p["MaTTHC"]: list(p.get("PhiLePhi") or []) for p in data}


def make_dossier(
    agency: str,
    seq: int,
    rng: random.Random,
    *,
    status: int = 2,
    when: datetime | None = None,
    procedure: str | None = None,
) -> dict[str, Any]:
    """A realistic dossier as the one-stop system would file it (DongBoHoSoMC shape), its fees (DanhSachLePhi) those
    of the procedure in the portal's catalogue — which hub checks a payment against. `procedure`: a MaTTHC of
    PROCEDURES (else one at random)."""
    when = when or datetime.now(UTC)
    code, name, summary = next(p for p in PROCEDURES if p[0] == procedure) if procedure else rng.choice(PROCEDURES)
    fees = [
        {"TenPhiLePhi": f["TenPhiLePhi"], "MaPhiLePhi": f"LP{i + 1:02d}", "HinhThucThu": 1, "Gia": int(f["Gia"])}
        for i, f in enumerate(_catalogue_fees().get(code, []))
    ]
    owner = _name(rng)
    local_day = (when + VN_OFFSET).strftime("%y%m%d")
    century_sex = rng.choice("0123")
    year = rng.randint(60, 99) if century_sex in "01" else rng.randint(0, 6)
    return {
        "MaHoSo": f"{agency}-{local_day}-{seq:04d}",
        "MaTTHC": code,
        "TenTTHC": name,
        "MaLinhVuc": "HT",
        "TenLinhVuc": "Hộ tịch",
        "KenhThucHien": rng.choice([1, 2]),
        "ChuHoSo": owner,
        "SoGiayToChuHoSo": f"079{century_sex}{year:02d}{rng.randint(0, 999_999):06d}",
        "LoaiDoiTuong": 1,
        "SoDienThoai": f"09{rng.randint(0, 99_999_999):08d}",
        "TrichYeuHoSo": summary.format(owner=owner, child=_name(rng)),
        "NgayTiepNhan": _national(when),
        "NgayHenTra": _national(when + timedelta(days=3)),
        "TrangThaiHoSo": status,
        "DonViXuLy": "UBND phường Bến Nghé",
        "DanhSachLePhi": fees,
        "DuocThanhToanTrucTuyen": 1 if any(f["Gia"] for f in fees) else 0,
    }


def make_progress(code: str, status: int, note: str, *, when: datetime | None = None) -> dict[str, Any]:
    when = when or datetime.now(UTC)
    return {
        "MaHoSo": code,
        "NguoiXuLy": "Lê Văn Tâm",
        "ChucDanh": "Công chức Tư pháp - Hộ tịch",
        "ThoiDiemXuLy": _national(when),
        "PhongBanXuLy": "Bộ phận Tư pháp - Hộ tịch",
        "NoiDungXuLy": note,
        "TrangThai": status,
    }


class OneStopClient:
    """Posts dossiers and progress to hub the way a provincial one-stop system would."""

    def __init__(self, hub_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.http = httpx.Client(base_url=hub_url, headers={"X-API-Key": api_key}, timeout=timeout)

    def file(self, dossier: dict[str, Any], key: str) -> httpx.Response:
        return self.http.post("/v1/dossiers", json=dossier, headers={"Idempotency-Key": key})

    def progress(self, step: dict[str, Any], key: str) -> httpx.Response:
        return self.http.post(f"/v1/dossiers/{step['MaHoSo']}/progress", json=step, headers={"Idempotency-Key": key})

    def close(self) -> None:
        self.http.close()
