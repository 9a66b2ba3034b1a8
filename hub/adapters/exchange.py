"""What an adapter reports of each outbound exchange, for the append-only exchange record."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    peer: str
    operation: str
    correlation_id: str
    request_digest: str
    response_digest: str | None
    duration_ms: float
    outcome: str  # ok | retryable | permanent
    error_code: str | None = None


ExchangeHook = Callable[[ExchangeRecord], None]


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()
