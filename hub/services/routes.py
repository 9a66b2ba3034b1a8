"""The down-flow routing table: agency code -> provincial one-stop endpoint (`hub routes ...`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from sqlalchemy import delete, distinct, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.domain.errors import DomainError
from hub.domain.identifiers import AGENCY_CODE_RE
from hub.store.models import Route


def _valid_pattern(pattern: str) -> str:
    stem = pattern[:-1] if pattern.endswith("*") else pattern
    if pattern == "*" or (
        pattern.endswith("*") and stem and all(c in "0123456789.ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in stem)
    ):
        return pattern
    if AGENCY_CODE_RE.match(pattern):
        return pattern
    raise DomainError(
        f"route pattern {pattern!r} is neither an agency code nor a prefix ending in '*'", code="invalid_route_pattern"
    )


def _valid_endpoint(endpoint: str) -> str:
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DomainError(f"endpoint {endpoint!r} is not an http(s) URL", code="invalid_route_endpoint")
    return endpoint.rstrip("/")


def resolve(session: Session, agency: str) -> str | None:
    """The endpoint for an agency: an exact route wins, then the longest matching prefix."""
    best: tuple[int, str] | None = None
    for pattern, endpoint in session.execute(select(Route.agency_pattern, Route.endpoint)):
        if pattern == agency:
            return str(endpoint)
        stem = pattern[:-1] if pattern.endswith("*") else None
        if stem is not None and agency.startswith(stem) and (best is None or len(stem) > best[0]):
            best = (len(stem), str(endpoint))
    return best[1] if best else None


class Routes:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, pattern: str, endpoint: str) -> dict[str, Any]:
        pattern, endpoint = _valid_pattern(pattern), _valid_endpoint(endpoint)
        with self.sessions.begin() as s:
            row = s.scalar(select(Route).where(Route.agency_pattern == pattern))
            if row is None:
                s.add(Route(agency_pattern=pattern, endpoint=endpoint, created_at=utcnow()))
            else:
                row.endpoint = endpoint
        return {"agency_pattern": pattern, "endpoint": endpoint}

    def remove(self, pattern: str) -> bool:
        with self.sessions.begin() as s:
            return bool(s.execute(delete(Route).where(Route.agency_pattern == pattern)).rowcount)  # type: ignore[attr-defined]

    def systems(self) -> int:
        """How many one-stop systems the table routes to (distinct endpoints)."""
        with self.sessions() as s:
            return int(s.scalar(select(func.count(distinct(Route.endpoint)))) or 0)

    def all(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return [
                {"agency_pattern": p, "endpoint": e}
                for p, e in s.execute(select(Route.agency_pattern, Route.endpoint).order_by(Route.agency_pattern))
            ]
