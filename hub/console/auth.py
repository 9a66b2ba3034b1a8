"""Operator accounts: argon2 password hashes (argon2-cffi), roles viewer and operator."""

from __future__ import annotations

import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.domain.errors import Conflict, DomainError
from hub.store.models import Operator

ROLES = ("viewer", "operator")
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not-a-password")  # verified against on unknown users, so timing does not reveal them


class Operators:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, username: str, password: str, role: str, *, by: str | None = None) -> None:
        """A new account; recorded as `by`'s action (default: the OS user running the command)."""
        from hub.services import actions

        if role not in ROLES:
            raise DomainError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        if len(password) < 10:
            raise DomainError("passwords have at least 10 characters", code="weak_password")
        if not username or len(username) > 64 or not username.replace(".", "").replace("-", "").isalnum():
            raise DomainError("user names are letters, digits, '.' and '-'", code="invalid_username")
        with self.sessions.begin() as s:
            if s.scalar(select(Operator).where(Operator.username == username)) is not None:
                raise Conflict(f"operator {username!r} exists", code="operator_exists")
            s.add(
                Operator(
                    username=username,
                    password_hash=_hasher.hash(password),
                    role=role,
                    disabled=False,
                    created_at=utcnow(),
                )
            )
            actions.record(s, by or actions.cli_actor(), "operator_added", {"username": username, "role": role})

    def authenticate(self, username: str, password: str) -> str | None:
        """The operator's role if the password is right (and the account enabled), else None."""
        with self.sessions() as s:
            op = s.scalar(select(Operator).where(Operator.username == username))
        if op is None or op.disabled:
            with contextlib.suppress(VerificationError):
                _hasher.verify(_DUMMY, password)
            return None
        try:
            _hasher.verify(op.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return op.role

    def count(self) -> int:
        with self.sessions() as s:
            return len(s.scalars(select(Operator.id)).all())

    def list(self) -> list[dict[str, object]]:
        with self.sessions() as s:
            return [
                {"username": o.username, "role": o.role, "disabled": o.disabled, "created_at": o.created_at.isoformat()}
                for o in s.scalars(select(Operator).order_by(Operator.username))
            ]
