"""Client of the document exchange platform (contracts/document_exchange): `POST /api/edoc/send` with a signed
edXML envelope (contracts/edxml/edxml.xsd) as the body; the reply is JSON with an integer `error_code`. The
platform requires every envelope signed by the sending agency and refuses the rest (codes 1–4, permanent).
Status notices from the receivers: `POST /api/edoc/status/list` gives those waiting, `POST /api/edoc/status/ack`
takes them off the list (contracts/document_exchange/status_list.schema.json)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from hub.adapters.errors import PeerAuthFailed, PeerError, PeerRejected
from hub.adapters.exchange import ExchangeHook
from hub.adapters.http import JsonExchange, post_bytes, post_json

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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._api_key = api_key
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            verify=tls if tls is not None else True,
            trust_env=False,  # as every peer's client: no proxy or CA bundle taken from the environment
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
        return _answered(exchange, "send_edoc", unknown_retryable=False)

    def _status_call(
        self, path: str, body: dict[str, Any], operation: str, correlation_id: str, on_exchange: ExchangeHook | None
    ) -> dict[str, Any]:
        exchange = post_json(
            self._http,
            path,
            body,
            peer=PEER,
            operation=operation,
            correlation_id=correlation_id,
            headers={"X-API-Key": self._api_key},
            on_exchange=on_exchange,
        )
        return _answered(exchange, operation, unknown_retryable=True)

    def statuses(
        self, *, limit: int = 100, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> list[tuple[str, str]]:
        """The status notices waiting for hub: (notice id, envelope as base64), oldest first. An item that is
        not of that shape is returned with what it has (an empty id or envelope): the caller records it."""
        reply = self._status_call("/api/edoc/status/list", {"limit": limit}, "edoc_status_list", correlation_id,
                                  on_exchange)  # fmt: skip
        items = reply.get("items")
        if not isinstance(items, list):
            return []
        out: list[tuple[str, str]] = []
        for item in items:
            if not isinstance(item, dict):
                continue
            notice_id, envelope = item.get("id"), item.get("envelope")
            out.append((notice_id if isinstance(notice_id, str) else "", envelope if isinstance(envelope, str) else ""))
        return out

    def acknowledge(self, ids: list[str], *, correlation_id: str, on_exchange: ExchangeHook | None = None) -> int:
        """Take notices off the waiting list; how many the platform took."""
        reply = self._status_call("/api/edoc/status/ack", {"ids": ids}, "edoc_status_ack", correlation_id,
                                  on_exchange)  # fmt: skip
        taken = reply.get("acknowledged")
        return taken if isinstance(taken, int) else 0


def _answered(exchange: JsonExchange, operation: str, *, unknown_retryable: bool) -> dict[str, Any]:
    """The reply when `error_code` is 0; otherwise the PeerError its code means (a refused key: the peer is down
    for hub, deliveries wait; an unknown code: retryable or not as the caller says), the exchange recorded."""
    code = exchange.reply["error_code"]
    if code == OK:
        exchange.report("ok", None)
        return exchange.reply
    stable, retryable = MEANING.get(code, ("edoc_error", unknown_retryable))
    kind = PeerAuthFailed if code == 5 else PeerError if retryable else PeerRejected
    message = f"{operation}: error_code {code}: {exchange.reply.get('message')}"
    raise exchange.fail(kind(PEER, message, code=stable, reply=exchange.reply))
