"""The national portal's own protocol, spoken by hub to one-stop systems written for the portal (ADR 0040).

A one-stop system that already pushes its dossiers to DVCQG (`auth` with username and password for a session, then
`service` calls DongBoHoSoMC / CapNhatTienDoHoSoMC / TraCuuHoSo / LayThuTuc with that session) is pointed at hub
by changing its adapter URL to hub's `/dvcqg` — no code of its own changes. Its username is its client system's name in
HUB_CLIENTS, its password that client's API key. Behind it, every item is what `POST /v1/dossiers/batch` and
`POST /v1/progress/batch` make of it: validated, authorized for the client's agencies, relayed in order, exactly
once in effect (a repeat without a key is the latest change again, ADR 0021).

Replies are the portal's: HTTP 200 with `error_code` and `message` — written as two digits in a string ("00"), as
the portal writes them and as one-stop systems in service test them (`"00".equals(...)`); readers that parse the
number read 0 alike. A batch with items hub refused answers the first refusal's code (03 invalid data, 04 refused
transition, 05 unknown dossier), naming each refused item; the other items were taken, and sending the whole batch
again changes nothing for them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool

from hub.adapters.http import parse_json
from hub.domain.errors import DomainError
from hub.domain.identifiers import procedure_code
from hub.domain.privacy import derive_key, same_text
from hub.logs import correlation_id
from hub.services.schemas import MAX_BATCH
from hub.settings import ClientSystem, Settings

log = logging.getLogger("hub.dvcqg")
SESSION_SECONDS = 30 * 60  # a session lives half an hour; the portal's clients sign in again on "02"
OK, AUTH_FAILED, SESSION_INVALID, INVALID_DATA, INVALID_TRANSITION, UNKNOWN_DOSSIER, INTERNAL = (
    0, 1, 2, 3, 4, 5, 99,
)  # fmt: skip
SERVICES = frozenset({"auth", "DongBoHoSoMC", "CapNhatTienDoHoSoMC", "TraCuuHoSo", "LayThuTuc"})  # metric labels
# a refused item's problem status -> the portal's error_code
BY_STATUS = {409: INVALID_TRANSITION, 404: UNKNOWN_DOSSIER, 503: INTERNAL}


def reply(code: int, message: str, **extra: Any) -> JSONResponse:
    """The portal's reply. Its message may quote what the client sent (a MaHoSo, a service's name): a lone
    surrogate there, which JSON lets in, is written as its escape, never allowed to break the answer."""
    shown = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error_code": f"{code:02d}", "message": shown, **extra})


def _fingerprint(key: str) -> str:
    """What a session remembers of the key it was opened with: once that key is rotated out, its sessions close."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Sessions:
    """Sessions as signed, timed tokens (no state: any of hub's processes reads any session)."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else b""
        self._settings = settings
        self._serializer = URLSafeTimedSerializer(derive_key(secret, "dvcqg-session").hex(), salt="dvcqg")

    def open(self, client: ClientSystem, key: str) -> str:
        return self._serializer.dumps({"c": client.name, "k": _fingerprint(key)})

    def client(self, token: object) -> ClientSystem | None:
        if not isinstance(token, str) or not token or len(token) > 512:
            return None
        try:
            held = self._serializer.loads(token, max_age=SESSION_SECONDS)
        except (BadSignature, SignatureExpired):
            return None
        if not isinstance(held, dict):
            return None
        found = next((c for c in self._settings.clients if c.name == held.get("c")), None)
        opened_with = str(held.get("k", ""))
        if found is None or not any(same_text(opened_with, _fingerprint(k.get_secret_value())) for k in found.keys):
            return None
        return found


def _refusals(items: list[Any], outcomes: list[Any]) -> list[tuple[int, int, str]]:
    """(place, error_code, why) of each item hub refused."""
    refused: list[tuple[int, int, str]] = []
    for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
        code = item.get("MaHoSo") if isinstance(item, dict) else None
        named = code if isinstance(code, str) else "?"
        if isinstance(outcome, DomainError):
            why = f"[{index}] {named[:64]}: {outcome.code}: {str(outcome)[:300]}"
            refused.append((index, BY_STATUS.get(outcome.status, INVALID_DATA), why))
        elif isinstance(outcome, pydantic.ValidationError):
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in outcome.errors()[:5])
            refused.append((index, INVALID_DATA, f"[{index}] {named[:64]}: invalid fields: {fields}"))
    return refused


def router(rt: Callable[[], Any], sessions: Sessions) -> APIRouter:
    r = APIRouter(prefix="/dvcqg/api", include_in_schema=False)

    def answer(service: str, code: int, message: str, **extra: Any) -> JSONResponse:
        """The reply, counted by service and error_code (hub_dvcqg_replies): HTTP says 200 to every one of them,
        so this is where operators see a one-stop system's refused items or failed sign-ins."""
        rt().dvcqg_replies.labels(service if service in SERVICES else "other", f"{code:02d}").inc()
        return reply(code, message, **extra)

    @r.post("/auth")
    async def auth(request: Request) -> JSONResponse:
        body = _json(await request.body())
        if not isinstance(body, dict) or not isinstance(body.get("username"), str):
            return answer("auth", INVALID_DATA, "Dữ liệu xác thực không hợp lệ (username, password)")
        settings: Settings = request.app.state.settings
        password = body.get("password")
        found = settings.client_for_key(password) if isinstance(password, str) and password else None
        if found is None or not isinstance(password, str) or not same_text(body["username"], found.name):
            # for the operator whose one-stop system was set up with the wrong name or key (never the key itself)
            log.warning("DVCQG-protocol sign-in refused", extra={"username": body["username"][:64]})
            return answer("auth", AUTH_FAILED, "Sai tên đăng nhập hoặc mật khẩu (wrong username or password)")
        return answer("auth", OK, "Thành công", session=sessions.open(found, password))

    @r.post("/service")
    async def service(request: Request) -> JSONResponse:
        body = _json(await request.body())
        if not isinstance(body, dict):
            return answer("other", INVALID_DATA, "Thông điệp không phải JSON hợp lệ (not a JSON object)")
        name = body.get("service")
        label = name if isinstance(name, str) else "other"
        client = sessions.client(body.get("session"))
        if client is None:
            return answer(
                label, SESSION_INVALID, "Phiên làm việc không hợp lệ hoặc đã hết hạn (session invalid or expired)"
            )
        dossiers = rt().dossiers
        if name in ("DongBoHoSoMC", "CapNhatTienDoHoSoMC"):
            items = body.get("data")
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                return answer(label, INVALID_DATA, f"data: từ 1 đến {MAX_BATCH} mục (1 to {MAX_BATCH} items)")
            if name == "DongBoHoSoMC":
                outcomes = await dossiers.sync_many(
                    client,
                    items,
                    idempotency_key=None,
                    correlation_id=correlation_id.get(),
                    updating=_updating(body.get("isUpdating")),
                )
            else:
                outcomes = await dossiers.progress_many(
                    client, items, idempotency_key=None, correlation_id=correlation_id.get()
                )
            refused = _refusals(items, outcomes)
            if not refused:
                return answer(label, OK, "Thành công")
            taken = len(items) - len(refused)
            message = (
                f"{len(refused)}/{len(items)} mục không được nhận, {taken} mục đã được nhận "
                f"({len(refused)} refused, {taken} taken): " + "; ".join(why for _, _, why in refused)
            )
            return answer(label, refused[0][1], message[:4000])
        if name == "TraCuuHoSo":
            code = body.get("MaHoSo", body.get("mahoso"))
            if not isinstance(code, str):
                return answer(label, INVALID_DATA, "MaHoSo: thiếu (missing)")
            try:
                view = await run_in_threadpool(dossiers.get, client, code)
            except DomainError as exc:
                if exc.status == 404:  # (the client may act for its agency: refused before this otherwise)
                    return await _at_portal(rt, code, lambda *a, **kw: answer(label, *a, **kw))
                return answer(
                    label, BY_STATUS.get(exc.status, UNKNOWN_DOSSIER), f"Không tìm thấy hồ sơ {code[:64]}", result=[]
                )
            found = {**view["dossier"], "TrangThaiHoSo": view["TrangThaiHoSo"]}
            # `result` too: the portal's look-ups answer in a `result` array, which one-stop systems read (OpenCPS
            # decides from it whether a dossier is already at the portal)
            return answer(label, OK, "Thành công", data=found, result=[found])
        if name == "LayThuTuc":
            return await _procedure(rt, body, answer)
        return answer(label, INVALID_DATA, f"Dịch vụ {str(name)[:64]} không được hỗ trợ (unsupported service)")

    return r


