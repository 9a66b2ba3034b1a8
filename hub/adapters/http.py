"""One JSON-over-HTTP exchange with a peer, the way every adapter needs it: the POST with explicit headers,
transport and HTTP errors translated into PeerErrors, the reply required to be an object with an integer
`error_code`, and the exchange reported once its outcome is known (the caller interprets `error_code`)."""

from __future__ import annotations

import email.utils
import json
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import urllib3

from hub.adapters.errors import PeerError, PeerProtocolError, PeerRejected, PeerTimeout, PeerUnavailable
from hub.adapters.exchange import ExchangeHook, ExchangeRecord, digest
from hub.domain.numbers import whole_number

MAX_REPLY_BYTES = 4 * 1024 * 1024  # a peer's JSON reply is a few kB; anything this big is not a reply
MAX_DOCUMENT_REPLY_BYTES = 32 * 1024 * 1024  # a reply that may be a document (a payment receipt's PDF)
REPLY_TOO_LARGE = "peer_reply_too_large"  # a reply past the cap: the peer's contract broken, but said apart


def _not_json(constant: str) -> Any:
    raise json.JSONDecodeError(f"{constant} is not a JSON number (RFC 8259)", constant, 0)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise json.JSONDecodeError(f"{text[:40]} is past the range of a number (IEEE 754 double)", text, 0)
    return value


def parse_json(data: bytes | str) -> Any:
    """`json.loads` for bytes from outside hub, as RFC 8259 has JSON: Python's parser takes NaN and Infinity (and
    reads 1e400 as infinity), which hub would have stored and sent on as null — they are refused, as any malformed
    input (json.JSONDecodeError, a ValueError). A nesting too deep for the parser (CPython raises RecursionError
    past ~1,000 levels, a 2 kB body) is malformed input like any other: ValueError, never an unhandled error."""
    try:
        return json.loads(data, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class ReplyTooLarge(Exception):
    pass


class PeerPool:
    """POSTs to one peer through a urllib3 connection pool, for the relay's hot path (the national portal): the
    same HTTP as httpx's client for about half its CPU per request (~0.25 vs ~0.5–0.65 ms measured against the
    sandbox; py-spy put httpx at 37% of a relay worker's CPU). Explicit timeouts, no retries, no redirects, no
    proxies from the environment, HTTPS verified against certifi's bundle (as httpx does), a cap on the reply."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._pool = verified_pool(max_connections, num_pools=2, tls=tls)
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)

    def post(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        """(HTTP status, body, its Retry-After header). Raises urllib3's errors (TimeoutError first among its
        HTTPErrors) and ReplyTooLarge; `post_bytes` turns them into PeerErrors."""
        reply = post_once_more_if_dropped(
            self._pool, self.base_url + path, raw, lambda: {**self._headers, **headers}, self._timeout
        )
        return reply.status, read_capped(reply, MAX_REPLY_BYTES), reply.headers.get("Retry-After")

    def close(self) -> None:
        self._pool.clear()


MAX_RETRY_AFTER = 3600.0  # seconds: a peer asking for longer is asked again after an hour all the same


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """The wait a peer asks for in its Retry-After header (RFC 9110 §10.2.3: delta-seconds, or an HTTP-date), in
    seconds within [0, MAX_RETRY_AFTER]; None when it says nothing hub can read."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # RFC 9110's DIGIT: "²" is a digit to str.isdigit, not to float()
        return min(float(value), MAX_RETRY_AFTER) if len(value) <= 10 else MAX_RETRY_AFTER
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def unavailable(peer: str, what: str, wait: float | None) -> PeerUnavailable:
    """A peer's "not now" at the HTTP level; the wait it asked for, if any, is in the error (the relay obeys it)
    and in its text (what operators read in `hub jobs show` and on the console)."""
    said = f"{what} (asked to wait {wait:.0f} s)" if wait is not None else what
    return PeerUnavailable(peer, said, code="peer_http_unavailable", retry_after=wait)


