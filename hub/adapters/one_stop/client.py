"""HTTP client of provincial one-stop systems (the endpoint comes from hub's routing table per agency code)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from hub.adapters.errors import PeerError, PeerRejected
from hub.adapters.exchange import ExchangeHook
from hub.adapters.http import post_json
from hub.adapters.one_stop.base import PEER

# error_code of the one-stop's replies (contracts/one_stop/reply.schema.json): 3 invalid data, 5 unknown dossier,
# 6 idempotency key reused are refusals of the message; anything else non-zero may pass.
PERMANENT = {3: "onestop_invalid_data", 5: "onestop_unknown_dossier", 6: "onestop_idempotency_key_reused"}


class OneStopClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_connections: int = 32,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._http = httpx.Client(
            verify=tls if tls is not None else True,
            trust_env=False,  # as every peer's client: no proxy or CA bundle taken from the environment
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

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
        exchange = post_json(
            self._http,
            f"{endpoint.rstrip('/')}/api/{operation}",
            body,
            peer=PEER,
            operation=operation,
            correlation_id=correlation_id,
            headers={"Idempotency-Key": idempotency_key},
            on_exchange=on_exchange,
        )
        reply = exchange.reply
        code = reply["error_code"]
        if code in PERMANENT:
            raise exchange.fail(
                PeerRejected(
                    PEER, f"{operation}: error_code {code}: {reply.get('message')}", code=PERMANENT[code], reply=reply
                )
            )
        if code != 0:
            raise exchange.fail(
                PeerError(
                    PEER, f"{operation}: error_code {code}: {reply.get('message')}", code="onestop_error", reply=reply
                )
            )
        exchange.report("ok", None)
        return reply
