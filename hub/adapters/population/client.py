"""zeep client of the population database: WSDL from contracts/, explicit connect/read timeouts, zeep's XML
hardening on (no DTDs, no entities, no external resources, no huge trees), faults and not-found translated at
the boundary, and a zeep plugin that records every exchange (digests and timing, never the content)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests
import zeep
import zeep.exceptions
from lxml import etree
from requests.adapters import HTTPAdapter
from zeep.helpers import serialize_object
from zeep.plugins import Plugin
from zeep.transports import Transport

from hub.adapters.errors import (
    PeerAuthFailed,
    PeerError,
    PeerProtocolError,
    PeerRejected,
    PeerTimeout,
    PeerUnavailable,
)
from hub.adapters.exchange import ExchangeHook, ExchangeRecord, digest
from hub.adapters.population.base import PEER, CitizenLookup

TNS = "urn:vn:csdlqg:dancu:congdan:v1"
BINDING = f"{{{TNS}}}CongDanBinding"
OPERATION = "TraCuuThongTinCongDan"


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
    """zeep's objects as plain dicts and lists, without empty values."""
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
    ) -> None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max_connections, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.trust_env = False  # no proxies or .netrc picked up from the environment
        self._status = threading.local()  # HTTP status of the calling thread's last reply (zeep hides it in faults)

        def remember_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            self._status.code = response.status_code

        session.hooks["response"].append(remember_status)
        self._session = session
        transport = Transport(
            session=session, timeout=connect_timeout, operation_timeout=(connect_timeout, read_timeout)
        )
        settings = zeep.Settings(
            strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        self._recorder = ExchangeRecorder()
        client = zeep.Client(str(wsdl), transport=transport, settings=settings, plugins=[self._recorder])
        self._service = client.create_service(BINDING, address)

    def close(self) -> None:
        self._session.close()

    def look_up(
        self, query: CitizenLookup, *, correlation_id: str, on_exchange: ExchangeHook | None = None
    ) -> dict[str, Any] | None:
        self._recorder.reset()
        self._status.code = None
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
            raise
        report("ok", None)
        return reply

    def _call(self, query: CitizenLookup) -> dict[str, Any] | None:
        try:
            result = self._service[OPERATION](
                HoVaTen=query.full_name,
                SoDinhDanh=query.personal_id,
                NgayThangNam=query.birth_date,
                MaYeuCau=query.request_id,
                MaCanBo=query.officer,
                MaDVC=query.service,
            )
        except requests.Timeout:
            raise PeerTimeout(PEER, f"{OPERATION} timed out") from None
        except requests.ConnectionError as exc:
            raise PeerUnavailable(PEER, f"{OPERATION}: {exc.__class__.__name__}") from None
        except zeep.exceptions.Fault as fault:
            status = getattr(self._status, "code", None)
            if status in (408, 429, 502, 503, 504):  # a proxy's or server's "unavailable" page, not a SOAP Fault
                raise PeerUnavailable(PEER, f"{OPERATION}: HTTP {status}", code="peer_http_unavailable") from None
            raise _translate_fault(fault) from None
        except zeep.exceptions.TransportError as exc:
            status = int(exc.status_code or 0)
            if status in (408, 429, 502, 503, 504):
                raise PeerUnavailable(PEER, f"{OPERATION}: HTTP {status}", code="peer_http_unavailable") from None
            if 400 <= status < 500:
                raise PeerRejected(PEER, f"{OPERATION}: HTTP {status}", code="peer_http_4xx") from None
            raise PeerError(PEER, f"{OPERATION}: HTTP {status}", code="peer_http_5xx") from None
        except (zeep.exceptions.DTDForbidden, zeep.exceptions.EntitiesForbidden) as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: hostile reply refused: {exc.__class__.__name__}") from None
        except (zeep.exceptions.XMLSyntaxError, zeep.exceptions.XMLParseError, etree.XMLSyntaxError) as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: reply is not well-formed XML: {exc}") from None
        except (zeep.exceptions.ValidationError, zeep.exceptions.Error) as exc:
            raise PeerProtocolError(PEER, f"{OPERATION}: reply breaks the contract: {exc}") from None
        if result is None or result["MaYeuCau"] != query.request_id:
            raise PeerProtocolError(PEER, f"{OPERATION}: reply is not for request {query.request_id}")
        people = result["CongdanCollection"]["CongDan"] if result["CongdanCollection"] is not None else []
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
