"""zeep client of the population database: WSDL from contracts/, explicit connect/read timeouts, zeep's XML
hardening on (no DTDs, no entities, no external resources, no huge trees), a cap on the reply's size, faults and
not-found translated at the boundary, and a zeep plugin that records every exchange (digests and timing, never
the content).

zeep posts through `PooledTransport`: zeep's own transport goes through requests, whose per-call machinery
(session merge, hooks, adapters) costs more CPU than the whole exchange with a register on the same network;
urllib3's connection pool underneath it does the same HTTP for about a third of that."""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
import zeep
import zeep.exceptions
from lxml import etree
from requests.structures import CaseInsensitiveDict
from zeep.helpers import serialize_object
from zeep.plugins import Plugin
from zeep.transports import Transport

from hub.adapters.errors import (
    AskedToWait,
    PeerAuthFailed,
    PeerError,
    PeerProtocolError,
    PeerRejected,
    PeerTimeout,
    PeerUnavailable,
    SharedWaits,
)
from hub.adapters.exchange import ExchangeHook, ExchangeRecord, digest
from hub.adapters.http import (
    ReplyTooLarge,
    post_once_more_if_dropped,
    read_capped,
    retry_after,
    unavailable,
    verified_pool,
)
from hub.adapters.population.base import PEER, CitizenLookup

TNS = "http://dancuquocgia.bca"  # the request's and the fault detail's namespace (contracts/population)
BINDING = f"{{{TNS}}}CongDanBinding"
OPERATION = "TraCuuThongTinCongDan"
MAX_REPLY_BYTES = 2 * 1024 * 1024  # a citizen's record is a few kB; anything this big is not a reply


class PooledTransport(Transport):
    """zeep's transport, posting through a urllib3 connection pool: no retries (but once on a connection dropped
    before any answer, signed afresh: `post_once_more_if_dropped`), no redirects, explicit timeouts,
    a cap on the reply's size, and the HTTP status of the calling thread's last reply kept (zeep hides it when it
    raises a Fault). The WSDL is loaded by zeep's own machinery, from the local file."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        tls: ssl.SSLContext | None = None,
        sign_in: Callable[[], dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(timeout=connect_timeout)
        self._sign_in = sign_in
        self._headers = dict(headers or {})  # sent with every request as they are (X-Road-Client, ApiKey)
        self.session.trust_env = False  # no proxies or .netrc picked up from the environment
        self._pool = verified_pool(max_connections, num_pools=4, tls=tls)
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._local = threading.local()

    @property
    def last_status(self) -> int | None:
        return getattr(self._local, "status", None)

    @property
    def last_retry_after(self) -> str | None:
        """The Retry-After header of this thread's last reply, if it had one."""
        return getattr(self._local, "retry_after", None)

    def reset(self) -> None:
        self._local.status = None
        self._local.retry_after = None

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        sign_in, fixed = self._sign_in, {**headers, **self._headers}
        reply = post_once_more_if_dropped(
            self._pool,
            address,
            message,
            (lambda: {**fixed, **sign_in()}) if sign_in is not None else (lambda: fixed),
            self._timeout,
        )
        self._local.status = reply.status
        self._local.retry_after = reply.headers.get("Retry-After")
        content = read_capped(reply, MAX_REPLY_BYTES)
        response = requests.Response()  # the shape zeep reads a reply from
        response.status_code = reply.status
        response._content = content
        response.headers = CaseInsensitiveDict(reply.headers)
        response.url = address
        return response

    def close(self) -> None:
        self._pool.clear()
        self.session.close()


@dataclass(frozen=True)
class Credentials:
    """The register's sign-in as integration code of systems in service sends it (contracts/README.md): HTTP Basic
    with the username and, for password, SHA-256 (hex) of the service URL, the username, the request's Unix time
    (seconds, or milliseconds: `millis`) and the secret key, that time also in a `timestamp` header. Each request
    is signed at its own time, so a captured one is refused once the register's window has passed; the secret
    itself never travels."""

    username: str
    secret: str
    service_url: str
    millis: bool = False  # the time in milliseconds, as a newer integration writes it, not in seconds

    def headers(self) -> dict[str, str]:
        now = int(time.time() * 1000) if self.millis else int(time.time())
        return sign_in_headers(self.username, self.secret, self.service_url, now)


