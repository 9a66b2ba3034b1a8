"""Operator accounts: argon2 password hashes (argon2-cffi), roles viewer, operator (repairs) and auditor (the access
log: who used a citizen's data)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.domain.errors import Conflict, DomainError, NotFound
from hub.store.models import Operator

ROLES = ("viewer", "operator", "auditor")  # an auditor sees what a viewer sees, and the access log
_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """A hash verified against on unknown users, so timing does not reveal them: made on the first sign-in, not on
    import (an argon2 hash costs every process that imports this, a CLI command too, ~0.15 s)."""
    return _hasher.hash("not-a-password")


def _strong(password: str) -> None:
    if len(password) < 10:
        raise DomainError("passwords have at least 10 characters", code="weak_password")


def password_tag(password_hash: str) -> str:
    """A short tag of an account's password hash, kept in its console sessions: a new password, a new tag."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class Operators:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, username: str, password: str, role: str, *, by: str | None = None) -> None:
        """A new account; recorded as `by`'s action (default: the OS user running the command)."""
        from hub.services import actions

        if role not in ROLES:
            raise DomainError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        _strong(password)
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

    def _change(self, username: str, by: str | None, action: str, target: dict[str, object], change: Any) -> None:
        from hub.services import actions

        with self.sessions.begin() as s:
            op = s.scalar(select(Operator).where(Operator.username == username).with_for_update())
            if op is None:
                raise NotFound(f"no operator {username!r}", code="operator_not_found")
            change(op)
            actions.record(s, by or actions.cli_actor(), action, {"username": username, **target})

    def disable(self, username: str, *, by: str | None = None) -> None:
        """The account signs in no more, and its open console sessions end at their next request."""
        self._change(username, by, "operator_disabled", {}, lambda op: setattr(op, "disabled", True))

    def enable(self, username: str, *, by: str | None = None) -> None:
        self._change(username, by, "operator_enabled", {}, lambda op: setattr(op, "disabled", False))

    def set_password(self, username: str, password: str, *, by: str | None = None) -> None:
        """A new password; the account's open console sessions end (a password is changed when it leaked)."""
        _strong(password)
        digest = _hasher.hash(password)
        self._change(username, by, "operator_password_set", {}, lambda op: setattr(op, "password_hash", digest))

    def set_role(self, username: str, role: str, *, by: str | None = None) -> None:
        """Another role, in force from the account's next request in every open session."""
        if role not in ROLES:
            raise DomainError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        self._change(username, by, "operator_role_set", {"role": role}, lambda op: setattr(op, "role", role))

    def standing(self, username: str) -> tuple[str, str] | None:
        """(role, password tag) of an enabled account, None if it is disabled or gone: what a console session
        signed in under must still match. The tag changes with the password, ending sessions opened before."""
        with self.sessions() as s:
            op = s.scalar(select(Operator).where(Operator.username == username))
        if op is None or op.disabled:
            return None
        return op.role, password_tag(op.password_hash)

    def authenticate(self, username: str, password: str) -> str | None:
        """The operator's role if the password is right (and the account enabled), else None."""
        with self.sessions() as s:
            op = s.scalar(select(Operator).where(Operator.username == username))
        if op is None or op.disabled:
            with contextlib.suppress(VerificationError):
                _hasher.verify(_dummy(), password)
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
        """Every account, with its last console sign-in (from the record of operators' actions): an account
        nobody has used for months is one to disable."""
        from hub.store.models import OperatorAction

        with self.sessions() as s:
            last = dict(
                s.execute(
                    select(OperatorAction.actor, func.max(OperatorAction.at))
                    .where(OperatorAction.action == "sign_in")
                    .group_by(OperatorAction.actor)
                ).all()
            )
            return [
                {
                    "username": o.username,
                    "role": o.role,
                    "disabled": o.disabled,
                    "created_at": o.created_at.isoformat(),
                    "last_sign_in": seen.isoformat() if (seen := last.get(f"console:{o.username}")) else None,
                }
                for o in s.scalars(select(Operator).order_by(Operator.username))
            ]
