"""The FastAPI application: /v1 (client systems), health, OpenAPI."""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Annotated, Any, Literal, ParamSpec, TypeVar
from urllib.parse import quote

import pydantic
import pydantic_core
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from fastapi_offline import FastAPIOffline

from hub import __version__
from hub.adapters.errors import PeerError
from hub.adapters.identity import CitizenTokens, ClientTokens, InvalidToken, client_tokens, looks_like_jwt
from hub.api import answers, examples, problems
from hub.api.middleware import BodyLimitAndCorrelation, CitizenCors, CompressedReads, ConsoleSessions, Inbound
from hub.api.routing import JsonRoute
from hub.domain.dates import instant
from hub.domain.errors import DomainError
from hub.logs import correlation_id
from hub.runtime import Runtime
from hub.services import prefill as prefill_forms
from hub.services.citizens import CitizenDocumentList, CitizenDossier, CitizenDossierList
from hub.services.payments import PaymentIn
from hub.services.prefill import (
    CitizenConsentIn,
    ConsentIn,
    DocumentIn,
    FormListed,
    FormOut,
    PrefillIn,
    PrefillOut,
    SubjectIn,
)
from hub.services.schemas import (
    MAX_BATCH,
    Accepted,
    BatchAccepted,
    DocumentAccepted,
    DossierBatchIn,
    DossierIn,
    EdocIn,
    ProgressBatchIn,
    ProgressIn,
    RecallAccepted,
    RecallIn,
)
from hub.settings import ClientSystem, Settings

IDEMPOTENCY_KEY_MAX = 200
# printable ASCII, at least one character once the server has trimmed the spaces around it: an empty header (a
# client's template with its variable missing) would otherwise be one key "" shared by every later request, each
# refused as a reuse of the first one's key
IDEMPOTENCY_KEY_FORM = r"^[\x20-\x7e]+$"
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "unchanged since the ETag given in If-None-Match"}
}
# What peers push to hub is recorded beside hub's own calls (exchanges): peer and operation by path.
INBOUND = {"/v1/national/": ("national_portal", "inbound.push_dossier")}
# what a 202 says beside its body: where to follow the dossier (and whether it repeats an earlier answer)
LOCATION = {
    "Location": {"description": "the dossier: GET it for its events and their delivery", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "true when this repeats the answer to an earlier request with the same Idempotency-Key "
        "(or, without a key, a repeat of the dossier's latest change: nothing new was written)",
        "schema": {"type": "string"},
    },
}
# requests carrying documents with their files: HUB_MAX_DOCUMENT_BYTES instead of HUB_MAX_BODY_BYTES
DOCUMENT_PATHS = re.compile(r"^/v1/(?:signatures/(?:verify|extend)|dossiers/[^/]+/edocs)\Z")
log = logging.getLogger("hub.api")
P = ParamSpec("P")
T = TypeVar("T")
# How a client system authenticates, as OpenAPI security schemes (either one): the docs' "Authorize" button, and
# generated clients, then know it. auto_error=False: a missing or malformed key is hub's own 401 problem.
API_KEY = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKey", description="the client system's API key", auto_error=False
)
BEARER = HTTPBearer(
    scheme_name="Bearer",
    description="the same API key as a bearer token, or an OAuth 2.0 access token (client credentials grant) from "
    "the authorization server in HUB_OAUTH_ISSUER, for a client system with that `oauth_client_id`",
    auto_error=False,
)
CITIZEN_TOKEN = HTTPBearer(
    scheme_name="CitizenIdToken",
    description="a citizen's ID token from the identity provider (VNeID / the national portal's sign-in)",
    auto_error=False,
)


class FormResponse(JSONResponse):
    """JSON rendered by pydantic-core's serializer: a pre-filled form (~5 KB) in ~25 µs where `json.dumps` takes
    ~110 (the same bytes: UTF-8, no spaces)."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


class SigningUnavailable(DomainError):
    """hub cannot sign or send a document now (no key, no time-stamping authority, no exchange platform)."""

    code = "signing_unavailable"
    status = 503


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401


class InsufficientScope(DomainError):
    """An access token whose scopes do not cover the operation (RFC 6750 §3.1)."""

    code = "insufficient_scope"
    status = 403
    title = "Insufficient scope"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{self.extra.get("scope", "")}"'}


class AuthorizationServerUnavailable(DomainError):
    """Access tokens cannot be checked now: the authorization server's keys cannot be fetched."""

    code = "authorization_server_unavailable"
    status = 503


class UnknownClient(DomainError):
    """A citizen named a client system hub does not know."""

    code = "unknown_client"
    status = 422
    title = "Unknown client system"


class CitizenSignInUnavailable(DomainError):
    """Citizens' sign-in is not configured, or the identity provider's keys cannot be fetched now."""

    code = "citizen_sign_in_unavailable"
    status = 503


