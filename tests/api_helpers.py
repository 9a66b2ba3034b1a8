"""Assertions shared by API tests."""

from __future__ import annotations

import re
from typing import Any

import httpx

from hub.api.problem_types import PROBLEM_TYPES


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["title"] and body["type"] == f"/problems/{code}"
    # the code is one the served catalogue explains (GET /problems/{code}), with this status among its own
    assert code in PROBLEM_TYPES and status in PROBLEM_TYPES[code].statuses, (code, status)
    assert not re.fullmatch(r"(?:[A-Z][a-z]+){2,}", body["title"]), body  # words for a reader, not a class name
    return body


def as_documented(spec: dict[str, Any], method: str, path: str, r: Any) -> None:
    """`r` is what the served OpenAPI document says `method path` answers: its status code is documented (exactly, or
    as a range such as 4XX), its media type is one documented for that code, and its body validates against the
    schema documented for them — with every documented object closed (`additionalProperties: false` where it says
    nothing else), so that a field the answer carries and the document does not name fails too: what a client
    generated from the document (openapi-generator, NSwag…) would not read."""
    from jsonschema import Draft202012Validator

    responses = spec["paths"][path][method.lower()]["responses"]
    code = str(r.status_code)
    documented = responses.get(code) or responses.get(f"{code[0]}XX") or responses.get("default")
    where = f"{method.upper()} {path} -> {code}: {r.text[:300]}"
    assert documented is not None, f"{where}; documented: {sorted(responses)}"
    content = documented.get("content")
    if not content:
        assert not r.content, f"{where}; documented without a body"
        return
    sent = {k.lower(): v for k, v in r.headers.items()}.get("content-type", "")
    media = (sent[0] if isinstance(sent, list) else sent).split(";")[0].strip()  # httpx's str, schemathesis' list
    assert media in content, f"{where}; {media!r} is not among the documented {sorted(content)}"
    schema = content[media].get("schema")
    if not schema or not (media.endswith("json")):
        return
    root = {"allOf": [_closed(schema)], "components": _closed(spec.get("components", {}))}
    errors = sorted(Draft202012Validator(root).iter_errors(r.json()), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}\n" + "\n".join(f"  at {list(e.absolute_path)}: {e.message[:300]}" for e in errors)


def _closed(schema: Any) -> Any:
    """`schema` with each object that lists its properties and says nothing of others closed to others."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if "properties" in schema and isinstance(schema["properties"], dict) and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out
