"""The national portal as hub needs it."""

from __future__ import annotations

from typing import Any, Protocol

from hub.adapters.exchange import ExchangeHook

PEER = "national_portal"


class NationalPortal(Protocol):
    def call(
        self,
        service: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None,
        correlation_id: str,
        on_exchange: ExchangeHook | None = None,
        answers: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """Call a service (DongBoHoSoMC, CapNhatTienDoHoSoMC, TraCuuHoSo...). Returns the reply on error_code 0;
        raises a PeerError otherwise (`answers`: error codes that answer the question, recorded as handled)."""
        ...

    def look_up(
        self, code: str, *, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, Any] | None:
        """TraCuuHoSo: the portal's view of a dossier, or None if it does not know it."""
        ...

    def close(self) -> None: ...