def post_once_more_if_dropped(
    pool: urllib3.PoolManager,
    url: str,
    body: bytes,
    headers: Callable[[], dict[str, str]],
    timeout: urllib3.Timeout,
) -> urllib3.BaseHTTPResponse:
    """A POST through one of hub's urllib3 pools (no retries, no redirects, the reply left to be read capped),
    sent once more on a fresh connection if the first was dropped without an answer ("closed without response"):
    most often a kept-alive connection the peer closed (its idle timeout) just as hub reused it — the request never
    reached it. Every POST hub makes to a peer is safe to repeat (a delivery carries its Idempotency-Key, a look-up
    or a sign-in changes nothing). `headers` is asked again for the second attempt (a signature of its own time).
    A peer that drops the connection again is a peer down: urllib3's error is raised."""
    for attempt in (1, 2):
        try:
            return pool.request(
                "POST",
                url,
                body=body,
                headers=headers(),
                timeout=timeout,
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.ProtocolError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def verified_pool(max_connections: int, *, num_pools: int, tls: ssl.SSLContext | None = None) -> urllib3.PoolManager:
    """How hub opens a urllib3 pool to a peer: HTTPS verified against certifi's bundle (the one requests and httpx
    use) — or `tls`, hub's context with the province's CAs and client certificate (hub.adapters.tls) —, at most
    `max_connections` kept per host (more are opened when needed, not kept)."""
    from hub.adapters.tls import default_context

    return urllib3.PoolManager(
        num_pools=num_pools,
        maxsize=max_connections,
        block=False,
        cert_reqs="CERT_REQUIRED",
        ssl_context=tls or default_context(),  # given only the bundle's path, urllib3 loads it at each connection
    )


_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def post_capped(http: httpx.Client, url: str, limit: int, **request: Any) -> httpx.Response:
    """`http.post`, its reply read only up to `limit` bytes (ReplyTooLarge past it): a peer that answers without
    end — or with a gigabyte — costs hub no more memory than that."""
    with http.stream("POST", url, **request) as streamed:
        chunks, seen = [], 0
        for chunk in streamed.iter_bytes():
            seen += len(chunk)
            if seen > limit:
                raise ReplyTooLarge(f"reply larger than {limit} bytes")
            chunks.append(chunk)
        # the content is decoded already (gzip, br): its headers no longer describe how it travelled
        kept = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _TRANSFER_HEADERS]
        return httpx.Response(streamed.status_code, headers=kept, content=b"".join(chunks), request=streamed.request)


def read_capped(reply: urllib3.BaseHTTPResponse, limit: int) -> bytes:
    """The body of a reply requested with `preload_content=False`, if it is at most `limit` bytes; a longer one
    is cut off (its connection not reused) and ReplyTooLarge raised. The connection goes back to the pool."""
    try:
        content = reply.read(limit + 1)
        too_large = len(content) > limit
        if too_large:
            reply.close()  # the rest is never read: this connection is not reused
        else:
            reply.read()  # at the end of the body already; lets urllib3 see it finished
    except BaseException:
        reply.close()
        raise
    finally:
        reply.release_conn()
    if too_large:
        raise ReplyTooLarge(f"reply larger than {limit} bytes")
    return content


@dataclass(frozen=True, slots=True)
class JsonExchange:
    reply: dict[str, Any]
    report: Callable[[str, str | None], None]  # (outcome, error code): record the exchange

    def fail(self, error: PeerError) -> PeerError:
        """Record the exchange as failed with `error` and return it, for `raise exchange.fail(...)`."""
        self.report("retryable" if error.retryable else "permanent", error.code)
        return error


def post_json(
    http: httpx.Client | PeerPool,
    url: str,
    body: dict[str, Any],
    *,
    peer: str,
    operation: str,
    correlation_id: str,
    headers: dict[str, str] | None = None,
    on_exchange: ExchangeHook | None = None,
) -> JsonExchange:
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return post_bytes(
        http, url, raw, content_type="application/json", peer=peer, operation=operation,
        correlation_id=correlation_id, headers=headers, on_exchange=on_exchange,
    )  # fmt: skip