async def _at_portal(rt: Callable[[], Any], code: str, answer: Callable[..., JSONResponse]) -> JSONResponse:
    """TraCuuHoSo of a dossier hub does not hold, answered by the national portal: one synced there before hub was
    put in between. One-stop systems decide from this look-up whether their next DongBoHoSoMC is an update
    (OpenCPS: isUpdating "True" when `result` is not empty), and hub takes such a dossier over at its status
    (ADR 0041) — answering "not found" would have them send it as new, at a status a new dossier cannot have."""
    from hub.adapters.bulkheads import PeerBusy
    from hub.adapters.errors import PeerError
    from hub.services.dossiers import masked

    runtime, correlation = rt(), correlation_id.get()
    rates = runtime.relay.rates

    def ask() -> dict[str, Any] | None:
        # in the portal's rate (HUB_PEER_RATE_LIMITS, ADR 0049): a one-stop system going live asks this of every
        # dossier it holds; a turn more than a second off is "try again later", as a portal that is busy
        if rates is not None:
            rates.admit("national_portal", "national_portal")
        seen: dict[str, Any] | None = runtime.portal.look_up(
            code, correlation_id=correlation, on_exchange=runtime.record_exchange
        )
        return seen

    try:  # on the portal's own threads (ADR 0046): a portal that hangs holds no other request of hub's
        found = await runtime.bulkheads.run("national_portal", ask)
    except (PeerError, PeerBusy) as exc:
        log.warning("TraCuuHoSo: the national portal could not be asked (%s)", exc.code, extra={"MaHoSo": code[:64]})
        return answer(
            INTERNAL,
            f"Không tra cứu được hồ sơ {code[:64]} tại Cổng DVCQG, thử lại sau (the national portal could not be "
            f"asked: {exc.code}; try again later)",
            result=[],
        )
    if found is None:
        return answer(UNKNOWN_DOSSIER, f"Không tìm thấy hồ sơ {code[:64]}", result=[])
    shown = masked(found)  # as hub shows its own dossiers: the owner's ID masked
    return answer(OK, "Thành công", data=shown, result=[shown])


