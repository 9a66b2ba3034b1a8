"""HTTP client of the national portal: session auth with `dstcode`, renewal on expiry, explicit timeouts,
errors classified at the boundary, every exchange reported."""

from __future__ import annotations

import ssl
import threading
from typing import Any

from hub.adapters.errors import (
    PeerAuthFailed,
    PeerError,
    PeerProtocolError,
    PeerRejected,
)
from hub.adapters.exchange import ExchangeHook
from hub.adapters.http import PeerPool, post_json
from hub.adapters.national_portal import codes
from hub.adapters.national_portal.base import PEER


class NationalPortalClient:
    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str,
        dstcode: str,
        auth_path: str = "/api/auth",
        service_path: str = "/api/service",
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_connections: int = 32,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._username = username
        self._password = password
        self.dstcode = dstcode
        self._auth_path = auth_path
        self._service_path = service_path
        # the relay's hot path: every delivery is one POST here (urllib3 pool: PeerPool)
        self._http = PeerPool(
            base_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            headers={"dstcode": dstcode},
            tls=tls,
        )
        self._session: str | None = None
        self._session_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------------------------

    def _post(
        self,
        path: str,
        body: dict[str, Any],
        operation: str,
        correlation_id: str,
        headers: dict[str, str],
        on_exchange: ExchangeHook | None,
    ) -> dict[str, Any]:
        exchange = post_json(
            self._http,
            path,
            body,
            peer=PEER,
            operation=operation,
            correlation_id=correlation_id,
            headers=headers,
            on_exchange=on_exchange,
        )
        code = exchange.reply["error_code"]
        if code == codes.OK:
            exchange.report("ok", None)
        else:
            stable, retryable = codes.MEANING.get(code, ("portal_error", False))
            exchange.report("retryable" if retryable else "permanent", stable)
        return exchange.reply

    # -- session ---------------------------------------------------------------------------------------------

    def sign_in(self, *, correlation_id: str, on_exchange: ExchangeHook | None = None) -> None:
        """Sign in afresh (hub check: are hub's credentials accepted?); raises PeerAuthFailed if refused."""
        with self._session_lock:
            self._session = None
        self._authenticate(None, correlation_id, on_exchange)

    def _authenticate(self, stale: str | None, correlation_id: str, on_exchange: ExchangeHook | None) -> str:
        with self._session_lock:
            if self._session is not None and self._session != stale:
                return self._session  # another thread renewed it meanwhile
            reply = self._post(
                self._auth_path,
                {"username": self._username, "password": self._password},
                "auth",
                correlation_id,
                {},
                on_exchange,
            )
            if reply["error_code"] != codes.OK or not isinstance(reply.get("session"), str):
                raise PeerAuthFailed(PEER, f"authentication refused: {reply.get('message')}", reply=reply)
            self._session = reply["session"]
            return self._session

    # -- calls -----------------------------------------------------------------------------------------------

    def call(
        self,
        service: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None,
        correlation_id: str,
        on_exchange: ExchangeHook | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        session = self._session or self._authenticate(None, correlation_id, on_exchange)
        for attempt in (1, 2):
            body = {"session": session, "madonvi": self.dstcode, "service": service, **payload}
            reply = self._post(self._service_path, body, service, correlation_id, headers, on_exchange)
            code = reply["error_code"]
            if code == codes.OK:
                return reply
            if code == codes.SESSION_INVALID and attempt == 1:
                session = self._authenticate(session, correlation_id, on_exchange)
                continue
            stable, retryable = codes.MEANING.get(code, ("portal_error", False))
            cls = PeerRejected if not retryable else PeerAuthFailed if code == codes.AUTH_FAILED else PeerError
            raise cls(PEER, f"{service}: error_code {code}: {reply.get('message')}", code=stable, reply=reply)
        raise PeerError(PEER, f"{service}: session renewal did not help", code="portal_session_invalid")

    def look_up(self, code: str, *, correlation_id: str) -> dict[str, Any] | None:
        try:
            reply = self.call("TraCuuHoSo", {"MaHoSo": code}, idempotency_key=None, correlation_id=correlation_id)
        except PeerRejected as exc:
            if exc.code == "portal_unknown_dossier":
                return None
            raise
        data = reply.get("data")
        if not isinstance(data, dict):
            raise PeerProtocolError(PEER, "TraCuuHoSo: reply has no data object", reply=reply)
        return data
