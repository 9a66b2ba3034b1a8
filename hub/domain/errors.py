"""Domain errors: each carries a stable machine-readable code that the API maps to problem+json."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain was broken. `code` is stable and documented; `status` is the HTTP status to use."""

    code = "domain_error"
    status = 422

    def __init__(self, detail: str, *, code: str | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidIdentifier(DomainError):
    code = "invalid_identifier"
    status = 422


class InvalidDate(DomainError):
    code = "invalid_date"
    status = 422


class InvalidTransition(DomainError):
    code = "invalid_transition"
    status = 409


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class Conflict(DomainError):
    code = "conflict"
    status = 409


class TooManyRequests(DomainError):
    """A client went past its quota; `retry_after` (whole seconds) says when it may try again."""

    code = "rate_limited"
    status = 429
