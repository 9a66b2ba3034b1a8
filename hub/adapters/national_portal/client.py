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
from hub.adapters.exchange import ExchangeHook, ExchangeRecord
from hub.adapters.http import JsonExchange, PeerPool, post_json
from hub.adapters.national_portal import codes
from hub.adapters.national_portal.base import PEER
from hub.domain.numbers import whole_number


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
    ) -> JsonExchange:
        """POST to the portal; the caller reports the exchange (`_report`) once it knows what the answer meant."""
        return post_json(
            self._http,
            path,
            body,
            peer=PEER,
            operation=operation,
            correlation_id=correlation_id,
            headers=headers,
            on_exchange=on_exchange,
        )

    @staticmethod
    def _report(exchange: JsonExchange, *, handled: bool = False) -> dict[str, Any]:
        """Record an answered exchange: ok, a refusal (retryable or permanent, by its error_code), or `handled` — a
        refusal the same call answered itself (an expired session renewed, a DongBoHoSoMC sent the other way, a
        look-up's "unknown dossier"), which is the protocol working as meant, not a failure of the portal's (an
        error rate counts it as such at go-live, when many dossiers are sent the wrong way first)."""
        code = exchange.reply["error_code"]
        if code == codes.OK:
            exchange.report("ok", None)
        else:
            stable, retryable = codes.MEANING.get(code, ("portal_error", False))
            exchange.report("handled" if handled else "retryable" if retryable else "permanent", stable)
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
            reply = self._report(
                self._post(
                    self._auth_path,
                    {"username": self._username, "password": self._password},
                    "auth",
                    correlation_id,
                    {},
                    on_exchange,
                )
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
        answers: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """`service` with `payload`; the reply when error_code is 00, else raised as the error_code means.
        `answers`: error codes that answer the question asked (TraCuuHoSo's "unknown dossier") — still raised, but
        on the record as `handled`, not as a failure of the portal's."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        session = self._session or self._authenticate(None, correlation_id, on_exchange)
        renewed = flipped = False
        while True:
            body = {"session": session, "madonvi": self.dstcode, "service": service, **payload}
            exchange = self._post(self._service_path, body, service, correlation_id, headers, on_exchange)
            reply = exchange.reply
            code = reply["error_code"]
            if code == codes.OK:
                return self._report(exchange)
            if code == codes.SESSION_INVALID:
                self._report(exchange, handled=not renewed)
                if renewed:
                    raise PeerError(PEER, f"{service}: session renewal did not help", code="portal_session_invalid")
                session, renewed = self._authenticate(session, correlation_id, on_exchange), True
                continue
            other = None if flipped else _other_way(service, payload, code)
            if code == codes.INVALID_TRANSITION and other is None:
                # asked first whether the portal already holds the status; the refusal is on the record before
                # the look-up's exchanges all the same, and as `handled` when the look-up settled it
                asked: list[ExchangeRecord] = []
                there = None
                try:
                    there = self._already_there(service, payload, correlation_id, asked.append)
                finally:
                    self._report(exchange, handled=there is not None or code in answers)
                    if on_exchange is not None:
                        for rec in asked:
                            on_exchange(rec)
                if there is not None:
                    # the portal refused to move the dossier to the status it already holds it at: an earlier
                    # attempt was applied and its answer lost (a portal that keeps no idempotency keys says so to
                    # the retry), or the dossier was taken over at a status the portal has. Done, in effect.
                    return {
                        "error_code": codes.OK,
                        "message": f"already at status {there} at the portal (it answered: {reply.get('message')})",
                        "already_applied": True,
                    }
            else:
                self._report(exchange, handled=other is not None or code in answers)
            if other is not None:
                # the portal knows the dossier when hub thought it new, or not when hub thought it known: the same
                # dossier once more, the other way (under a key of its own, so that both stay exactly once)
                payload, flipped = other, True
                if idempotency_key:
                    headers = {"Idempotency-Key": f"{idempotency_key}:isUpdating={other['isUpdating']}".lower()}
                continue
            stable, retryable = codes.MEANING.get(code, ("portal_error", False))
            cls = PeerRejected if not retryable else PeerAuthFailed if code == codes.AUTH_FAILED else PeerError
            raise cls(PEER, f"{service}: error_code {code}: {reply.get('message')}", code=stable, reply=reply)

    def _already_there(
        self, service: str, payload: dict[str, Any], correlation_id: str, on_exchange: ExchangeHook | None
    ) -> int | None:
        """The status a refused DongBoHoSoMC or CapNhatTienDoHoSoMC of one dossier moves it to, if the portal
        (asked with TraCuuHoSo) holds the dossier at exactly that status; None otherwise, or if it cannot say."""
        items = payload.get("data")
        if service not in ("DongBoHoSoMC", "CapNhatTienDoHoSoMC") or not isinstance(items, list) or len(items) != 1:
            return None
        item = items[0] if isinstance(items[0], dict) else {}
        code, wanted = item.get("MaHoSo"), item.get("TrangThaiHoSo" if service == "DongBoHoSoMC" else "TrangThai")
        if not isinstance(code, str) or not isinstance(wanted, int) or isinstance(wanted, bool):
            return None
        try:
            seen = self.look_up(code, correlation_id=correlation_id, on_exchange=on_exchange)
        except PeerError:
            return None  # the refusal stands: an operator sees it
        held = whole_number(seen.get("TrangThaiHoSo"), 2) if seen is not None else None
        return wanted if held == wanted else None

    def look_up(
        self, code: str, *, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, Any] | None:
        try:
            # "unknown dossier" is an answer: the reconciliation of a province going live, and one-stop systems
            # deciding isUpdating through /dvcqg, ask about many dossiers the portal has never had — were each a
            # failure on the record, the error rate (the console's, HubPeerErrors) would call a working portal failing
            reply = self.call(
                "TraCuuHoSo", {"MaHoSo": code}, idempotency_key=None, correlation_id=correlation_id,
                on_exchange=on_exchange, answers=frozenset({codes.UNKNOWN_DOSSIER}),
            )  # fmt: skip
        except PeerRejected as exc:
            if exc.code == "portal_unknown_dossier":
                return None
            raise
        data = reply.get("data")
        if not isinstance(data, dict):
            raise PeerProtocolError(PEER, "TraCuuHoSo: reply has no data object", reply=reply)
        return data


def _other_way(service: str, payload: dict[str, Any], code: int) -> dict[str, Any] | None:
    """DongBoHoSoMC's `isUpdating` turned round when the portal's answer says it was wrong: "already exists" (07)
    to a dossier sent as new — one synced before hub took it over, or sent by an earlier attempt whose answer was
    lost (a portal without idempotency keys says so to the retry) — is sent as an update; "unknown dossier" (05) to
    one sent as an update is sent as new. None for anything else."""
    if service != "DongBoHoSoMC" or not isinstance(payload.get("isUpdating"), bool):
        return None
    if code == codes.ALREADY_EXISTS and payload["isUpdating"] is False:
        return {**payload, "isUpdating": True}
    if code == codes.UNKNOWN_DOSSIER and payload["isUpdating"] is True:
        return {**payload, "isUpdating": False}
    return None
