"""ASGI middleware: a body-size limit (413 before the body is read into memory), the correlation id, and the
record of what peers push to hub (accepted or rejected, with the problem code)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.problem_types import type_uri
from hub.logs import correlation_id, timings

COMPRESSED = frozenset({b"gzip", b"x-gzip", b"deflate", b"br", b"compress", b"x-compress", b"zstd"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
_NUL = re.compile(rb"%00|\x00")


def _problem_bytes(status: int, code: str, detail: str) -> bytes:
    return json.dumps(
        {
            "type": type_uri(code),
            "title": HTTPStatus(status).phrase,
            "status": status,
            "code": code,
            "detail": detail,
        }
    ).encode()


@dataclass(frozen=True, slots=True)
class Inbound:
    """One request a peer pushed to hub, as answered."""

    path: str
    correlation_id: str
    body: bytes
    status: int
    reply: bytes
    seconds: float


class BodyLimitAndCorrelation:
    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        observe: Callable[[str, str, int, float], None] | None = None,
        inbound: Callable[[Inbound], Awaitable[None]] | None = None,
        inbound_prefixes: tuple[str, ...] = (),
        max_document: int | None = None,
        document_paths: re.Pattern[str] | None = None,
    ) -> None:
        """`max_document`: the limit instead of `max_body` for paths `document_paths` matches (documents with
        their files: an edXML dispatch's attachments, a signed XML document to verify)."""
        self.app = app
        self.max_body = max_body
        self.max_document = max_document if max_document is not None else max_body
        self.document_paths = document_paths
        self.observe = observe
        self.inbound = inbound
        self.inbound_prefixes = inbound_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            # RFC 9110 §9.3.2: HEAD is GET without the content, for every resource (FastAPI's routes take only the
            # methods they name; uptime monitors, load balancers and `curl -I` send HEAD)
            scope = {**scope, "method": "GET"}
            send = _headers_only(send)
        headers = dict(scope.get("headers") or [])
        offered = headers.get(b"x-correlation-id", b"").decode("latin-1")
        cid = offered if _SAFE_ID.match(offered) else uuid.uuid4().hex
        token = correlation_id.set(cid)
        parts: dict[str, float] = {}
        timed = timings.set(parts)
        record = self.inbound is not None and scope["path"].startswith(self.inbound_prefixes)
        started = time.perf_counter()
        documents = self.document_paths is not None and self.document_paths.match(scope["path"]) is not None
        limit = self.max_document if documents else self.max_body
        private = scope["path"].startswith("/v1/")  # API answers: no copy in a shared cache unless one says so
        try:
            if "\x00" in scope["path"] or _NUL.search(scope.get("query_string") or b""):
                # no path or parameter of hub takes a NUL; PostgreSQL would refuse it in a query (a 500)
                detail = "the URL holds a NUL character (%00): no path or parameter of hub takes one"
                await self._reject(scope, send, cid, record, started, 400, "nul_in_url", detail)
                return
            coding = headers.get(b"content-encoding", b"").strip().lower()
            if coding and set(coding.replace(b" ", b"").split(b",")) & COMPRESSED:
                # a compressed body: refused before it is read (RFC 9110 15.5.16); a misused "Content-Encoding:
                # UTF-8", which some clients send, is no compression and passes to the parser as before
                detail = f"request bodies are taken uncompressed; Content-Encoding {coding.decode('latin-1')[:40]!r}"
                await self._reject(scope, send, cid, record, started, 415, "unsupported_content_encoding", detail)
                return
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._too_large(scope, send, cid, record, started, limit)
                return
            # Read the body up to the limit before the app sees it (JSON messages; documents with their files).
            chunks: list[bytes] = []
            seen = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    await self._too_large(scope, send, cid, record, started, limit)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()

            status = 500
            reply: list[bytes] = []

            held: list[Message] = []

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}" + "".join(  # W3C Server-Timing
                        f", {name};dur={seconds * 1000:.2f}" for name, seconds in parts.items()
                    )
                    headers = [
                        *message.get("headers", []),
                        (b"x-correlation-id", cid.encode()),
                        (b"server-timing", took.encode()),
                    ]
                    if private:
                        if not any(k == b"cache-control" for k, _ in headers):
                            headers.append((b"cache-control", b"no-store"))  # personal data: no cache keeps a copy
                        headers.append((b"x-content-type-options", b"nosniff"))  # JSON is never run as a page
                    message["headers"] = headers
                if record:  # a pushed request is recorded before its answer leaves (the answer is small)
                    held.append(message)
                    if message["type"] == "http.response.body":
                        reply.append(message.get("body", b""))
                        if not message.get("more_body", False):
                            await self._inbound(scope, cid, b"".join(chunks), status, b"".join(reply), started)
                            for m in held:
                                await send(m)
                            held.clear()
                    return
                await send(message)

            await self.app(scope, replay, send_with_id)
            if self.observe is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.observe(scope["method"], route, status, time.perf_counter() - started)
        finally:
            timings.reset(timed)
            correlation_id.reset(token)

    async def _inbound(self, scope: Scope, cid: str, body: bytes, status: int, reply: bytes, started: float) -> None:
        if self.inbound is not None:
            await self.inbound(Inbound(scope["path"], cid, body, status, reply, time.perf_counter() - started))

    async def _too_large(self, scope: Scope, send: Send, cid: str, record: bool, started: float, limit: int) -> None:
        detail = f"request body larger than {limit} bytes"
        await self._reject(scope, send, cid, record, started, 413, "body_too_large", detail)

    async def _reject(
        self, scope: Scope, send: Send, cid: str, record: bool, started: float, status: int, code: str, detail: str
    ) -> None:
        """Refused before the body is read; a peer's push is recorded with the very answer it gets."""
        body = _problem_bytes(status, code, detail)
        if record:
            await self._inbound(scope, cid, b"", status, body, started)
        headers: list[Any] = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-correlation-id", cid.encode()),
        ]
        if status == 415:
            headers.append((b"accept-encoding", b"identity"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _headers_only(send: Send) -> Send:
    """`send` for a HEAD request: the status and headers of the GET, its content left out."""

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)}
        await send(message)

    return headers_only


