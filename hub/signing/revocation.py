"""Revocation evidence for a certificate path: OCSP first (from the certificate's AIA), the CRL (from its
distribution point) otherwise, fetched over HTTP with explicit timeouts and cached until the evidence's
nextUpdate (capped by `max_cache_seconds`). Evidence older than `max_age_seconds` is never used. What was used
is reported, so a validation report says on which evidence it relied."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from hub.adapters.exchange import ExchangeHook, recorded
from hub.adapters.tls import default_context
from hub.logs import correlation_id

MAX_EVIDENCE_BYTES = 5 * 1024 * 1024


@dataclass
class Evidence:
    kind: str  # ocsp | crl
    url: str
    der: bytes
    this_update: datetime
    next_update: datetime | None
    status: str  # good | revoked | unknown | listed (a CRL: the path validator reads it)
    fetched_at: float
    expires_at: float  # monotonic time until which the cache serves it


@dataclass
class Collected:
    crls: list[bytes] = field(default_factory=list)
    ocsps: list[bytes] = field(default_factory=list)
    used: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _urls(cert: x509.Certificate, oid: Any) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return []
    found: list[str] = []
    if isinstance(ext, x509.AuthorityInformationAccess):
        found = [
            d.access_location.value
            for d in ext
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
    elif isinstance(ext, x509.CRLDistributionPoints):
        found = [n.value for dp in ext for n in (dp.full_name or []) if isinstance(n, x509.UniformResourceIdentifier)]
    return [u for u in found if u.startswith(("http://", "https://"))]


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class RevocationSource:
    def __init__(
        self,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_cache_seconds: float = 3600.0,
        max_age_seconds: float = 7 * 86400.0,
        down_seconds: float = 15.0,
        transport: httpx.BaseTransport | None = None,
        on_exchange: ExchangeHook | None = None,
    ) -> None:
        self._on_exchange = on_exchange  # each OCSP / CRL fetch, for the exchange record
        # the process's one context for certifi's bundle (a CA's OCSP and CRL addresses are mostly http://; loading
        # the bundle for a client of its own cost ~40 ms of every Runtime's start)
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            trust_env=False,
            verify=default_context(),
        )
        self.max_cache_seconds = max_cache_seconds
        self.max_age_seconds = max_age_seconds
        # a responder that did not answer (unreachable, timing out, 5xx) is not asked again for `down_seconds`:
        # during its outage each verification answers TRY_LATER at once instead of waiting out the timeouts again
        self.down_seconds = down_seconds
        self._down: dict[str, float] = {}  # url -> monotonic time until which it is not asked
        self._cache: dict[str, Evidence] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # how many HTTP fetches were made (for reports and the benchmark)

    def close(self) -> None:
        self._http.close()

    def collect(self, path: list[x509.Certificate], *, crl_only: bool = False) -> Collected:
        """Evidence for every certificate of `path` (leaf first, anchor last) except the anchor. `crl_only`: the
        CRLs alone, which date each revocation (an OCSP "revoked" answer says nothing of an earlier time)."""
        out = Collected()
        for cert, issuer in itertools.pairwise(path):
            found = self._for(cert, issuer, out, crl_only=crl_only)
            if found is None:
                continue
            ev, cached = found
            (out.ocsps if ev.kind == "ocsp" else out.crls).append(ev.der)
            out.used.append(
                {
                    "certificate": cert.subject.rfc4514_string(),
                    "source": ev.kind,
                    "url": ev.url,
                    "status": ev.status,
                    "this_update": ev.this_update.isoformat(),
                    "next_update": ev.next_update.isoformat() if ev.next_update else None,
                    "cached": cached,
                }
            )
        return out

    def _for(
        self, cert: x509.Certificate, issuer: x509.Certificate, out: Collected, *, crl_only: bool = False
    ) -> tuple[Evidence, bool] | None:
        """(evidence, whether it came from the cache) for one certificate: OCSP first, then the CRL."""
        for url in [] if crl_only else _urls(cert, ExtensionOID.AUTHORITY_INFORMATION_ACCESS):
            key = f"ocsp|{url}|{_fingerprint(issuer)}|{cert.serial_number}"
            ev = self._cached(key)
            if ev is not None:
                return ev, True
            ev = self._store(key, self._ocsp(url, cert, issuer, out))
            if ev is not None:
                return ev, False
        for url in _urls(cert, ExtensionOID.CRL_DISTRIBUTION_POINTS):
            key = f"crl|{url}"
            ev = self._cached(key)
            if ev is not None:
                return ev, True
            ev = self._store(key, self._crl(url, issuer, out))
            if ev is not None:
                return ev, False
        return None

    def _cached(self, key: str) -> Evidence | None:
        with self._lock:
            ev = self._cache.get(key)
        if ev is not None and ev.expires_at > time.monotonic():
            return ev
        return None

    def _store(self, key: str, ev: Evidence | None) -> Evidence | None:
        if ev is not None:
            with self._lock:
                self._cache[key] = ev
        return ev

    def _fresh(self, this_update: datetime, next_update: datetime | None, out: Collected, url: str) -> float | None:
        now = datetime.now(UTC)
        if (now - this_update).total_seconds() > self.max_age_seconds:
            out.problems.append(f"{url}: evidence too old (thisUpdate {this_update.isoformat()})")
            return None
        if next_update is not None and next_update < now:
            out.problems.append(f"{url}: evidence expired (nextUpdate {next_update.isoformat()})")
            return None
        ttl = self.max_cache_seconds
        if next_update is not None:
            ttl = min(ttl, (next_update - now).total_seconds())
        return time.monotonic() + max(0.0, ttl)

    def _get(self, method: str, url: str, out: Collected, **kwargs: Any) -> bytes | None:
        with self._lock:
            left = self._down.get(url, 0.0) - time.monotonic()
        if left > 0:
            out.problems.append(f"{url}: did not answer a moment ago; not asked again for another {left:.0f} s")
            return None
        data, answered = self._fetch(method, url, out, **kwargs)
        if not answered:
            with self._lock:
                self._down[url] = time.monotonic() + self.down_seconds
        return data

    def _fetch(self, method: str, url: str, out: Collected, **kwargs: Any) -> tuple[bytes | None, bool]:
        """(the body of a 200 or None, whether the responder answered at all: not when unreachable, timing out or
        answering HTTP 5xx/429)."""
        self.fetches += 1
        sent = method.encode() + b" " + url.encode() + b"\n" + bytes(kwargs.get("content", b""))
        operation = "ocsp" if method == "POST" else "crl"
        with recorded(self._on_exchange, "pki", operation, correlation_id.get(), sent) as exchange:
            try:
                with self._http.stream(method, url, **kwargs) as r:
                    if r.status_code != 200:
                        out.problems.append(f"{url}: HTTP {r.status_code}")
                        exchange.failed(f"http_{r.status_code}", retryable=r.status_code >= 500)
                        return None, not (r.status_code >= 500 or r.status_code == 429)
                    data = b""
                    for chunk in r.iter_bytes():
                        data += chunk
                        if len(data) > MAX_EVIDENCE_BYTES:
                            out.problems.append(f"{url}: reply larger than {MAX_EVIDENCE_BYTES} bytes")
                            exchange.failed("reply_too_large", retryable=False)
                            return None, True
                    exchange.answered(data)
                    return data, True
            except httpx.HTTPError as exc:
                out.problems.append(f"{url}: {exc.__class__.__name__}")
                exchange.failed("unreachable", retryable=True)
                return None, False

    def _ocsp(self, url: str, cert: x509.Certificate, issuer: x509.Certificate, out: Collected) -> Evidence | None:
        # SHA-1 here only identifies the certificate in the request (RFC 6960 CertID), as responders expect
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()  # noqa: S303
        data = self._get(
            "POST",
            url,
            out,
            content=request.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/ocsp-request"},
        )
        if data is None:
            return None
        try:
            resp = ocsp.load_der_ocsp_response(data)
        except ValueError:
            out.problems.append(f"{url}: not an OCSP response")
            return None
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            out.problems.append(f"{url}: OCSP {resp.response_status.name}")
            return None
        if resp.serial_number != cert.serial_number:
            out.problems.append(f"{url}: OCSP answer for another certificate")
            return None
        expires = self._fresh(resp.this_update_utc, resp.next_update_utc, out, url)
        if expires is None:
            return None
        status = resp.certificate_status.name.lower()
        return Evidence(
            "ocsp", url, data, resp.this_update_utc, resp.next_update_utc, status, time.monotonic(), expires
        )

    def _crl(self, url: str, issuer: x509.Certificate, out: Collected) -> Evidence | None:
        data = self._get("GET", url, out)
        if data is None:
            return None
        try:
            crl = x509.load_der_x509_crl(data)
        except ValueError:
            out.problems.append(f"{url}: not a DER CRL")
            return None
        if crl.issuer != issuer.subject:
            out.problems.append(f"{url}: CRL of another issuer")
            return None
        expires = self._fresh(crl.last_update_utc, crl.next_update_utc, out, url)
        if expires is None:
            return None
        return Evidence("crl", url, data, crl.last_update_utc, crl.next_update_utc, "listed", time.monotonic(), expires)
