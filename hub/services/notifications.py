"""Citizen notifications: which status changes notify, and the Vietnamese texts. Rendered when the status event
is written (so a resend after a crash sends the same words) and delivered through the outbox like every other
message: once per event and channel, however often other deliveries of that event are replayed."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import VN_TZ, parse_national
from hub.domain.money import dong
from hub.sync.outbox import NOTICES

log = logging.getLogger("hub.notifications")
EMAIL, SMS = NOTICES  # the outbox's destinations for them (a dead notice holds no later one back, ADR 0045)
BY_STATUS = {2: "received", 3: "refused", 5: "supplement", 6: "payment", 9: "result", 10: "result"}
# The notices that ask the citizen to act, and the status in which the dossier asks it: one still waiting to go
# when the dossier has left that status (the papers came, the fee was paid — while the gateway was down, or before
# an operator replayed its dead letter) is not sent. The others (received, refused, paid, result) stay true.
ASKING = {"notify.supplement": 5, "notify.payment": 6, "notify.payment_expired": 6}
_MOVED_ON = text(
    "SELECT d.status FROM outbox o JOIN dossiers d ON d.id = o.dossier_id WHERE o.id = :id AND EXISTS "
    "(SELECT 1 FROM status_events e WHERE e.dossier_id = o.dossier_id AND e.seq > o.seq AND e.status <> :asked)"
)


def moved_on(sessions: sessionmaker[Session], outbox_id: int, operation: str) -> int | None:
    """The dossier's status now, if the notice (outbox row `outbox_id`) asks the citizen for something the dossier
    has stopped asking since: a later event of the dossier left the status the notice was written in (and a
    later return to it — a second fee — has a notice of its own). None: the notice is still true."""
    asked = ASKING.get(operation)
    if asked is None:
        return None
    with sessions() as s:
        status: int | None = s.execute(_MOVED_ON, {"id": outbox_id, "asked": asked}).scalar()
    return status


def _day(value: Any) -> str:
    try:
        moment: datetime = parse_national(str(value))
    except Exception:  # noqa: BLE001 - a missing or odd date: say nothing rather than something wrong
        return "—"
    return moment.astimezone(VN_TZ).strftime("%d/%m/%Y")


def kind_for(previous: int | None, new: int, override: str | None = None) -> str | None:
    """The notification a status change calls for, if any (results notify once: 9, or 10 without 9 before)."""
    if override is not None:
        return override
    if previous == new:
        return None
    if new == 10 and previous == 9:
        return None
    return BY_STATUS.get(new)


def render(kind: str, data: dict[str, Any], note: str | None = None, amount: int | None = None) -> tuple[str, str, str]:
    """(email subject, email body, SMS text) in Vietnamese. `amount`: the sum asked, when not the dossier's fees."""
    code = data.get("MaHoSo", "")
    name = data.get("ChuHoSo") or "Ông/Bà"
    procedure = data.get("TenTTHC") or data.get("MaTTHC") or ""
    if amount is None:
        amount = sum(int(f.get("Gia", 0)) for f in data.get("DanhSachLePhi") or [] if isinstance(f.get("Gia"), int))
    fees = dong(amount)
    lines = {
        "received": (
            f"Hồ sơ {code} đã được tiếp nhận",
            f"Hồ sơ {code} ({procedure}) đã được tiếp nhận. Ngày hẹn trả kết quả: {_day(data.get('NgayHenTra'))}.",
        ),
        "refused": (
            f"Hồ sơ {code} không được tiếp nhận",
            f"Hồ sơ {code} ({procedure}) không được tiếp nhận. Lý do: {note or 'xem chi tiết trên Cổng Dịch vụ công'}.",
        ),
        "supplement": (
            f"Hồ sơ {code} cần bổ sung giấy tờ",
            f"Hồ sơ {code} cần bổ sung, hoàn thiện: {note or 'xem chi tiết trên Cổng Dịch vụ công'}.",
        ),
        "payment": (
            f"Hồ sơ {code}: đề nghị nộp phí, lệ phí",
            f"Hồ sơ {code} cần nộp phí, lệ phí {fees} đồng. Vui lòng thanh toán trực tuyến trên Cổng Dịch vụ công.",
        ),
        "payment_expired": (
            f"Hồ sơ {code}: yêu cầu thanh toán đã hết hạn",
            f"Yêu cầu thanh toán phí, lệ phí {fees} đồng của hồ sơ {code} đã hết hạn mà chưa được thanh toán. "
            "Hồ sơ vẫn chờ nộp phí, lệ phí: vui lòng thanh toán lại trên Cổng Dịch vụ công.",
        ),
        "paid": (
            f"Hồ sơ {code}: đã nhận thanh toán",
            f"Đã nhận thanh toán phí, lệ phí của hồ sơ {code}. Hồ sơ tiếp tục được xử lý.",
        ),
        "result": (
            f"Hồ sơ {code} đã có kết quả",
            f"Hồ sơ {code} ({procedure}) đã có kết quả. Ngày hẹn trả: {_day(data.get('NgayHenTra'))}.",
        ),
    }
    subject, text = lines[kind]
    body = f"Kính gửi {name},\n\n{text}\n\nTra cứu hồ sơ bằng mã {code} trên Cổng Dịch vụ công quốc gia.\n"
    return subject, body, text[:612]


def email_address(value: Any) -> str | None:
    """The citizen's email address if it is one mailbox (local@dotted.domain: no second recipient after a comma, no
    display name, no line break that would start another header); else None. An address the mail server would
    refuse — or one that would add recipients — is not written to: it would be a dead letter at every status."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > 254 or any(c in text for c in ' \t\r\n,;<>"()[]\\'):
        return None
    local, at, domain = text.rpartition("@")
    labels = domain.split(".")
    if not at or not local or "@" in local or len(local) > 64 or len(labels) < 2 or not all(labels):
        return None
    return text


def phone_number(value: Any) -> str | None:
    """The citizen's mobile number as the SMS gateway takes it (0… or +84…, spaces, dots, dashes and brackets left
    out; 84… read as +84…), or None when it is not one."""
    digits = re.sub(r"[\s.\-()]", "", value) if isinstance(value, str) else ""
    if re.fullmatch(r"84[0-9]{9,10}", digits):
        digits = "+" + digits
    return digits if re.fullmatch(r"(\+84|0)[0-9]{9,10}", digits) else None


def outbox_payloads(
    kind: str, data: dict[str, Any], channels: tuple[str, ...], note: str | None = None, amount: int | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """(destination, operation, payload) for each channel the citizen can be reached on: a contact that is not a
    usable address or number is left out (said in the log, without it)."""
    subject, body, sms = render(kind, data, note, amount)
    out: list[tuple[str, str, dict[str, Any]]] = []
    for channel, field, usable in ((EMAIL, "Email", email_address), (SMS, "SoDienThoai", phone_number)):
        if channel not in channels or not data.get(field):
            continue
        to = usable(data[field])
        if to is None:
            log.info("citizen not notified: contact unusable", extra={"channel": channel, "MaHoSo": data.get("MaHoSo")})
        elif channel == EMAIL:
            out.append((EMAIL, f"notify.{kind}", {"to": to, "subject": subject, "body": body}))
        else:
            out.append((SMS, f"notify.{kind}", {"to": to, "message": sms}))
    return out
