"""A provincial one-stop system as hub needs it."""

from __future__ import annotations

from typing import Any, Protocol

from hub.adapters.exchange import ExchangeHook

PEER = "one_stop"


class OneStop(Protocol):
    def deliver(
        self,
        endpoint: str,
        operation: str,
        body: dict[str, Any],
        *,
        idempotency_key: str,
        correlation_id: str,
        on_exchange: ExchangeHook | None = None,
    ) -> dict[str, Any]:
        """POST {endpoint}/api/{operation}; the reply on error_code 0, a PeerError otherwise."""
        ...

    def close(self) -> None: ...
