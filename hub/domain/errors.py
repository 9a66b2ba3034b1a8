"""Domain errors: each carries a stable machine-readable code that the API maps to problem+json."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain was broken. `code` is stable and documented; `status` is the HTTP status to use."""

    code = "domain_error"
    status = 422
    title: str | None = None  # problem+json's summary of the kind of problem; the HTTP status's phrase if None

    def __init__(self, detail: str, *, code: str | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers its answer carries beside the problem (Retry-After, WWW-Authenticate…): a 429 or 503 that
        knows when to come back (`retry_after`, whole seconds) says so in Retry-After."""
        seconds = self.extra.get("retry_after")
        if self.status in (429, 503) and isinstance(seconds, int):
            return {"Retry-After": str(seconds)}
        return {}


class InvalidIdentifier(DomainError):
    code = "invalid_identifier"
    status = 422
    title = "Invalid identifier"


class InvalidDate(DomainError):
    code = "invalid_date"
    status = 422
    title = "Invalid date"


class InvalidTransition(DomainError):
    code = "invalid_transition"
    status = 409
    title = "Status transition not allowed"


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class TooManyRequests(DomainError):
    """A client went past its quota; `retry_after` (whole seconds) says when it may try again."""

    code = "rate_limited"
    status = 429
    title = "Too many requests"