async def _client(  # async: an API key costs no I/O, so FastAPI runs this on the event loop, not in the threadpool
    request: Request,
    needed: SecurityScopes,
    x_api_key: Annotated[str | None, Security(API_KEY)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> ClientSystem:
    key = x_api_key or (bearer.credentials.strip() if bearer is not None else None)
    if not key:
        raise Unauthenticated(
            "send the client system's API key in X-API-Key, or its access token as a bearer token",
            code="unauthenticated",
        )
    settings: Settings = request.app.state.settings
    found = settings.client_for_key(key)
    if found is not None:
        return found
    tokens: ClientTokens | None = request.app.state.client_tokens
    if bearer is None or tokens is None or not looks_like_jwt(key):
        raise Unauthenticated("unknown API key", code="invalid_api_key")
    try:  # a token seen before is remembered; a new one in a thread: the server's keys may have to be fetched
        grant = tokens.remembered(key)
        if grant is None:
            grant = await request.app.state.bulkheads().run(tokens.peer, tokens.grant, key)  # ADR 0046
    except PeerError as exc:
        raise AuthorizationServerUnavailable(
            "the authorization server's keys could not be fetched; try again shortly",
            code="authorization_server_unavailable",
        ) from exc
    found = settings.client_for_oauth(grant.client_id)
    if found is None:
        raise InvalidToken(f"no client system is configured for client_id {grant.client_id[:64]!r}")
    missing = [s for s in needed.scopes if s not in grant.scopes]
    if missing and (grant.scopes or settings.oauth_require_scopes):
        raise InsufficientScope(
            f"this access token's scopes do not include {' '.join(missing)}",
            code="insufficient_scope",
            scope=" ".join(needed.scopes),
        )
    return found


async def _citizen(
    request: Request, token: Annotated[HTTPAuthorizationCredentials | None, Security(CITIZEN_TOKEN)] = None
) -> str:
    """The personal ID of the citizen signed in: their ID token, checked against the identity provider (a token
    seen before is remembered until its `exp`; a new one in a thread: the provider's keys may have to be
    fetched)."""
    tokens: CitizenTokens | None = request.app.state.citizen_tokens()
    if tokens is None:
        raise CitizenSignInUnavailable(
            "citizens' sign-in is not configured (HUB_CITIZEN_IDP_ISSUER)", code="citizen_sign_in_unavailable"
        )
    if token is None:
        raise Unauthenticated("send the ID token from your sign-in as a bearer token", code="unauthenticated")
    try:
        found = tokens.remembered(token.credentials)
        return (
            str(found)
            if found is not None
            else await request.app.state.bulkheads().run(tokens.peer, tokens.personal_id, token.credentials)
        )
    except PeerError as exc:
        raise CitizenSignInUnavailable(
            "the identity provider could not be reached; try again shortly", code="identity_provider_unavailable"
        ) from exc


# The signed-in citizen's personal ID, for the citizen's own operations (CitizenIdToken in the OpenAPI document)
Citizen = Annotated[str, Depends(_citizen)]
# The client system calling, by its API key or access token, for an operation the named OAuth scope covers: a token
# that names any of hub's scopes (adapters/identity.SCOPES) must name this one
Dossiers = Annotated[ClientSystem, Security(_client, scopes=["hub:dossiers"])]
Prefill = Annotated[ClientSystem, Security(_client, scopes=["hub:prefill"])]
Audit = Annotated[ClientSystem, Security(_client, scopes=["hub:audit"])]
Payments = Annotated[ClientSystem, Security(_client, scopes=["hub:payments"])]
Signatures = Annotated[ClientSystem, Security(_client, scopes=["hub:signatures"])]
# read by the operation itself, not through a dependency of its own: one fewer for FastAPI to solve per request
IdemKey = Annotated[
    str | None,
    Header(
        alias="idempotency-key",
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=IDEMPOTENCY_KEY_FORM,
        description="repeat it to repeat a request safely: 1 to 200 printable ASCII characters (a UUID, say)",
    ),
]
# a dossier code in a path, with the documentation examples' dossier as its example
DossierPath = Annotated[str, Path(examples=[examples.BIRTH], description="MaHoSo")]


def batch_answer(items: list[dict[str, Any]], outcomes: list[Any]) -> JSONResponse:
    """A batch's answer (ADR 0030): each item's outcome at its place — 202 with its event, or its problem."""
    results: list[dict[str, Any]] = []
    for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
        named = item.get("MaHoSo") if isinstance(item.get("MaHoSo"), str) else None
        if isinstance(outcome, DomainError):
            refused = problems.domain_problem(outcome)
            results.append({"index": index, "status": refused["status"], "MaHoSo": named, "problem": refused})
        elif isinstance(outcome, pydantic.ValidationError):
            refused = problems.validation_problem(outcome.errors())
            results.append({"index": index, "status": 422, "MaHoSo": named, "problem": refused})
        else:
            results.append({"index": index, "status": 202, **outcome.body, "replayed": outcome.replayed})
    accepted = sum(1 for r in results if r["status"] == 202)
    return JSONResponse({"accepted": accepted, "refused": len(results) - accepted, "results": results})


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. `runtime` may be given (tests, the demo); otherwise it is made at start-up."""
    holder: dict[str, Runtime] = {}
    if runtime is not None:
        holder["rt"] = runtime

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # sync endpoints run in anyio's threadpool: no more at once than database connections kept open, so a
        # burst queues in the event loop instead of opening (and closing) a PostgreSQL backend per request
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        owned = "rt" not in holder
        if owned:
            holder["rt"] = Runtime(settings, role="api")
            # What start-up built (the WSDL's schema, SQLAlchemy's metadata, pydantic's validators) lives as long
            # as the process: out of the collector's sight, so a full collection no longer walks it mid-request.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if owned:
                holder.pop("rt").close()

    # FastAPI with its API docs (Swagger UI) served from hub itself, not from a CDN; no ReDoc page, whose sidebar
    # fetches its logo from the internet (ADR 0020)
    about: dict[str, Any] = {
        "title": "hub — integration hub for Vietnamese e-government",
        "version": __version__,
        "description": "Relays dossiers and their status (TrangThaiHoSo) between provincial one-stop systems and the "
        "national public-service portal (DVCQG). Errors are application/problem+json with a stable `code`.",
        "openapi_tags": [
            {
                "name": "dossiers",
                "description": "The provincial one-stop system's dossiers and their progress, "
                "relayed to the national portal in order, exactly once in effect (API key or access token)",
            },
            {"name": "down-flow", "description": "Dossiers filed on the national portal, relayed to the province"},
            {
                "name": "prefill",
                "description": "E-forms pre-filled from the population database (once-only), "
                "consents, documents for reuse, and who used a citizen's data (client systems)",
            },
            {
                "name": "citizens",
                "description": "For the citizen's own browser or app, signed in at VNeID / the "
                "national portal (their ID token as the bearer token): their dossiers, documents, consents, and who "
                "used their data",
            },
            {"name": "signatures", "description": "XML (XMLDSig, XAdES) and PDF (PAdES) signatures: verify, extend"},
            {"name": "payments", "description": "Fee payments at the payment platform and its signed callbacks"},
            {"name": "health", "description": "Liveness and readiness"},
            {
                "name": "problems",
                "description": "What each error `code` means and what to do about it: where a problem's `type` points",
            },
        ],
        "lifespan": lifespan,
    }
    if settings.api_docs:
        app = FastAPIOffline(redoc_url=None, **about)
    else:  # HUB_API_DOCS=false: no /docs, no /openapi.json
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **about)
    app.router.route_class = JsonRoute  # JSON bodies read as RFC 8259 has them (hub/api/routing.py)
    app.state.settings = settings
    app.state.client_tokens = client_tokens(settings, on_exchange=lambda record: rt().record_exchange(record))
    app.state.citizen_tokens = lambda: rt().citizen_tokens
    app.state.bulkheads = lambda: rt().bulkheads

    def out_of_space() -> None:
        if "rt" in holder:
            holder["rt"].disk.note_full()

    problems.install(app, on_out_of_space=out_of_space)
    problems.document(app)

    def rt() -> Runtime:
        return holder["rt"]

    def waits_on(peer: str) -> Callable[[Callable[P, T]], Callable[P, Awaitable[T]]]:
        """A blocking endpoint that waits on `peer` runs on the threads of that peer's compartment, not anyio's
        shared threadpool (ADR 0046): FastAPI awaits it on the event loop, and a peer that hangs holds no other
        request. (The endpoint's signature is read through the wrapper, as FastAPI reads any.)"""

        def wrap(endpoint: Callable[P, T]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(endpoint)
            async def in_compartment(*args: P.args, **kwargs: P.kwargs) -> T:
                return await rt().bulkheads.run(peer, endpoint, *args, **kwargs)

            return in_compartment

        return wrap

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        if "rt" in holder:
            holder["rt"].request_seconds.labels(method, route, str(status)).observe(seconds)

    async def inbound(req: Inbound) -> None:
        if "rt" in holder:
            await run_in_threadpool(record_inbound, holder["rt"], req)

    # inside the next one, which answers HEAD as GET without the content: HEAD then says what GET would (gzip, its
    # length); compressing counts in hub's own time (Server-Timing)
    app.add_middleware(CompressedReads)
    app.add_middleware(
        BodyLimitAndCorrelation,
        max_body=settings.max_body_bytes,
        max_document=settings.max_document_bytes,
        document_paths=DOCUMENT_PATHS,
        observe=observe,
        inbound=inbound,
        inbound_prefixes=tuple(INBOUND),
    )
    from hub.console.views import router as console_router
    from hub.domain.privacy import derive_key

    secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else b""
    app.add_middleware(
        ConsoleSessions,
        prefix="/ops",
        secret_key=derive_key(secret, "console-session").hex(),
        session_cookie="hub_console",
        max_age=8 * 3600,
        same_site="strict",
        https_only=settings.mode == "production",
    )
    if settings.citizen_cors_origins:
        app.add_middleware(CitizenCors, prefix="/v1/citizens/me/", origins=settings.citizen_cors_origins)

    def answer(a: Any) -> JSONResponse:
        headers = {"Idempotent-Replayed": "true"} if a.replayed else {}
        if a.status_code == 202 and isinstance(a.body.get("MaHoSo"), str):
            # RFC 9110 §15.3.3: a 202 points to where the request's progress can be followed
            headers["Location"] = f"/v1/dossiers/{quote(a.body['MaHoSo'], safe='')}"
        return JSONResponse(a.body, status_code=a.status_code, headers=headers)

    @app.post(
        "/v1/dossiers",
        status_code=202,
        responses={202: {"model": Accepted, "headers": LOCATION}},
        tags=["dossiers"],
        summary="Create or update a dossier (DongBoHoSoMC shape); relayed to the national portal",
    )
    async def sync_dossier(
        body: Annotated[DossierIn, Body(openapi_examples=examples.dossier())],
        who: Dossiers,
        key: IdemKey = None,
        updating: Annotated[
            bool,
            Query(
                alias="isUpdating",
                description="DongBoHoSoMC's isUpdating. true: the dossier was synced to the portal before, or filed "
                "before the one-stop system was connected to hub — if hub has not seen it, it is taken over at "
                "whatever status it is in (its history at hub starts there; `taken_over` in the answer) instead of "
                "having to start in 1 or 2 (ADR 0041). A dossier hub knows follows the transition table either way",
            ),
        ] = False,
    ) -> JSONResponse:
        # async: validation is CPU work and the commit is waited for without a thread (GroupCommit.submit_async)
        service = rt().dossiers
        command = service.sync_command(
            who, body, idempotency_key=key, correlation_id=correlation_id.get(), updating=updating
        )
        return answer(await service.run_async(command))

    @app.post(
        "/v1/dossiers/batch",
        responses={200: {"model": BatchAccepted}},
        tags=["dossiers"],
        summary="Create or update many dossiers at once (DongBoHoSoMC's `data` array): each taken or refused alone",
        description=f"Up to {MAX_BATCH} dossiers, each as `POST /v1/dossiers` takes one — a one-stop system's open "
        "dossiers when it first connects (with `isUpdating: true`: those already in progress are taken over at "
        "their status, ADR 0041), or a re-sync. The answer (200) gives each item's outcome at its place: "
        "202 with its event, or the problem that request alone would have got (422 for a malformed item, 403 for "
        "an agency the client may not act for, 409 for a refused transition…); a refused item changes nothing and "
        "holds no other back. A dossier's later change may follow its earlier one in the same batch. With an "
        "Idempotency-Key the same batch sent again is answered as before and creates nothing.",
    )
    async def sync_dossiers(
        body: Annotated[DossierBatchIn, Body(openapi_examples=examples.batch())], who: Dossiers, key: IdemKey = None
    ) -> JSONResponse:
        outcomes = await rt().dossiers.sync_many(
            who, body.data, idempotency_key=key, correlation_id=correlation_id.get(), updating=bool(body.isUpdating)
        )
        return batch_answer(body.data, outcomes)

    @app.post(
        "/v1/progress/batch",
        responses={200: {"model": BatchAccepted}},
        tags=["dossiers"],
        summary="Add many processing steps at once (CapNhatTienDoHoSoMC's `data` array): each taken or refused alone",
        description=f"Up to {MAX_BATCH} steps, each as `POST /v1/dossiers/{{MaHoSo}}/progress` takes one and naming "
        "its dossier — a one-stop system catching up after an outage of its own. A dossier's steps are applied in "
        "their order in `data`. Answered as `POST /v1/dossiers/batch` is: each item's outcome at its place.",
    )
    async def add_progress_many(
        body: Annotated[ProgressBatchIn, Body(openapi_examples=examples.progress_batch())],
        who: Dossiers,
        key: IdemKey = None,
    ) -> JSONResponse:
        service = rt().dossiers
        outcomes = await service.progress_many(who, body.data, idempotency_key=key, correlation_id=correlation_id.get())
        return batch_answer(body.data, outcomes)

    @app.post(
        "/v1/national/dossiers",
        status_code=202,
        responses={202: {"model": Accepted, "headers": LOCATION}},
        tags=["down-flow"],
        summary="The national portal pushes a dossier filed there; relayed to the province's one-stop system",
    )
    async def push_dossier(
        body: Annotated[DossierIn, Body(openapi_examples=examples.filed_on_portal())],
        who: Dossiers,
        key: IdemKey = None,
    ) -> JSONResponse:
        service = rt().dossiers
        command = service.push_command(who, body, idempotency_key=key, correlation_id=correlation_id.get())
        return answer(await service.run_async(command))

    @app.post(
        "/v1/dossiers/{code}/progress",
        status_code=202,
        responses={202: {"model": Accepted, "headers": LOCATION}},
        tags=["dossiers"],
        summary="Add a processing step (CapNhatTienDoHoSoMC shape); relayed to the national portal",
    )
    async def add_progress(
        code: DossierPath,
        body: Annotated[ProgressIn, Body(openapi_examples=examples.progress())],
        who: Dossiers,
        key: IdemKey = None,
    ) -> JSONResponse:
        service = rt().dossiers
        command = service.progress_command(who, code, body, idempotency_key=key, correlation_id=correlation_id.get())
        return answer(await service.run_async(command))

    @app.post(
        "/v1/dossiers/{code}/edocs",
        status_code=202,
        responses={202: {"model": DocumentAccepted, "headers": LOCATION}},
        tags=["dossiers"],
        summary="Send a document of the dossier to other agencies: a signed edXML envelope (QCVN 102:2016)",
        description="hub builds the envelope (contracts/edxml/edxml.xsd) with the dossier's agency as sender, signs it "
        "with the agency's key (XAdES; time-stamped when a TSA is configured) and delivers it to the document exchange "
        "platform through the outbox (order per dossier, retries, dead letters). 503 `signing_not_configured` or "
        "`tsa_unavailable` when it cannot sign now.",
    )
    @waits_on("tsa")
    def send_edoc(
        code: DossierPath,
        body: Annotated[EdocIn, Body(openapi_examples=examples.EDOC)],
        who: Dossiers,
        key: IdemKey = None,
    ) -> JSONResponse:
        import base64

        from hub.domain.dates import VN_TZ, utcnow
        from hub.signing import edxml
        from hub.signing.sign import SigningError

        if settings.mode == "production" and not settings.document_exchange_url:
            raise SigningUnavailable(
                "no document exchange platform is configured (HUB_DOCUMENT_EXCHANGE_URL)",
                code="document_exchange_not_configured",
            )

        def sign(agency: str) -> tuple[str, bytes, str]:
            now = utcnow()
            header = edxml.Header(
                sender=edxml.Organ(agency, body.sender_name),
                receivers=[edxml.Organ(t.id, t.name) for t in body.to],
                code_number=body.code_number,
                code_notation=body.code_notation,
                place=body.place,
                promulgation_date=now.astimezone(VN_TZ).date(),
                type=body.type,
                type_name=body.type_name,
                subject=body.subject,
                content=body.content,
                signer_name=body.signer_name,
                signer_position=body.signer_position,
            )
            files = [
                edxml.Attachment(a.name, a.content_type, base64.b64decode(a.data), a.description)
                for a in body.attachments
            ]
            try:
                signed = rt().signatures.sign_edxml(header, files, sent_at=now)
                return header.document_id, signed, header.promulgation_date.isoformat()
            except edxml.EdxmlError as exc:
                raise DomainError(str(exc), code="invalid_edxml") from None
            except SigningError as exc:
                if exc.passed_on:  # the TSA, token or PKI did not serve
                    raise SigningUnavailable(str(exc), code=exc.code) from None
                raise SigningUnavailable(str(exc), code="signing_key_unusable") from None

        request = body.model_dump(mode="json")
        return answer(
            rt().dossiers.send_document(
                who, code, request, sign, idempotency_key=key, correlation_id=correlation_id.get()
            )
        )

    @app.post(
        "/v1/dossiers/{code}/edocs/{document_id}/recall",
        status_code=202,
        responses={202: {"model": RecallAccepted}},
        tags=["dossiers"],
        summary="Recall a document sent to other agencies (edXML status 13, Lấy lại)",
        description="hub signs a status notice 13 as the dossier's agency and sends it to the document exchange "
        "platform after the document itself; each receiver answers 15 (agreed) or 16 (refused), shown in the "
        "dossier's `documents[].receivers`. Once per document: 409 `recall_already_requested`; 404 "
        "`document_not_found` when the dossier sent no such document.",
    )
    @waits_on("tsa")
    def recall_edoc(
        code: DossierPath,
        document_id: str,
        body: Annotated[RecallIn, Body(openapi_examples=examples.RECALL)],
        who: Dossiers,
        key: IdemKey = None,
    ) -> JSONResponse:
        from datetime import date

        from hub.domain.dates import VN_TZ, utcnow
        from hub.signing import edxml
        from hub.signing.sign import SigningError

        def sign(sent: dict[str, Any]) -> bytes:
            notice = edxml.StatusNotice(
                sender=sent["agency"],
                document_code=sent["code"][:500],
                promulgation_date=date.fromisoformat(sent["promulgation_date"]),
                document_id=sent["document_id"],
                author=edxml.Organ(sent["agency"], sent["sender_name"]),
                status="13",
                at=utcnow().astimezone(VN_TZ),
                description=body.reason,
            )
            try:
                return rt().signatures.sign(edxml.build_status(notice, signature_place=True))
            except edxml.EdxmlError as exc:
                raise DomainError(str(exc), code="invalid_edxml") from None
            except SigningError as exc:
                if exc.passed_on:
                    raise SigningUnavailable(str(exc), code=exc.code) from None
                raise SigningUnavailable(str(exc), code="signing_key_unusable") from None

        return answer(
            rt().dossiers.recall_document(
                who, code, document_id, body.reason, sign, idempotency_key=key, correlation_id=correlation_id.get()
            )
        )

    @app.get(
        "/v1/dossiers",
        responses={200: {"model": answers.OverdueList | answers.UndeliveredList}},
        tags=["dossiers"],
        summary="Dossiers past their appointment date (NgayHenTra), or with messages not delivered",
        description="One listing a request, of the dossiers of the agencies the client may act for: `overdue=true`, "
        "those past NgayHenTra whose result is not ready, the longest overdue first; or `delivery`, those with "
        "messages hub has not delivered — `waiting` (in line, or waiting out a retry), `dead` (refused for good or "
        "out of attempts: the dossier's later messages to that destination wait behind it until an operator "
        "replays or sets it aside), `undelivered` (both) —, the longest waiting first, each with per destination "
        "how many wait, how many are dead, since when and the first one's error (what a one-stop system shows its "
        "officers as not synced to the national portal). `destination` narrows it to one (`national_portal`, "
        "`one_stop`, `email`, `sms`).",
    )
    def list_dossiers(
        who: Dossiers,
        overdue: Annotated[bool, Query(description="only dossiers past NgayHenTra whose result is not ready")] = False,
        delivery: Annotated[
            Literal["waiting", "dead", "undelivered"] | None,
            Query(description="only dossiers with messages in that delivery state"),
        ] = None,
        destination: Annotated[
            str | None,
            Query(pattern=r"^[a-z_]{1,32}$", description="with `delivery`: only messages to this destination"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # a database takes a 64-bit offset at most
    ) -> dict[str, Any]:
        if overdue and delivery is not None:
            raise DomainError("one listing at a time: overdue=true or delivery, not both", code="unsupported_query")
        if destination is not None and delivery is None:
            raise DomainError("destination narrows a delivery listing: give delivery too", code="unsupported_query")
        if delivery is not None:
            return rt().dossiers.undelivered(
                who, delivery=delivery, destination=destination, limit=limit, offset=offset
            )
        if not overdue:
            raise DomainError(
                "a listing asks for overdue=true or delivery=waiting|dead|undelivered; look a dossier up by its MaHoSo",
                code="unsupported_query",
            )
        return rt().dossiers.overdue(who, limit=limit, offset=offset)

    @app.get(
        "/v1/reports/resolution",
        responses={
            200: {
                "model": answers.ResolutionReport,
                "content": {"text/csv": {"schema": {"type": "string"}}},
                "description": "the report (JSON), or with `format=csv` its lines and a total line as CSV",
            }
        },
        tags=["dossiers"],
        summary="How procedures were resolved over a period: received, resolved on time or late, overdue",
        description="Per agency and procedure (MaTTHC), over the days `from` to `to` (Vietnam's calendar), of the "
        "dossiers of the agencies the client may act for (or of one, `agency`): dossiers carried over and received "
        "(online, in person or by post), resolved before, on or after their appointment date (NgayHenTra), "
        "withdrawn or stopped, and still being resolved at the period's end (within time, overdue) — the figures "
        "of an agency's report on the resolution of administrative procedures (ADR 0048).",
    )
    def resolution_report(
        who: Dossiers,
        start: Annotated[date, Query(alias="from", description="the first day, YYYY-MM-DD")],
        end: Annotated[date, Query(alias="to", description="the last day, included")],
        agency: Annotated[str | None, Query(max_length=32, description="only this agency's dossiers")] = None,
        format: Annotated[Literal["json", "csv"], Query(description="csv: the lines as a spreadsheet")] = "json",
    ) -> Response:
        from hub.domain.dates import utcnow
        from hub.domain.errors import Forbidden
        from hub.services import reports

        if agency is not None and not who.may_act_for(agency):
            raise Forbidden(f"client {who.name!r} may not act for agency {agency}", code="agency_not_allowed")
        report = reports.served(rt().sessions, start, end, agencies=[agency] if agency else who.agencies, now=utcnow())
        if format == "csv":
            return Response(
                reports.as_csv(report),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="resolution-{start}-{end}.csv"'},
            )
        return JSONResponse(report.as_dict())

    @app.get(
        "/v1/dossiers/{code}",
        responses={200: {"model": answers.DossierView}},
        tags=["dossiers"],
        summary="A dossier with its status history and the delivery state of each event",
        description="Each event lists its deliveries, one per destination, with `state`: `pending` (waiting for "
        "its turn or its next attempt, `next_attempt_at`), `in_flight`, `delivered` (`delivered_at`), `dead` (the "
        "peer refused it for good or attempts ran out: `last_error_code`, `last_error`; it holds back the "
        "dossier's later events to that destination until an operator replays it — but for a citizen's notice, "
        "`email` or `sms`, which holds none back) or `set_aside` (an operator decided it is not to be "
        "delivered: `set_aside_by`, `set_aside_at`, `set_aside_reason`; the later events go on).",
    )
    def get_dossier(code: str, who: Dossiers) -> JSONResponse:
        return JSONResponse(rt().dossiers.get(who, code))  # JSON's own types already: no jsonable_encoder pass

    @app.post(
        "/v1/prefill",
        responses={200: {"model": PrefillOut}},
        tags=["prefill"],
        summary="Pre-fill a procedure's e-form from the population database (once-only principle)",
        description="Each field carries `value`, `source` (system, record, request id), `fetched_at` and "
        "`valid_until`; `missing_required` lists required fields still empty. With a valid `consent_ref`, "
        "documents issued earlier and still valid are offered for reuse. Every access is written to the "
        "hash-chained access log.",
    )
    async def prefill(
        body: Annotated[PrefillIn, Body(openapi_examples=examples.PREFILL)], who: Prefill
    ) -> JSONResponse:
        # async: a request served from this process's cache is answered on the event loop (see prefill_async)
        started, outcome = time.perf_counter(), "error"
        try:
            result = await rt().prefill.prefill_async(who, body, correlation_id=correlation_id.get())
            outcome = "ok"
            return FormResponse(result)
        except DomainError as exc:
            outcome = exc.code
            raise
        finally:
            rt().prefill_seconds.labels(outcome).observe(time.perf_counter() - started)

    def cacheable(request: Request, content: Any, media_type: str = "application/json") -> Response:
        """An answer without personal data that a portal may keep a few minutes, and ask again for with its ETag:
        304 when nothing changed."""
        body = pydantic_core.to_json(content)
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": tag, "Cache-Control": "private, max-age=300"}
        asked = {t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")}
        if tag in asked or "*" in asked:  # RFC 9110 13.1.2: weak comparison
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    @app.get(
        "/v1/forms",
        responses={200: {"model": list[FormListed]}},
        tags=["prefill"],
        summary="The procedures with an e-form, and what this client may pre-fill each for",
    )
    def list_forms(request: Request, who: Prefill) -> Response:
        return cacheable(request, prefill_forms.forms(who))

    @app.get(
        "/v1/forms/{procedure}",
        responses={200: {"model": FormOut}, **NOT_MODIFIED},
        tags=["prefill"],
        summary="A procedure's e-form, blank: its fields, labels, required marks, and where a pre-fill takes each from",
        description="No personal data: nothing is read from the population database and nothing is logged. What a "
        "portal renders before a pre-fill (or for a citizen who fills the form by hand). `prefill_purposes`: the "
        "purposes this client may pre-fill it for. Answers carry an ETag; the same request with `If-None-Match` "
        "gets 304 while the form is unchanged.",
    )
    def blank_form(procedure: str, request: Request, who: Prefill) -> Response:
        return cacheable(request, prefill_forms.blank_form(who, procedure))

    @app.get(
        "/v1/forms/{procedure}/schema",
        responses={
            200: {"content": {"application/schema+json": {}}, "description": "a JSON Schema, draft 2020-12"},
            **NOT_MODIFIED,
        },
        tags=["prefill"],
        summary="A procedure's e-form as a JSON Schema of the data it collects",
        description="The fields as nested objects (`nguoi_yeu_cau.ho_ten` → `nguoi_yeu_cau` → `ho_ten`), each with "
        "its Vietnamese label as `title` and its type (dates `YYYY-MM-DD`, personal IDs 12 digits, sex and marital "
        "status as the words a pre-fill writes), required ones in `required`: what a portal renders and checks the "
        "citizen's input with, using any JSON Schema tool. A pre-filled form's values satisfy it.",
    )
    def form_schema(procedure: str, request: Request, who: Prefill) -> Response:
        return cacheable(request, prefill_forms.form_schema(procedure), media_type="application/schema+json")

    @app.post(
        "/v1/consents",
        status_code=201,
        responses={201: {"model": answers.ConsentRecorded}},
        tags=["prefill"],
        summary="Record a citizen's consent to reuse data",
    )
    def grant_consent(
        body: Annotated[ConsentIn, Body(openapi_examples=examples.CONSENT)], who: Prefill
    ) -> dict[str, Any]:
        return rt().prefill.grant_consent(who, body)

    @app.post(
        "/v1/consents/{ref}/revoke",
        responses={200: {"model": answers.ConsentRevoked}},
        tags=["prefill"],
        summary="The citizen withdraws a consent",
    )
    def revoke_consent(ref: str, who: Prefill) -> dict[str, Any]:
        return rt().prefill.revoke_consent(who, ref)

    @app.post(
        "/v1/documents",
        status_code=201,
        responses={
            201: {"model": answers.DocumentIndexed, "description": "indexed"},
            200: {"model": answers.DocumentIndexed, "description": "the issuer's document of that number, already"},
        },
        tags=["prefill"],
        summary="Index a document issued with a dossier, for reuse",
    )
    def register_document(
        body: Annotated[DocumentIn, Body(openapi_examples=examples.DOCUMENT)], who: Prefill, response: Response
    ) -> dict[str, Any]:
        result = rt().prefill.register_document(who, body)
        response.status_code = 201 if result["created"] else 200
        return result

    @app.post(
        "/v1/citizens/data-usage",
        responses={200: {"model": answers.DataUsage}},
        tags=["prefill"],
        summary="Who used a citizen's data (auditor role: the citizen's portal account page, an inspector)",
        description="Newest first. The inquiry is itself written to the access log (purpose `access_log_inquiry`, "
        "allowed or refused, with `requested_by` when given) before the answer.",
    )
    def data_usage(
        body: Annotated[SubjectIn, Body(openapi_examples=examples.DATA_USAGE)], who: Audit
    ) -> dict[str, Any]:
        items = rt().prefill.data_usage(who, body, correlation_id=correlation_id.get())
        return {"count": len(items), "items": items}

    @app.get(
        "/v1/citizens/me/data-usage",
        responses={200: {"model": answers.DataUsage}},
        tags=["citizens"],
        summary="Who used my data: for the citizen, signed in at VNeID / the national portal",
        description="The bearer token is the citizen's ID token from the configured identity provider (OpenID "
        "Connect: signature, issuer, audience and lifetime are checked; the personal ID is read from "
        "`HUB_CITIZEN_ID_CLAIM`). Newest first: when, which agency and client system, which officer, for which "
        "procedure and purpose, on what legal basis or consent, and which fields left hub; times in Vietnam's time "
        "(+07:00), as in the citizen's other views.",
    )
    def my_data_usage(
        me: Citizen,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        items = rt().prefill.own_data_usage(
            me, limit=limit, correlation_id=correlation_id.get(),
            per_minute=settings.citizen_views_per_minute,
        )  # fmt: skip
        return {"count": len(items), "items": items}

    @app.get(
        "/v1/citizens/me/consents",
        responses={200: {"model": answers.CitizenConsentList}},
        tags=["citizens"],
        summary="My consents: for the citizen, signed in — who may reuse my documents, for what, until when",
        description="The bearer token is the citizen's ID token (as for `/v1/citizens/me/data-usage`). Newest first, "
        "each `active`, `expired` or `withdrawn`; times in Vietnam's time (+07:00).",
    )
    def my_consents(
        me: Citizen,
    ) -> dict[str, Any]:
        items = rt().prefill.consents_of(me, per_minute=settings.citizen_views_per_minute)
        return {"count": len(items), "items": items}

    @app.post(
        "/v1/citizens/me/consents",
        status_code=201,
        responses={201: {"model": answers.CitizenConsent}},
        tags=["citizens"],
        summary="I give a client system my consent to reuse my documents, for a purpose (signed in)",
        description="The bearer token is the citizen's ID token. The consent is the citizen's own act (recorded "
        "as `granted_by: citizen`), not a client system's word for it: the portal's page asks the citizen and calls "
        "this, then pre-fills with the answer's `consent_ref`. `client`: the client system's name, which must "
        "pre-fill forms for `purpose` (else 403 `consent_purpose_not_allowed`); an unknown one is 422 "
        "`unknown_client`. Withdrawn with `…/{ref}/withdraw`.",
    )
    def give_my_consent(me: Citizen, body: CitizenConsentIn) -> dict[str, Any]:
        to = next((c for c in settings.clients if c.name == body.client), None)
        if to is None:
            raise UnknownClient(f"no client system is named {body.client[:64]!r}", code="unknown_client")
        return rt().prefill.consent_of_citizen(me, to, body, per_minute=settings.citizen_views_per_minute)

    @app.post(
        "/v1/citizens/me/consents/{ref}/withdraw",
        responses={200: {"model": answers.ConsentWithdrawn}},
        tags=["citizens"],
        summary="I withdraw a consent: no pre-fill may use it from now on (the data subject's right)",
        description="Only the citizen's own consents; another's, or one that does not exist, is 404 "
        "`unknown_consent` alike. Withdrawing twice answers as the first time. The client system that collected the "
        "consent sees it refused (`consent_revoked`) at its next use.",
    )
    def withdraw_my_consent(
        ref: Annotated[str, Path(max_length=64)],
        me: Citizen,
    ) -> dict[str, Any]:
        return rt().prefill.withdraw_consent(me, ref, per_minute=settings.citizen_views_per_minute)

    @app.get(
        "/v1/citizens/me/dossiers",
        responses={200: {"model": CitizenDossierList}},
        tags=["citizens"],
        summary="My dossiers: for the citizen, signed in — each one's status, appointment date, what it waits for",
        description="The bearer token is the citizen's ID token (as for `/v1/citizens/me/data-usage`). The dossiers "
        "whose owner (SoGiayToChuHoSo) is the citizen, the latest changed first (`total`: how many in all): "
        "procedure, agency, status (`TrangThaiHoSo`, its Vietnamese name and a stable `status_key`), received and "
        "appointment dates (every time ISO 8601 in Vietnam's time, +07:00), working days late, and what it waits "
        "for from the citizen (`supplement`, `payment` — with the pay link of the fee to pay —, `collection` of "
        "the result).",
    )
    def my_dossiers(
        me: Citizen,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        return rt().citizen_dossiers.dossiers(me, limit=limit, per_minute=settings.citizen_views_per_minute)

    @app.get(
        "/v1/citizens/me/dossiers/{code}",
        responses={200: {"model": CitizenDossier}},
        tags=["citizens"],
        summary="One of my dossiers: its steps, fees, payments and results (tra cứu hồ sơ)",
        description="As in the list, with the history the citizen can follow (each change of status, each "
        "processing step: when, the handling unit, what was done), the fees, the payments (a pending one with its "
        "pay link), and the results issued (title, number, dates, link). Another citizen's dossier and an unknown "
        "code are answered alike: 404 `dossier_not_found`.",
    )
    def my_dossier(
        code: Annotated[str, Path(max_length=64)],
        me: Citizen,
    ) -> dict[str, Any]:
        return rt().citizen_dossiers.dossier(me, code, per_minute=settings.citizen_views_per_minute)

    @app.get(
        "/v1/citizens/me/documents",
        responses={200: {"model": CitizenDocumentList}},
        tags=["citizens"],
        summary="My documents: for the citizen, signed in — the results issued to me that hub holds for reuse",
        description="The bearer token is the citizen's ID token (as for `/v1/citizens/me/data-usage`). The documents "
        "issued to the citizen with their dossiers (extracts, certificates), the latest issued first, each with its "
        "issuer, dates, where it can be fetched and whether it is still valid: what a pre-fill may offer for reuse "
        "instead of a new upload, with the citizen's consent (the once-only principle).",
    )
    def my_documents(
        me: Citizen,
    ) -> dict[str, Any]:
        return rt().citizen_dossiers.documents(me, per_minute=settings.citizen_views_per_minute)

    @app.post(
        "/v1/signatures/verify",
        responses={200: {"model": answers.VerificationReport}},
        tags=["signatures"],
        summary="Verify the signature of a document (XMLDSig, XAdES; PAdES in a PDF): an ETSI EN 319 102-1 report",
        description="Send the signed XML as the body (Content-Type application/xml), or a signed PDF "
        "(application/pdf: every signature in it must pass, and nothing but further signatures may have changed it "
        "after the first). The answer is 200 with a "
        "report whatever the verdict: `indication` TOTAL-PASSED, TOTAL-FAILED or INDETERMINATE, `sub_indication`, "
        "signer, chain, revocation evidence used, and `signed_references` — use only their content.",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/xml": {"schema": {"type": "string"}},
                    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                }
            }
        },
    )
    async def verify_signature(
        request: Request,
        who: Signatures,
        at: Annotated[
            datetime | None, Query(description="validate as of this time (ISO 8601 with offset), e.g. signing time")
        ] = None,
    ) -> dict[str, Any]:
        if at is not None:
            instant(at, "`at`")
        data = await request.body()
        with rt().signature_seconds.time():
            report = await rt().bulkheads.run("revocation", rt().signatures.verify, data, at=at)
        rt().signature_verifications.labels(report.indication, report.sub_indication or "").inc()
        return report.as_dict()

    @app.post(
        "/v1/signatures/extend",
        tags=["signatures"],
        summary="Make a time-stamped XAdES signature long-term (XAdES-B-LT), e.g. on taking a document into an archive",
        description="Send the signed XML (XAdES-B-T) as the body. hub validates it now and answers the same document "
        "with the certificates and CRL/OCSP evidence used added to its unsigned properties, so it can be validated "
        "when the CA's services cannot be reached; nothing signed changes. 422 `signature_not_valid` (with the "
        "verdict) when it does not pass, 422 `not_time_stamped` when it has no signature time-stamp, 503 "
        "`revocation_unavailable` when the revocation status cannot be had now.",
        openapi_extra={"requestBody": {"content": {"application/xml": {"schema": {"type": "string"}}}}},
        response_class=Response,
        responses={200: {"content": {"application/xml": {"schema": {"type": "string"}}}}},
    )
    async def extend_signature(request: Request, who: Signatures) -> Response:
        from hub.signing.verify import NotValidNow

        data = await request.body()
        try:
            extended = await rt().bulkheads.run("revocation", rt().signatures.extend, data)
        except NotValidNow as exc:
            verdict = {"indication": exc.report.indication, "sub_indication": exc.report.sub_indication}
            if not exc.time_stamped:
                raise DomainError(str(exc), code="not_time_stamped", **verdict) from None
            if exc.report.sub_indication == "TRY_LATER":
                raise SigningUnavailable(str(exc), code="revocation_unavailable", **verdict) from None
            raise DomainError(str(exc), code="signature_not_valid", **verdict) from None
        return Response(extended, media_type="application/xml")

    @app.post(
        "/v1/payments",
        tags=["payments"],
        status_code=201,
        responses={
            201: {"model": answers.PaymentView, "description": "created at the platform"},
            200: {"model": answers.PaymentView, "description": "the dossier's payment of that amount, made before"},
        },
        summary="Create the fee payment of a dossier in status 6 at its payment platform; answers the pay URL",
        description="Idempotent per dossier and amount: asking again returns the same payment (200), also when "
        "asked twice at once (one INIT at the platform; the other request waits for its answer, up to 15 s, then "
        "503 with Retry-After). Amounts are integer đồng, taken from the dossier's DanhSachLePhi and checked "
        "against the procedure's fees.",
    )
    @waits_on("payment")
    def create_payment(
        body: Annotated[PaymentIn, Body(openapi_examples=examples.PAYMENT)],
        who: Payments,
        request: Request,
        response: Response,
    ) -> dict[str, Any]:
        ip = request.client.host if request.client else "127.0.0.1"
        status, payment = rt().payments.create(who, body, client_ip=ip, correlation_id=correlation_id.get())
        response.status_code = status
        return payment

    @app.get(
        "/v1/payments/{reference}",
        responses={200: {"model": answers.PaymentView}},
        tags=["payments"],
        summary="A payment and its state",
    )
    def get_payment(reference: str, who: Payments) -> dict[str, Any]:
        return rt().payments.get(who, reference)

    @app.get(
        "/v1/payments/{reference}/receipt",
        tags=["payments"],
        summary="The receipt (biên lai) of a paid payment, as the platform issued it (PDF)",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    @waits_on("payment")
    def payment_receipt(reference: str, who: Payments) -> Response:
        pdf = rt().payments.receipt(who, reference, correlation_id=correlation_id.get())
        return Response(pdf, media_type="application/pdf")

    @app.get(
        "/v1/payments/callbacks/{platform}",
        tags=["payments"],
        operation_id="payment_callback_get",
        responses={200: {"model": answers.DvcCallbackAnswer | answers.VnpayCallbackAnswer}},
        summary="A payment gateway's IPN sent as a GET (VNPay style); authenticated by its signature",
    )
    @app.post(
        "/v1/payments/callbacks/{platform}",
        tags=["payments"],
        operation_id="payment_callback_post",
        responses={200: {"model": answers.DvcCallbackAnswer | answers.VnpayCallbackAnswer}},
        summary="The payment platform's confirmation (CONFIRM); authenticated by its signature",
        description="No API key: the message's own hash (MaXacThuc / vnp_SecureHash) is verified before anything "
        "else. The answer is the platform's own format and code (DVC: 00 confirmed, 01 unknown reference, 02 already "
        "confirmed, 04 amount mismatch, 07 replay, 97 bad signature, 99 other; VNPay: RspCode).",
    )
    async def payment_callback(platform: str, request: Request) -> JSONResponse:
        body = await request.body()
        status, answer = await run_in_threadpool(
            rt().payments.callback,
            platform,
            body,
            request.headers.get("content-type"),
            dict(request.query_params),
            correlation_id=correlation_id.get(),
        )
        return JSONResponse(answer, status_code=status)

    @app.get("/healthz", responses={200: {"model": answers.Health}}, tags=["health"], summary="Alive")
    async def healthz() -> dict[str, str]:  # on the event loop: alive whatever the threads wait on
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        responses={
            200: {"model": answers.Readiness},
            503: {"model": answers.Readiness, "description": "not ready: `checks` says what is wrong"},
        },
        tags=["health"],
        summary="Ready: database and broker answer; each peer's last contact",
    )
    def readyz(response: Response) -> dict[str, Any]:
        readiness = rt().readiness()
        response.status_code = 200 if readiness["status"] == "ok" else 503
        return readiness

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(rt().registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> dict[str, str]:
        found = {"service": "hub", "version": __version__, "health": "/healthz", "problems": "/problems"}
        if settings.api_docs:  # HUB_API_DOCS=false: there is no /docs to point at
            found["docs"] = str(request.url_for("custom_swagger_ui_html"))
        return found

    # what each problem's `type` points at: the catalogue of hub's error codes (ADR 0050)
    from hub.api import problem_pages

    app.include_router(problem_pages.router())
    # the national portal's own protocol, for one-stop systems written for the portal (ADR 0040)
    from hub.api import dvcqg

    app.include_router(dvcqg.router(rt, dvcqg.Sessions(settings)))
    # the operators' console last: a route is found by trying each in order, and the API's requests are the many
    app.include_router(console_router(rt))
    return app


def record_inbound(rt: Runtime, req: Inbound) -> None:
    """Append what a peer pushed, and hub's answer (accepted, or rejected with the problem's code), to the
    exchange record; a rejection is also logged. Never raises: the answer has already gone."""
    from hub.adapters.exchange import ExchangeRecord, digest

    peer, operation = next(v for prefix, v in INBOUND.items() if req.path.startswith(prefix))
    error_code: str | None = None
    if req.status >= 400:
        try:
            error_code = str(json.loads(req.reply)["code"])[:64]
        except (ValueError, KeyError, TypeError):
            error_code = f"http_{req.status}"
        log.warning(
            "inbound push rejected",
            extra={"peer": peer, "status": req.status, "error_code": error_code, "correlation_id": req.correlation_id},
        )
    record = ExchangeRecord(
        peer,
        operation,
        req.correlation_id,
        digest(req.body) or "",
        digest(req.reply),
        req.seconds * 1000,
        "accepted" if req.status < 400 else "rejected",
        error_code,
    )
    rt.record_exchange(record)  # never raises: the record must not turn an answered request into an error