def post_bytes(
    http: httpx.Client | PeerPool,
    url: str,
    raw: bytes,
    *,
    content_type: str,
    peer: str,
    operation: str,
    correlation_id: str,
    headers: dict[str, str] | None = None,
    on_exchange: ExchangeHook | None = None,
) -> JsonExchange:
    """POST `raw` (a JSON body, an XML document…) and read a JSON reply with an integer `error_code`."""
    started = time.perf_counter()
    response_bytes: bytes | None = None

    def report(outcome: str, code: str | None) -> None:
        if on_exchange is not None:
            on_exchange(
                ExchangeRecord(
                    peer,
                    operation,
                    correlation_id,
                    digest(raw) or "",
                    digest(response_bytes),
                    (time.perf_counter() - started) * 1000,
                    outcome,
                    code,
                )
            )

    sent = {"Content-Type": content_type, "X-Correlation-ID": correlation_id, **(headers or {})}
    try:
        try:
            if isinstance(http, PeerPool):
                status, response_bytes, wait = http.post(url, raw, sent)
            else:
                response = post_capped(http, url, MAX_REPLY_BYTES, content=raw, headers=sent)
                status, response_bytes = response.status_code, response.content
                wait = response.headers.get("Retry-After")
        except urllib3.exceptions.NewConnectionError as exc:  # refused: a ConnectTimeoutError subclass in urllib3
            raise PeerUnavailable(peer, f"{operation}: {exc.__class__.__name__}: {exc}") from None
        except (httpx.TimeoutException, urllib3.exceptions.TimeoutError) as exc:
            raise PeerTimeout(peer, f"{operation} timed out: {exc.__class__.__name__}") from None
        except (httpx.TransportError, urllib3.exceptions.HTTPError) as exc:
            raise PeerUnavailable(peer, f"{operation}: {exc.__class__.__name__}: {exc}") from None
        except ReplyTooLarge as exc:
            raise PeerProtocolError(peer, f"{operation}: {exc}", code=REPLY_TOO_LARGE) from None
        if status in (408, 429, 502, 503, 504):
            raise unavailable(peer, f"{operation}: HTTP {status}", retry_after(wait))
        if status >= 500:
            raise PeerError(peer, f"{operation}: HTTP {status}", code="peer_http_5xx")
        if status >= 400:
            text = response_bytes.decode("utf-8", errors="replace")[:2000]
            raise PeerRejected(peer, f"{operation}: HTTP {status}", code="peer_http_4xx", reply=text)
        try:
            reply = parse_json(response_bytes)
        except ValueError:
            raise PeerProtocolError(peer, f"{operation}: reply is not JSON") from None
        code = error_code_of(reply)
        if code is None:
            raise PeerProtocolError(peer, f"{operation}: reply has no integer error_code", reply=reply)
        reply["error_code"] = code
    except PeerError as exc:
        report("retryable" if exc.retryable else "permanent", exc.code)
        raise
    return JsonExchange(reply, report)


def error_code_of(reply: Any) -> int | None:
    """A reply's `error_code` as the number it stands for: an integer, or the same written as a string of digits
    ("00", "0", "04" — deployed portals and one-stop systems answer so: OpenCPS, for one, tests `"00"`); None when
    there is none, or it is something else (true, 1.5, "OK")."""
    return whole_number(reply.get("error_code"), 4) if isinstance(reply, dict) else None


def post_checked(
    http: httpx.Client,
    path: str,
    body: dict[str, Any],
    *,
    peer: str,
    correlation_id: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST JSON and translate what went wrong at the transport or HTTP level into PeerErrors (the caller reads
    and verifies the body): timeouts, refused connections, 502/503/504/408/429 → peer down; other 5xx → a
    retryable failure; 4xx → refused."""
    try:
        sent = {"X-Correlation-ID": correlation_id, **(headers or {})}
        r = post_capped(http, path, MAX_DOCUMENT_REPLY_BYTES, json=body, headers=sent)
    except httpx.TimeoutException:
        raise PeerTimeout(peer, f"{path} timed out") from None
    except httpx.TransportError as exc:
        raise PeerUnavailable(peer, f"{path}: {exc.__class__.__name__}") from None
    except ReplyTooLarge as exc:
        raise PeerProtocolError(peer, f"{path}: {exc}", code=REPLY_TOO_LARGE) from None
    if r.status_code in (408, 429, 502, 503, 504):
        raise unavailable(peer, f"{path}: HTTP {r.status_code}", retry_after(r.headers.get("Retry-After")))
    if r.status_code >= 500:
        raise PeerError(peer, f"{path}: HTTP {r.status_code}", code="peer_http_5xx")
    if r.status_code >= 400:
        raise PeerRejected(peer, f"{path}: HTTP {r.status_code}", code="peer_http_4xx", reply=r.text[:500])
    return r


def json_object(r: httpx.Response, *, peer: str, what: str) -> dict[str, Any]:
    """The reply's body as a JSON object, or PeerProtocolError."""
    try:
        reply = parse_json(r.content)
    except ValueError:
        raise PeerProtocolError(peer, f"{what}: reply is not JSON") from None
    if not isinstance(reply, dict):
        raise PeerProtocolError(peer, f"{what}: reply is not an object")
    return reply