class ConsoleSessions:
    """Starlette's signed-cookie sessions, for the operator console's paths only: API clients send no cookie and
    need none, so their requests skip the cookie parsing and the wrapped `send`."""

    def __init__(
        self,
        app: ASGIApp,
        prefix: str,
        secret_key: str,
        session_cookie: str,
        max_age: int,
        same_site: Literal["lax", "strict", "none"],
        https_only: bool,
    ) -> None:
        from starlette.middleware.sessions import SessionMiddleware

        self.app = app
        self.prefix = prefix
        self.sessions = SessionMiddleware(
            app,
            secret_key=secret_key,
            session_cookie=session_cookie,
            max_age=max_age,
            same_site=same_site,
            https_only=https_only,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.sessions(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class CitizenCors:
    """CORS for the citizens' own endpoints only (`prefix`): the portal page where a citizen signed in calls them
    from the browser with the ID token as bearer (no cookies, so no credentials mode). The client systems' endpoints
    get no CORS headers: their keys belong on servers, never in a page."""

    def __init__(self, app: ASGIApp, prefix: str, origins: list[str]) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Correlation-Id"],
            expose_headers=["Retry-After", "X-Correlation-Id"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class CompressedReads:
    """gzip (Starlette's GZipMiddleware) for what hub's readers fetch — GET and HEAD from a client that accepts
    it: dossier listings, the console's CSV downloads, /metrics (17 kB → 3.5 kB a scrape), the OpenAPI document
    (129 kB → 24 kB) — over a province's links. Writes and the pre-fill (POST) are not touched: their answers are
    small and their latency is measured to the tenth of a millisecond. HEAD reaches it as GET (BodyLimitAndCorrelation,
    outside it, drops the content), so HEAD says what GET would. To a client that takes gzip, ETags are weak — on the
    200 and on the 304 alike (RFC 9110 §8.8.3: the identity representation's strong validator is not the gzip one's);
    hub compares If-None-Match weakly."""

    def __init__(self, app: ASGIApp, minimum_size: int = 1024) -> None:
        from starlette.middleware.gzip import GZipMiddleware

        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=6)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not _accepts_gzip(scope):
            await self.app(scope, receive, send)
            return

        async def weak_etag(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                etag = headers.get("etag")
                if etag and not etag.startswith("W/"):
                    headers["etag"] = f"W/{etag}"
            await send(message)

        await self.gzip(scope, receive, weak_etag)


def _accepts_gzip(scope: Scope) -> bool:
    return any(name == b"accept-encoding" and b"gzip" in value.lower() for name, value in scope.get("headers", ()))
