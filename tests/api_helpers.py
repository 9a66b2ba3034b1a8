"""Assertions shared by API tests."""

from __future__ import annotations

import re
from typing import Any

import httpx


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["title"] and body["type"].endswith(code)
    assert not re.fullmatch(r"(?:[A-Z][a-z]+){2,}", body["title"]), body  # words for a reader, not a class name
    return body
