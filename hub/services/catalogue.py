"""The procedure catalogue: synced from the national portal (LayDanhSachTTHC) into the store; gives each
procedure's time limit in working days (for NgayHenTra) and its fees."""

from __future__ import annotations

import math
import unicodedata
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.exchange import ExchangeHook
from hub.adapters.national_portal import NationalPortal
from hub.domain.dates import utcnow
from hub.domain.errors import DomainError
from hub.domain.identifiers import procedure_code
from hub.store.models import Procedure


@cache
def shipped_codes() -> frozenset[str]:
    from hub.sandbox.contracts import load_json

    return frozenset(str(p["MaTTHC"]) for p in load_json("national_portal/data/procedures.json")["data"])


def known_procedure(session: Session, code: str) -> bool:
    """Whether `code` is a procedure of the catalogue: the synced one once there is one, before that the
    catalogue hub ships (contracts/national_portal/data/procedures.json)."""
    if session.scalar(select(Procedure.code).where(Procedure.code == code)) is not None:
        return True
    if session.scalar(select(Procedure.code).limit(1)) is not None:
        return False
    return code in shipped_codes()


def _folded(text: object) -> str:
    """Lower case without diacritics ("Ngày làm việc" -> "ngay lam viec"), to read a unit however it is written."""
    decomposed = unicodedata.normalize("NFD", str(text).replace("đ", "d").replace("Đ", "D"))
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


def as_contract(item: dict[str, Any]) -> dict[str, Any]:
    """A procedure as the portal's look-ups write it (upper-case names: MATTHC, TENTTHC, LINHVUCTHUCHIEN[],
    CACHTHUCTHUCHIEN[].THOIGIAN[] with THOIGIANGIAIQUYET, DONVITINH and PHILEPHI[]) in this catalogue's shape. The
    time limit is the first one counted in working days ("Ngày làm việc"), in-person channel (KENH 1) first, a part
    day rounded up; a procedure with none is not taken (KeyError: skipped, as any entry breaking the contract) —
    calendar days or hours are not working days, and an appointment date computed from them would be wrong."""
    timings = [
        (channel.get("KENH"), timing)
        for channel in item.get("CACHTHUCTHUCHIEN") or []
        if isinstance(channel, dict)
        for timing in channel.get("THOIGIAN") or []
        if isinstance(timing, dict) and "lam viec" in _folded(timing.get("DONVITINH", ""))
    ]
    timings.sort(key=lambda kt: str(kt[0]) != "1")  # the in-person channel's first, the order kept otherwise
    if not timings:
        raise KeyError("ThoiHanGiaiQuyet: no time limit in working days")
    timing = timings[0][1]
    fees = [
        {"TenPhiLePhi": str(f.get("MOTA") or f.get("MAPHILEPHI") or "Phí, lệ phí"), "Gia": int(float(f["SOTIEN"]))}
        for f in timing.get("PHILEPHI") or []
        if isinstance(f, dict)
    ]
    field: Any = next(iter(item.get("LINHVUCTHUCHIEN") or []), {})
    return {
        **item,
        "MaTTHC": item["MATTHC"],
        "TenTTHC": item["TENTTHC"],
        "MaLinhVuc": str(field.get("MALINHVUC", "")) if isinstance(field, dict) else "",
        "TenLinhVuc": str(field.get("TENLINHVUC", "")) if isinstance(field, dict) else "",
        "ThoiHanGiaiQuyet": math.ceil(float(timing["THOIGIANGIAIQUYET"])),
        "PhiLePhi": fees,
    }


class Catalogue:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def sync(
        self, portal: NationalPortal, *, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, int]:
        """Fetch the portal's catalogue and upsert it. Entries that break the contract are counted, not stored."""
        reply = portal.call(
            "LayDanhSachTTHC", {}, idempotency_key=None, correlation_id=correlation_id, on_exchange=on_exchange
        )
        items = reply.get("data")
        if not isinstance(items, list):
            items = reply.get("result")  # the portal's look-ups answer in `result`, with upper-case names
        if not isinstance(items, list):
            items = []
        stored = skipped = 0
        now = utcnow()
        with self.sessions.begin() as s:
            for given in items:
                try:
                    item = as_contract(given) if isinstance(given, dict) and "MATTHC" in given else given
                    code = procedure_code(item["MaTTHC"])
                    limit = int(item["ThoiHanGiaiQuyet"])
                    fees = [
                        {"TenPhiLePhi": str(f["TenPhiLePhi"]), "Gia": int(f["Gia"])} for f in item.get("PhiLePhi", [])
                    ]
                    name = str(item["TenTTHC"])[:500]
                except (KeyError, TypeError, ValueError, DomainError):  # a bad entry is skipped, not stored
                    skipped += 1
                    continue
                row = s.get(Procedure, code)
                if row is None:
                    s.add(
                        Procedure(code=code, name=name, limit_working_days=limit, fees=fees, data=item, synced_at=now)
                    )
                else:
                    row.name, row.limit_working_days, row.fees, row.data, row.synced_at = name, limit, fees, item, now
                stored += 1
        return {"stored": stored, "skipped": skipped}

    def get(self, code: str) -> dict[str, Any] | None:
        with self.sessions() as s:
            row = s.get(Procedure, code)
            if row is None:
                return None
            return {
                "MaTTHC": row.code,
                "TenTTHC": row.name,
                "ThoiHanGiaiQuyet": row.limit_working_days,
                "PhiLePhi": row.fees,
                "synced_at": row.synced_at.isoformat(),
            }

    def entry(self, code: str) -> dict[str, Any]:
        """The procedure as the portal's catalogue gave it (its own fields: MaLinhVuc, TenLinhVuc, …); {} if unknown."""
        with self.sessions() as s:
            row = s.get(Procedure, code)
            return dict(row.data) if row is not None and isinstance(row.data, dict) else {}

    def all(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            codes = list(s.scalars(select(Procedure.code).order_by(Procedure.code)))
        return [p for c in codes if (p := self.get(c)) is not None]

    def limit_days(self, session: Session, code: str) -> int | None:
        return session.scalar(select(Procedure.limit_working_days).where(Procedure.code == code))
