"""`GET /problems` and `GET /problems/{code}`: the catalogue of hub's problem types (hub/api/problem_types.py), where
each problem's `type` points; `GET /peer-errors` and `GET /peer-errors/{code}`: what the other systems' errors hub
records mean (a delivery's `last_error_code`, a problem's `peer_error`). JSON for a program; a page for a browser
(an integrator following the `type` of a problem they got). No credentials: they hold no data of anyone's, only
what hub's answers mean (ADR 0050)."""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from hub.api.answers import PeerErrorList, PeerErrorOut, ProblemTypeList, ProblemTypeOut
from hub.api.problem_types import CODE, PEER_ERRORS, PROBLEM_TYPES, REMEDIES, ProblemType, lookup
from hub.api.problems import problem
from hub.api.routing import JsonRoute

CACHE = {"Cache-Control": "public, max-age=3600"}  # changes only with hub's version
HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
REMEDY_WORDS = {
    "fix_request": "fix the request: sent again unchanged it is refused again",
    "retry_later": "retry later: the same request, with the same Idempotency-Key, can succeed",
    "authenticate": "authenticate: send valid credentials",
    "ask_operators": "ask the operators: hub is not set up for it yet",
}
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1c2530}"
    "code{background:#eef1f5;padding:0 .25rem}table{border-collapse:collapse;width:100%}"
    "td,th{border-bottom:1px solid #d8dde3;padding:.35rem .5rem;text-align:left;vertical-align:top}"
)


def _wants_html(request: Request) -> bool:
    """A browser's request (it asks for text/html before anything else), not a program's."""
    accept = request.headers.get("accept", "")
    first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return first == "text/html"


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        headers=CACHE,
    )


def _table(path: str, title: str, intro: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> HTMLResponse:
    """A catalogue as a page: each code linked to its own page (`path`/code), then its cells."""
    head = "".join(f"<th>{escape(c)}</th>" for c in ["code", *columns])
    body = "".join(
        f'<tr><td><a href="{path}/{escape(code)}"><code>{escape(code)}</code></a></td>'
        + "".join(f"<td>{escape(cell)}</td>" for cell in cells)
        + "</tr>"
        for code, cells in rows
    )
    return _page(f"hub — {title}", f"<h1>{escape(title)}</h1>{intro}<table><tr>{head}</tr>{body}</table>")


def _entry_html(code: str, entry: ProblemType) -> str:
    statuses = ", ".join(str(s) for s in entry.statuses)
    return (
        f"<h1><code>{escape(code)}</code> — {escape(entry.title)}</h1>"
        f"<p>HTTP {escape(statuses)}. {escape(entry.meaning)}</p>"
        f"<p><strong>What to do:</strong> {escape(REMEDY_WORDS[entry.remedy])}. {escape(entry.action)}</p>"
        "<p>Every error hub answers is <code>application/problem+json</code> (RFC 9457): branch on <code>code</code>; "
        "<code>detail</code> says what was wrong with this request. "
        '<a href="/problems">All problem types</a>.</p>'
    )


def router() -> APIRouter:
    r = APIRouter(route_class=JsonRoute, tags=["problems"])

    @r.get(
        "/problems",
        summary="Every problem type hub answers with: what each code means and what to do",
        response_model=ProblemTypeList,
        responses={200: HTML},
    )
    def problem_types(request: Request) -> Response:
        catalogue = sorted(PROBLEM_TYPES.items())
        if _wants_html(request):
            remedies = "".join(f"<li><code>{r}</code>: {escape(REMEDY_WORDS[r])}</li>" for r in REMEDIES)
            return _table(
                "/problems",
                "Problem types",
                "<p>Every <code>code</code> hub's errors carry (<code>application/problem+json</code>, RFC 9457). "
                f"<code>remedy</code>:</p><ul>{remedies}</ul>",
                ["HTTP", "meaning", "remedy"],
                [(code, [", ".join(map(str, e.statuses)), e.meaning, e.remedy]) for code, e in catalogue],
            )
        return JSONResponse({"items": [entry.as_json(code) for code, entry in catalogue]}, headers=CACHE)

    @r.get(
        "/problems/{code}",
        summary="One problem type: where a problem's `type` points",
        response_model=ProblemTypeOut,
        responses={200: HTML},
    )
    def problem_type(
        request: Request, code: Annotated[str, Path(max_length=64, examples=["invalid_transition"])]
    ) -> Response:
        entry = lookup(code) if CODE.match(code) else None
        if entry is None:
            return problem(404, "not_found", "Not found", "hub answers with no problem of this code: GET /problems")
        if _wants_html(request):
            return _page(f"hub — {code}", _entry_html(code, entry))
        return JSONResponse(entry.as_json(code), headers=CACHE)

    @r.get(
        "/peer-errors",
        summary="What the other systems' errors hub records mean: a delivery's last_error_code, a problem's peer_error",
        response_model=PeerErrorList,
        responses={200: HTML},
    )
    def peer_errors(request: Request) -> Response:
        catalogue = sorted(PEER_ERRORS.items())
        if _wants_html(request):
            return _table(
                "/peer-errors",
                "The peers' errors",
                "<p>What hub records when a call to another system fails: a delivery's <code>last_error_code</code>, "
                "a problem's <code>peer_error</code>.</p>",
                ["system", "meaning", "tried again?"],
                [(code, [e.peer, e.meaning, e.outcome]) for code, e in catalogue],
            )
        return JSONResponse({"items": [entry.as_json(code) for code, entry in catalogue]}, headers=CACHE)

    @r.get(
        "/peer-errors/{code}",
        summary="One of the peers' errors: what it means, whether hub tries again, what to do",
        response_model=PeerErrorOut,
        responses={200: HTML},
    )
    def peer_error(request: Request, code: Annotated[str, Path(examples=["portal_invalid_transition"])]) -> Response:
        entry = PEER_ERRORS.get(code)
        if entry is None:
            return problem(404, "not_found", "Not found", "hub records no peer error of this code: GET /peer-errors")
        if _wants_html(request):
            return _page(
                f"hub — {code}",
                f"<h1><code>{escape(code)}</code></h1><p>From: {escape(entry.peer)}. {escape(entry.meaning)} "
                f"({entry.outcome}).</p><p><strong>What to do:</strong> {escape(entry.action)}</p>"
                '<p><a href="/peer-errors">All the peers\' errors</a>.</p>',
            )
        return JSONResponse(entry.as_json(code), headers=CACHE)

    return r
