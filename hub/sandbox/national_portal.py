"""Sandbox of the national public-service portal (DVCQG): session auth with `dstcode`, the service calls
DongBoHoSoMC / CapNhatTienDoHoSoMC / TraCuuHoSo, validated against contracts/national_portal, with the status
transition table, idempotency by the `Idempotency-Key` header and runtime fault knobs."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from hub.adapters.http import parse_json
from hub.domain.privacy import same_text
from hub.sandbox import contracts
from hub.sandbox.common import PeerState, add_control_routes, apply_faults

OK = {"error_code": 0, "message": "Thành công"}


def _reply(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error_code": code, "message": message, **extra}


@dataclass
class PortalState(PeerState):
    credentials: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, tuple[float, str]] = field(default_factory=dict)
    dossiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    apply_lock: threading.Lock = field(default_factory=threading.Lock)

    def reset_data(self) -> None:
        self.sessions.clear()
        self.dossiers.clear()


def _as_portal(p: dict[str, Any]) -> dict[str, Any]:
    """A procedure as the portal's look-ups write it (upper-case names, the time limit and fees per channel), as
    one-stop systems in service read it (contracts/README.md)."""
    fees = [
        {"MAPHILEPHI": f"LP{i + 1}", "SOTIEN": float(f["Gia"]), "DONVI": "Đồng", "MOTA": f["TenPhiLePhi"]}
        for i, f in enumerate(p.get("PhiLePhi", []))
    ]
    timing = {"THOIGIANGIAIQUYET": p["ThoiHanGiaiQuyet"], "DONVITINH": "Ngày làm việc", "MOTA": "", "PHILEPHI": fees}
    online = {**timing, "DONVITINH": "Giờ", "THOIGIANGIAIQUYET": 8 * p["ThoiHanGiaiQuyet"]}  # not working days
    return {
        "MATTHC": p["MaTTHC"],
        "TENTTHC": p["TenTTHC"],
        "LINHVUCTHUCHIEN": [{"MALINHVUC": p.get("MaLinhVuc", ""), "TENLINHVUC": p.get("TenLinhVuc", "")}],
        "CACHTHUCTHUCHIEN": [{"KENH": 2, "THOIGIAN": [online]}, {"KENH": 1, "THOIGIAN": [timing]}],
        "TRANGTHAI": 1,
    }


def _transitions() -> dict[int, set[int]]:
    table = contracts.load_json("national_portal/trang_thai_transitions.json")
    return {int(k): set(v) for k, v in table["transitions"].items()}


def create_app(credentials: dict[str, str], state: PortalState | None = None) -> FastAPI:
    """`credentials`: username -> password accepted by /api/auth."""
    st = state or PortalState()
    st.credentials.update(credentials)
    transitions = _transitions()
    catalogue: list[dict[str, Any]] = contracts.load_json("national_portal/data/procedures.json")["data"]
    app = FastAPIOffline(
        redoc_url=None, title="Sandbox: national public-service portal (DVCQG)", docs_url="/_sandbox/docs"
    )
    app.state.peer = st
    add_control_routes(app, st, extra_reset=st.reset_data)

    def answer(reply: dict[str, Any], status_code: int = 200) -> JSONResponse:
        """A reply of the portal's API; with the knob `string_error_codes`, its error_code written as deployed
        portals write it, two digits in a string ("00")."""
        if st.faults.string_error_codes:
            reply = {**reply, "error_code": f"{reply['error_code']:02d}"}
        return JSONResponse(reply, status_code=status_code)

    async def body_of(request: Request) -> Any:
        try:
            return parse_json(await request.body())
        except (ValueError, UnicodeDecodeError, ClientDisconnect):  # a client that gave up is answered nothing
            return None

    @app.post("/api/auth")
    async def auth(request: Request) -> Response:
        fault = await apply_faults(st)
        if fault is not None:
            return fault
        body = await body_of(request)
        dstcode = request.headers.get("dstcode", "")
        if body is None or contracts.errors("national_portal/auth.request.schema.json", body):
            return answer(_reply(3, "Dữ liệu xác thực không hợp lệ"))
        if not dstcode or not same_text(st.credentials.get(body["username"], "\0"), body["password"]):
            st.record("auth", None, {"username": body["username"]}, "rejected", None)
            return answer(_reply(1, "Sai tên đăng nhập, mật khẩu hoặc mã đơn vị"))
        token = secrets.token_urlsafe(24)
        st.sessions[token] = (time.time() + st.faults.session_ttl, dstcode)
        return answer(_reply(0, "Thành công", session=token))

    @app.post("/api/service")
    async def service(request: Request) -> Response:
        fault = await apply_faults(st)
        if fault is not None:
            return fault
        body = await body_of(request)
        key = request.headers.get("Idempotency-Key")
        if not isinstance(body, dict):
            st.record("?", key, None, "rejected", None)
            return answer(_reply(3, "Thông điệp không phải JSON hợp lệ"))
        name = str(body.get("service", "?"))
        session = st.sessions.get(str(body.get("session", "")))
        if session is None or session[0] < time.time():
            reply = _reply(2, "Phiên làm việc không hợp lệ hoặc đã hết hạn")
            st.record(name, key, body, "rejected", reply)
            return answer(reply)
        problems = contracts.errors("national_portal/service.request.schema.json", body)
        if problems:
            reply = _reply(3, "Dữ liệu không hợp lệ: " + "; ".join(problems))
            st.record(name, key, body, "rejected", reply)
            return answer(reply)
        content = {k: v for k, v in body.items() if k != "session"}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        with st.apply_lock:
            if key is not None and key in st.replies_by_key:
                seen_digest, seen_reply = st.replies_by_key[key]
                if seen_digest != digest:
                    reply = _reply(6, "Idempotency-Key đã được dùng cho một thông điệp khác")
                    st.record(name, key, body, "rejected", reply)
                    return answer(reply)
                st.record(name, key, body, "duplicate", seen_reply)
                return answer(seen_reply)
            reply = handle(name, body, key)
            outcome = "applied" if reply["error_code"] == 0 else "rejected"
            if key is not None and outcome == "applied" and name != "TraCuuHoSo":
                st.replies_by_key[key] = (digest, reply)  # only effects are remembered: a refusal may be retried
            st.record(name, key, body, outcome, reply)
        f = st.faults
        if (
            outcome == "applied"
            and f.fail_after_apply_rate
            and secrets.randbelow(10_000) < f.fail_after_apply_rate * 10_000
        ):
            return answer(_reply(99, "sandbox: applied, then failed before answering"), status_code=500)
        return answer(reply)

    def handle(name: str, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        now = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 7 * 3600))
        if name == "DongBoHoSoMC":
            items: list[dict[str, Any]] = body["data"]
            for item in items:
                # a dossier the portal has not seen is taken at the status it is sent in (one-stop systems in
                # service first sync a dossier at whatever status it has reached, ADR 0041); an update of one it
                # has not seen is "not found", and a dossier sent as new that it has is "exists"
                known = st.dossiers.get(item["MaHoSo"])
                if known is None:
                    if body["isUpdating"]:
                        return _reply(5, f"Không tìm thấy hồ sơ {item['MaHoSo']} để cập nhật")
                elif not body["isUpdating"]:
                    return _reply(7, f"Hồ sơ {item['MaHoSo']} đã tồn tại")
                elif item["TrangThaiHoSo"] not in transitions[known["status"]]:
                    return _reply(4, f"Trạng thái {known['status']} không được chuyển sang {item['TrangThaiHoSo']}")
            for item in items:
                known = st.dossiers.setdefault(item["MaHoSo"], {"status": None, "history": [], "progress": []})
                known["data"] = dict(item)  # a copy: what was received stays as it was received
                known["status"] = item["TrangThaiHoSo"]
                known["history"].append({"status": item["TrangThaiHoSo"], "at": now, "service": name, "key": key})
            return dict(OK)
        if name == "CapNhatTienDoHoSoMC":
            steps: list[dict[str, Any]] = body["data"]
            for step in steps:
                known = st.dossiers.get(step["MaHoSo"])
                if known is None:
                    return _reply(5, f"Không tìm thấy hồ sơ {step['MaHoSo']}")
                if step["TrangThai"] not in transitions[known["status"]]:
                    return _reply(4, f"Trạng thái {known['status']} không được chuyển sang {step['TrangThai']}")
            for step in steps:
                known = st.dossiers[step["MaHoSo"]]
                known["status"] = step["TrangThai"]
                known["data"]["TrangThaiHoSo"] = step["TrangThai"]
                known["progress"].append(step)
                known["history"].append({"status": step["TrangThai"], "at": now, "service": name, "key": key})
            return dict(OK)
        if name == "TraCuuHoSo":
            known = st.dossiers.get(str(body["MaHoSo"]))
            if known is None:
                return _reply(5, f"Không tìm thấy hồ sơ {body['MaHoSo']}")
            return _reply(
                0,
                "Thành công",
                data={**known["data"], "TrangThaiHoSo": known["status"], "TienDoXuLy": known["progress"]},
            )
        if name == "LayDanhSachTTHC":
            if st.faults.catalogue_as_portal:
                return _reply(0, "Thành công", result=[_as_portal(p) for p in catalogue])
            return _reply(0, "Thành công", data=catalogue)
        if name == "TraCuuHoSoMoi":
            # Dossiers filed on the portal for an agency (or a prefix ending in '*'): the polling fallback.
            pattern = str(body["MaCoQuan"])
            since = str(body.get("TuNgay", "00000000000000"))
            filed = [
                {**d["data"], "TrangThaiHoSo": d["status"]}
                for code, d in st.dossiers.items()
                if d["history"]
                and d["history"][0]["service"] == "filed"
                and (code.startswith(pattern[:-1]) if pattern.endswith("*") else code.split("-")[0] == pattern)
                and d["data"]["NgayTiepNhan"] >= since
            ]
            return _reply(0, "Thành công", data=filed)
        if name == "LayThuTuc":
            found = next((p for p in catalogue if p["MaTTHC"] == body["MaTTHC"]), None)
            if found is None:
                return _reply(5, f"Không tìm thấy thủ tục {body['MaTTHC']}")
            return _reply(0, "Thành công", data=found)
        return _reply(3, f"Dịch vụ {name} không được hỗ trợ")

    @app.post("/_sandbox/file")
    async def file(request: Request) -> Response:
        """File a dossier at the portal without pushing it (a push that was lost): {dossier}."""
        item = (await request.json())["dossier"]
        problems = contracts.errors("national_portal/dossier.schema.json", item)
        if problems:
            return JSONResponse({"error_code": 3, "message": "; ".join(problems)}, status_code=422)
        with st.apply_lock:
            st.dossiers[item["MaHoSo"]] = {
                "data": item,
                "status": item["TrangThaiHoSo"],
                "progress": [],
                "history": [
                    {"status": item["TrangThaiHoSo"], "at": item["NgayTiepNhan"], "service": "filed", "key": None}
                ],
            }
        return JSONResponse({"filed": item["MaHoSo"]})

    @app.post("/_sandbox/push")
    async def push(request: Request) -> Response:
        """File a dossier at the portal (as a citizen would) and push it to hub: {hub_url, api_key, dossier}.
        With "unchecked": true the dossier is pushed as given, even against the contract (a faulty portal)."""
        order = await request.json()
        item = order["dossier"]
        problems = [] if order.get("unchecked") else contracts.errors("national_portal/dossier.schema.json", item)
        if problems:
            return JSONResponse({"error_code": 3, "message": "; ".join(problems)}, status_code=422)
        if not order.get("unchecked"):  # a faulty message is sent, not filed
            with st.apply_lock:
                known = st.dossiers.setdefault(item["MaHoSo"], {"status": None, "history": [], "progress": []})
                if known["status"] != item["TrangThaiHoSo"]:  # a repeated push is not a new step at the portal
                    known["history"].append(
                        {"status": item["TrangThaiHoSo"], "at": item["NgayTiepNhan"], "service": "filed", "key": None}
                    )
                known["data"] = dict(item)
                known["status"] = item["TrangThaiHoSo"]
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                f"{order['hub_url']}/v1/national/dossiers",
                json=item,
                headers={
                    "X-API-Key": order["api_key"],
                    "Idempotency-Key": f"dvcqg-{item.get('MaHoSo')}-{item.get('TrangThaiHoSo')}",
                },
            )
        return JSONResponse({"hub_status": r.status_code, "hub_reply": r.json()})

    @app.post("/_sandbox/dossiers/{code}/restore")
    async def restore(code: str, request: Request) -> Response:
        """Simulate a restore from an older backup: the dossier goes back to its last step in `status`, and the
        portal forgets the messages of the steps after it (their idempotency keys too): {status}."""
        want = int((await request.json())["status"])
        with st.apply_lock:
            known = st.dossiers.get(code)
            steps = [h["status"] for h in known["history"]] if known else []
            if want not in steps:
                return JSONResponse({"detail": "no such step"}, status_code=404)
            cut = max(i for i, x in enumerate(steps) if x == want) + 1
            for h in known["history"][cut:]:  # type: ignore[index]
                st.replies_by_key.pop(h.get("key") or "", None)
            known["history"] = known["history"][:cut]  # type: ignore[index]
            known["status"] = want  # type: ignore[index]
            known["data"]["TrangThaiHoSo"] = want  # type: ignore[index]
        return JSONResponse({"MaHoSo": code, "status": want})

    @app.post("/_sandbox/dossiers/{code}/forget")
    def forget(code: str) -> Response:
        """Simulate a dossier lost at the portal (and the keys of its messages)."""
        with st.apply_lock:
            known = st.dossiers.pop(code, None)
            for h in known["history"] if known else []:
                st.replies_by_key.pop(h.get("key") or "", None)
        return JSONResponse({"forgotten": known is not None})

    @app.get("/_sandbox/dossiers/{code}")
    def dossier(code: str) -> Response:
        known = st.dossiers.get(code)
        if known is None:
            return JSONResponse({"detail": "unknown dossier"}, status_code=404)
        return JSONResponse(known)

    @app.get("/_sandbox/dossiers")
    def dossiers() -> dict[str, Any]:
        return {"count": len(st.dossiers), "statuses": {code: d["status"] for code, d in st.dossiers.items()}}

    return app
