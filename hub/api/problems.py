"""RFC 9457 problem+json for every error, each with a stable `code`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from hub.api.problem_types import type_uri
from hub.domain.errors import DomainError
from hub.store.db import unavailable
from hub.store.space import out_of_space

log = logging.getLogger("hub.api")
PROBLEM = "application/problem+json"
SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY = 2067, 1555  # sqlite3's extended result codes

# The field an invalid value sits in decides the stable code (a bad MaHoSo is not just "validation").
FIELD_CODES = {
    "MaHoSo": "invalid_dossier_code",
    "MaTTHC": "invalid_procedure_code",
    "madonvi": "invalid_agency_code",
    "TrangThaiHoSo": "invalid_status",
    "TrangThai": "invalid_status",
    "NgayTiepNhan": "invalid_date",
    "NgayHenTra": "invalid_date",
    "NgayTra": "invalid_date",
    "NgayKetThucXuLy": "invalid_date",
    "ThoiDiemXuLy": "invalid_date",
    "NgayBatDau": "invalid_date",
    "NgayKetThucTheoQuyDinh": "invalid_date",
    "idempotency-key": "invalid_idempotency_key",
}
STATUS_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def problem_body(status: int, code: str, title: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem as a JSON object (the body of `problem`; an item's outcome in a batch's answer)."""
    body: dict[str, Any] = {
        "type": type_uri(code),
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def problem(status: int, code: str, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    body = problem_body(status, code, title, detail, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def domain_problem(exc: DomainError) -> dict[str, Any]:
    """The problem a DomainError is answered with."""
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, str | int | float | bool | None)}
    return problem_body(exc.status, exc.code, exc.title or HTTPStatus(exc.status).phrase, exc.detail, **extra)


def validation_problem(raw_errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 problem of a body that does not validate (pydantic's errors), with a field's own code when one
    field is at fault (invalid_dossier_code, …), else validation_error / missing_field."""
    errors = [_clean(e) for e in raw_errors]
    code = "validation_error"
    for e in errors:
        field = next((p for p in reversed(e["loc"]) if p in FIELD_CODES), None)
        if field is not None:
            code = FIELD_CODES[field]
            break
    if all(e["type"] == "missing" for e in errors) and code == "validation_error":
        code = "missing_field"
    return problem_body(422, code, "Invalid request", f"{len(errors)} problem(s) in the request", errors=errors[:20])


def _clean(err: dict[str, Any]) -> dict[str, Any]:
    return {
        "loc": [str(p) for p in err.get("loc", ())],
        "msg": str(err.get("msg", "")),
        "type": err.get("type"),
    }


def _not_json(request: Request) -> str | None:
    """The media type a body was sent as, when it is not JSON (curl's `-d` sends a form unless told otherwise);
    FastAPI then hands the validator the raw bytes, whose complaint would say nothing useful."""
    value = request.headers.get("content-type")
    if not value:
        return None  # FastAPI reads a body without a Content-Type as JSON
    media = value.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return None if main == "application" and (sub == "json" or sub.endswith("+json")) else media[:100]


def install(app: FastAPI, *, on_out_of_space: Callable[[], None] | None = None) -> None:
    """Hub's error answers. `on_out_of_space`: told when a write failed because the database's disk is full."""

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else {}
        response = JSONResponse(domain_problem(exc), status_code=exc.status, media_type=PROBLEM, headers=headers)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_clean(e) for e in exc.errors()]
        media = _not_json(request)
        if media is not None and any(e["loc"][:1] == ["body"] for e in errors):
            return problem(
                415,
                "unsupported_media_type",
                "Unsupported Media Type",
                f"the body must be JSON sent with Content-Type: application/json, not {media}",
            )
        invalid = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if invalid is not None:
            said, at = (invalid.get("ctx") or {}).get("error"), invalid.get("loc", ())[1:2]
            where = f" (at character {at[0]})" if at and isinstance(at[0], int) and at[0] else ""
            why = f": {said}{where}" if said else ""
            return problem(400, "malformed_json", "Malformed JSON", f"the request body is not valid JSON{why}")
        return JSONResponse(validation_problem(exc.errors()), status_code=422, media_type=PROBLEM)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 only when it cannot parse the body (too deep, too large a number...)
        code = (
            "malformed_json" if exc.status_code == 400 else STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        )
        detail = exc.detail if isinstance(exc.detail, str) else None
        try:
            title = "Malformed JSON" if exc.status_code == 400 else HTTPStatus(exc.status_code).phrase
        except ValueError:  # a status Python does not name
            title = code.replace("_", " ")
        response = problem(exc.status_code, code, title, detail)
        if exc.status_code == 405:  # RFC 9110 §15.5.6: which methods the resource does take
            response.headers["Allow"] = allowed_methods(request)
        return response

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if out_of_space(exc):
            # nothing was recorded (the transaction rolled back); the same request later, with its key, is taken
            log.error("database out of disk space on %s %s: %s", request.method, request.url.path, exc.orig)
            if on_out_of_space is not None:
                on_out_of_space()
            detail = (
                "hub's database has no disk space left: nothing was recorded; send the request again later "
                "(same Idempotency-Key)"
            )
            response = problem(503, "storage_full", "Storage full", detail)
            response.headers["Retry-After"] = "30"
            return response
        if duplicate(exc):
            # two requests wrote the same row at once and a service did not expect it (those that do answer the
            # second as a repeat): this one changed nothing, and sent again it finds what the other wrote
            log.warning("concurrent duplicate write on %s %s: %s", request.method, request.url.path, exc.orig)
            detail = (
                "a concurrent request wrote the same thing at the same moment; this one changed nothing: send it again"
            )
            return problem(409, "concurrent_update", "Conflict", detail)
        if unavailable(exc):
            # the database went away (restart, network) or refuses connections: the client retries
            log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.orig)
            detail = "hub's database did not answer; the request may not have been recorded: retry it (same key)"
            response = problem(503, "database_unavailable", "Database unavailable", detail)
            response.headers["Retry-After"] = "2"
            return response
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred; it has been logged")


def duplicate(exc: DBAPIError) -> bool:
    """Whether a database error is a unique key written twice: PostgreSQL's unique_violation (23505), SQLite's
    UNIQUE or PRIMARY KEY constraint."""
    if not isinstance(exc, IntegrityError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":
        return True
    return getattr(orig, "sqlite_errorcode", None) in (SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY)


# What every error answer is, for the OpenAPI document: generated clients then parse hub's errors as they are.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error (RFC 9457 problem details, application/problem+json). `code` is stable: branch on it.",
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {
            "type": "string",
            "description": "/problems/{code}: a reference to hub's own page on the problem type (GET it: what the "
            "code means and what to do), relative to hub's address and so the same on every deployment",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "description": "the HTTP status, repeated"},
        "code": {"type": "string", "description": "stable machine-readable code, e.g. invalid_transition"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "for 422: each invalid part of the request",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "retry_after": {
            "type": "integer",
            "description": "for 429, and for 503 when the peer behind hub said how long to wait: seconds, as in the "
            "Retry-After header",
        },
    },
    "additionalProperties": True,
}


def document(app: FastAPI) -> None:
    """Make the served OpenAPI document say what hub answers on errors: a Problem as application/problem+json for
    any 4xx and 5xx of a /v1 operation (and of the catalogues' pages), in place of FastAPI's default 422
    `HTTPValidationError`, which hub never sends; and list an operation's OAuth scope under the bearer scheme only
    (an API key has none)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()  # FastAPI's, kept as app.openapi_schema: amended in place below
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        answer = {"content": {PROBLEM: {"schema": problem_ref}}}
        for path, operations in spec.get("paths", {}).items():
            if not path.startswith(("/v1/", "/problems", "/peer-errors")):
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["4XX"] = {"description": "the request was refused (see `code`)", **answer}
                responses["5XX"] = {"description": "hub or a system it depends on could not serve it now", **answer}
                for requirement in operation.get("security", []):  # OAuth scopes are the bearer token's alone
                    if "ApiKey" in requirement:
                        requirement["ApiKey"] = []
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        referenced = json.dumps(spec["paths"])  # what the console's own routes still point at stays
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused not in referenced:
                schemas.pop(unused, None)
        schemas["Problem"] = PROBLEM_SCHEMA
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(request: Request) -> str:
    """The methods of every route on the request's path (Starlette names only the first route's: GET and POST on
    one path are two routes), and HEAD wherever GET is (hub answers HEAD as GET without the content)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))
