"""The population database as hub needs it: one citizen look-up per purpose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hub.adapters.exchange import ExchangeHook

PEER = "population"


@dataclass(frozen=True, slots=True)
class CitizenLookup:
    """One request (TraCuuThongTinCongDan). `request_id` is MaYeuCau, `officer` MaCanBo, `service` MaDVC, `agency`
    MaDonVi (the agency the officer asks for)."""

    personal_id: str
    request_id: str
    officer: str
    service: str
    full_name: str | None = None
    birth_date: str | None = None  # yyyyMMdd
    agency: str | None = None

    def __repr__(self) -> str:  # never the ID in clear
        return f"CitizenLookup(request_id={self.request_id!r}, service={self.service!r})"


class PopulationDatabase(Protocol):
    def look_up(
        self, query: CitizenLookup, *, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, Any] | None:
        """The citizen's record (CongDan, as nested dicts without empty values), or None when nobody matches.
        Raises a PeerError when the service fails."""
        ...

    def close(self) -> None: ...