def sign_in_headers(username: str, secret: str, service_url: str, timestamp: int) -> dict[str, str]:
    proof = hashlib.sha256(f"{service_url}{username}{timestamp}{secret}".encode()).hexdigest()
    basic = base64.b64encode(f"{username}:{proof}".encode()).decode("ascii")
    return {"Authorization": f"Basic {basic}", "timestamp": str(timestamp)}


class ExchangeRecorder(Plugin):
    """Keeps the SHA-256 of the last request and reply envelopes of the calling thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def reset(self) -> None:
        self._local.request = None
        self._local.reply = None

    def egress(self, envelope: Any, http_headers: Any, operation: Any, binding_options: Any) -> Any:
        self._local.request = digest(etree.tostring(envelope))
        return envelope, http_headers

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> Any:
        self._local.reply = digest(etree.tostring(envelope))
        return envelope, http_headers

    @property
    def digests(self) -> tuple[str, str | None]:
        return getattr(self._local, "request", None) or "", getattr(self._local, "reply", None)


def _clean(value: Any) -> Any:
    """zeep's objects as plain dicts and lists, without empty values, text in NFC (precomposed, TCVN 6909:2001:
    what hub hands on is written one way, whichever way the register stored it)."""
    if isinstance(value, str):
        return (
            value if value.isascii() or unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)
        )
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class PopulationClient:
    def __init__(
        self,
        address: str,
        *,
        wsdl: str | Path,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_connections: int = 16,
        shared_waits: SharedWaits | None = None,
        tls: ssl.SSLContext | None = None,
        integration: str | None = None,
        credentials: Credentials | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """`shared_waits`: where the cluster's processes tell each other the register's Retry-After;
        `integration`: MaTichHop, the code the register's operator gave this integration (sent when set);
        `credentials`: the register's sign-in, sent with every request (`Credentials.headers`); `headers`: sent
        with every request as they are — hub's `X-Road-Client` identifier on the national data-exchange
        platform (NDXP, X-Road), an `ApiKey` its gateway issued."""
        transport = PooledTransport(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            tls=tls,
            sign_in=credentials.headers if credentials is not None else None,
            headers=headers,
        )
        self._transport = transport
        settings = zeep.Settings(
            strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        self._recorder = ExchangeRecorder()
        client = zeep.Client(str(wsdl), transport=transport, settings=settings, plugins=[self._recorder])
        self._service = client.create_service(BINDING, address)
        self._integration = integration or None
        self._waits = AskedToWait(shared_waits)  # the register asked hub to wait (Retry-After): fail at once until then

    def close(self) -> None:
        self._transport.close()

    def look_up(
        self, query: CitizenLookup, *, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, Any] | None:
        self._waits.check(PEER)  # the register said when to come back: not before (nothing sent, nothing recorded)
        self._recorder.reset()
        self._transport.reset()
        started = time.perf_counter()

        def report(outcome: str, code: str | None) -> None:
            if on_exchange is not None:
                request_digest, reply_digest = self._recorder.digests
                on_exchange(
                    ExchangeRecord(
                        PEER,
                        OPERATION,
                        correlation_id,
                        request_digest,
                        reply_digest,
                        (time.perf_counter() - started) * 1000,
                        outcome,
                        code,
                    )
                )

        try:
            reply = self._call(query)
        except PeerError as exc:
            report("retryable" if exc.retryable else "permanent", exc.code)
            self._waits.note(PEER, exc)
            raise
        report("ok", None)
        return reply

    def _unavailable(self, status: int) -> PeerUnavailable:
        """The register answered "not now" at the HTTP level, with how long to wait when it said (Retry-After)."""
        return unavailable(PEER, f"{OPERATION}: HTTP {status}", retry_after(self._transport.last_retry_after))

    def _call(self, query: CitizenLookup) -> dict[str, Any] | None:
        try:
            result = self._service[OPERATION](
                MaYeuCau=query.request_id,
                MaDVC=query.service,
                MaTichHop=self._integration,
                MaCanBo=query.officer,
                MaDonVi=query.agency,
                SoDinhDanh=query.personal_id,
                HoVaTen=query.full_name,
                NgayThangNamSinh={"NgayThangNam": query.birth_date} if query.birth_date else None,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # refused: a subclass of ConnectTimeoutError in urllib3
            raise PeerUnavailable(PEER, f"{OPERATION}: {exc.__class__.__name__}") from None
        except urllib3.exceptions.TimeoutError:
            raise PeerTimeout(PEER, f"{OPERATION} timed out") from None
        except urllib3.exceptions.HTTPError as exc:  # reset, closed mid-reply, bad status line
            raise PeerUnavailable(PEER, f"{OPERATION}: {exc.__class__.__name__}") from None
        except ReplyTooLarge as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: {exc}") from None
        except zeep.exceptions.Fault as fault:
            status = self._transport.last_status
            if status in (408, 429, 502, 503, 504):  # a proxy's or server's "unavailable" page, not a SOAP Fault
                raise self._unavailable(status) from None
            raise _translate_fault(fault) from None
        except zeep.exceptions.TransportError as exc:
            status = int(exc.status_code or 0)
            if status in (408, 429, 502, 503, 504):
                raise self._unavailable(status) from None
            if status in (401, 403):  # the register (or the LGSP before it) refused hub's sign-in
                raise PeerAuthFailed(PEER, f"{OPERATION}: HTTP {status}", code="population_not_authorized") from None
            if 400 <= status < 500:
                raise PeerRejected(PEER, f"{OPERATION}: HTTP {status}", code="peer_http_4xx") from None
            raise PeerError(PEER, f"{OPERATION}: HTTP {status}", code="peer_http_5xx") from None
        except (zeep.exceptions.DTDForbidden, zeep.exceptions.EntitiesForbidden) as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: hostile reply refused: {exc.__class__.__name__}") from None
        except (zeep.exceptions.XMLSyntaxError, zeep.exceptions.XMLParseError, etree.XMLSyntaxError) as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: reply is not well-formed XML: {exc}") from None
        except (zeep.exceptions.ValidationError, zeep.exceptions.Error) as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: reply breaks the contract: {exc}") from None
        # the reply is CongdanCollection itself (no MaYeuCau echoed): only the records of the ID asked for are
        # taken below, whatever else a confused register or proxy sent
        # zeep hands a body element with one child over as that child's value: here the list of CongDan
        people = result if isinstance(result, list) else [] if result is None else result["CongDan"]
        matches = [_clean(serialize_object(p, dict)) for p in people or []]
        matches = [m for m in matches if m.get("SoDinhDanh") == query.personal_id]
        if len(matches) > 1:
            raise PeerProtocolError(PEER, f"{OPERATION}: {len(matches)} records for one personal ID")
        return matches[0] if matches else None


def _translate_fault(fault: zeep.exceptions.Fault) -> PeerError:
    code = str(fault.code or "")
    error_code = None
    if isinstance(fault.detail, etree._Element):  # zeep passes raw bytes when the reply had no Fault element
        found = fault.detail.find(f".//{{{TNS}}}MaLoi")
        error_code = found.text if found is not None else None
    detail = f"{OPERATION}: SOAP fault {code} {error_code or ''}: {fault.message}"
    if error_code == "02":
        return PeerAuthFailed(PEER, detail, code="population_not_authorized")
    if code.endswith("Client"):
        return PeerRejected(PEER, detail, code="population_invalid_request")
    return PeerError(PEER, detail, code="population_fault")
