"""An SMS gateway over HTTP (contracts/sms_gateway): brandname SMS with an Idempotency-Key per message."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from hub.adapters.errors import PeerError, PeerRejected
from hub.adapters.http import json_object, post_checked

PEER = "sms"


class SmsClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        brandname: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.brandname = brandname
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"X-API-Key": api_key},
            trust_env=False,
            verify=tls if tls is not None else True,
        )

    def close(self) -> None:
        self._http.close()

    def send(self, phone: str, message: str, *, message_key: str, correlation_id: str) -> dict[str, Any]:
        body = {"brandname": self.brandname, "phone": phone, "message": message}
        r = post_checked(
            self._http, "/api/sms", body, peer=PEER, correlation_id=correlation_id,
            headers={"Idempotency-Key": message_key},
        )  # fmt: skip
        reply = json_object(r, peer=PEER, what="sms")
        code = reply.get("error_code")
        if code == 0:
            return reply
        if code == 3:
            raise PeerRejected(PEER, f"sms refused: {reply.get('message')}", code="sms_invalid", reply=reply)
        raise PeerError(PEER, f"sms failed: {reply.get('message')}", code="sms_failed", reply=reply)