def _updating(value: Any) -> bool:
    """DongBoHoSoMC's isUpdating as one-stop systems write it: JSON true, or "True" / "true" / "1" (OpenCPS writes
    "True"/"False"); anything else — absent, false, "False", garbage — is not an update."""
    if value is True or (type(value) is int and value == 1):
        return True
    return isinstance(value, str) and value.strip().lower() in ("true", "1")


async def _procedure(rt: Callable[[], Any], body: dict[str, Any], answer: Callable[..., JSONResponse]) -> JSONResponse:
    """LayThuTuc from hub's catalogue (synced from the portal): one-stop systems ask it for a procedure's name and
    field before they push a dossier (OpenCPS fills TenTTHC, MaLinhVuc and TenLinhVuc from it — and would send them
    empty, to be refused, if it were not answered). In `data` as the catalogue holds it, and as the portal's
    look-ups answer, the one item of `result` with the portal's upper-case names (TENTTHC, LINHVUCTHUCHIEN…)."""
    code = body.get("maTTHC", body.get("MaTTHC"))
    if not isinstance(code, str) or not _procedure_code(code):  # checked before the database sees it (a NUL…)
        return answer(
            "LayThuTuc", INVALID_DATA, "maTTHC: thiếu hoặc sai (missing or malformed, e.g. 1.001193)", result=[]
        )
    data = await run_in_threadpool(rt().catalogue.entry, code)
    if not data:
        return answer("LayThuTuc", UNKNOWN_DOSSIER, f"Không tìm thấy thủ tục {code}", result=[])
    portal = {
        "MATTHC": code,
        "TENTTHC": data.get("TenTTHC", ""),
        "LINHVUCTHUCHIEN": [{"MALINHVUC": data.get("MaLinhVuc", ""), "TENLINHVUC": data.get("TenLinhVuc", "")}],
    }
    return answer("LayThuTuc", OK, "Thành công", data=data, result=[{**data, **portal}])


def _procedure_code(code: str) -> bool:
    try:
        procedure_code(code)
    except DomainError:
        return False
    return True


def _json(raw: bytes) -> Any:
    try:
        return parse_json(raw)
    except (ValueError, UnicodeDecodeError):
        return None
