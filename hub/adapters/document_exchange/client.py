"""Client of the document exchange platform (contracts/document_exchange): `POST /api/edoc/send` with a signed
edXML envelope (contracts/edxml/edxml.xsd) as the body; the reply is JSON with an integer `error_code`. The
platform requires every envelope signed by the sending agency and refuses the rest (codes 1–4, permanent)."""

from __future__ import annotations

from typing import Any

import httpx

from hub.adapters.errors import PeerAuthFailed, PeerError, PeerRejected
from hub.adapters.exchange import ExchangeHook
from hub.adapters.http import post_bytes

PEER = "document_exchange"
OK = 0
# error_code -> (stable code, retryable)
MEANING: dict[int, tuple[str, bool]] = {
    1: ("edoc_not_signed", False),
    2: ("edoc_signature_invalid", False),
    3: ("edoc_invalid_envelope", False),
    4: ("edoc_unknown_receiver", False),
    5: ("edoc_auth_failed", True),  # our key refused: deliveries wait (peer down), they do not die
    99: ("edoc_error", True),
}


class DocumentExchangeClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        self._http = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(read_timeout, connect=connect_timeout), transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def send(
        self, envelope: bytes, *, idempotency_key: str, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, Any]:
        exchange = post_bytes(
            self._http,
            "/api/edoc/send",
            envelope,
            content_type="application/xml",
            peer=PEER,
            operation="send_edoc",
            correlation_id=correlation_id,
            headers={"X-API-Key": self._api_key, "Idempotency-Key": idempotency_key},
            on_exchange=on_exchange,
        )
        code = exchange.reply["error_code"]
        if code == OK:
            exchange.report("ok", None)
            return exchange.reply
        stable, retryable = MEANING.get(code, ("edoc_error", False))
        message = f"send_edoc: error_code {code}: {exchange.reply.get('message')}"
        kind = PeerAuthFailed if code == 5 else PeerError if retryable else PeerRejected
        error = kind(PEER, message, code=stable, reply=exchange.reply)
        raise exchange.fail(error)
