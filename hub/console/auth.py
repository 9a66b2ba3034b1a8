"""Operator accounts: argon2 password hashes (argon2-cffi), roles viewer, operator (repairs) and auditor (the access
log: who used a citizen's data); a second factor, codes from an authenticator app (RFC 6238, pyotp), its secret
kept encrypted under hub's secret key (ADR 0053)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.domain.errors import Conflict, DomainError, NotFound
from hub.domain.privacy import derive_key, same_text
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


def password_tag(password_hash: str, second_factor: str | None = None) -> str:
    """A short tag of an account's credentials, kept in its console sessions: a new password, or a second factor
    enrolled or reset (a phone lost), a new tag — and the sessions opened before end."""
    return hashlib.sha256(f"{password_hash}\n{second_factor or ''}".encode()).hexdigest()[:16]


STEP = 30  # seconds a code lasts (RFC 6238's default, as every authenticator app has it)
WINDOW = 1  # codes of the step before and after are taken too: a phone's clock a little off, a code typed late


def seal(keys: Sequence[bytes], username: str, secret: str, purpose: str = "totp") -> str:
    """A second factor's secret encrypted under hub's current secret key (AES-GCM), bound to the account and its
    purpose (associated data): a secret copied to another account's row does not open."""
    nonce = os.urandom(12)
    box = AESGCM(derive_key(keys[0], "operator-second-factor"))
    return base64.b64encode(nonce + box.encrypt(nonce, secret.encode(), f"{purpose}:{username}".encode())).decode()


def unseal(keys: Sequence[bytes], username: str, sealed: str, purpose: str = "totp") -> str | None:
    """The secret `seal` encrypted, under the current key or a previous one (HUB_PREVIOUS_SECRET_KEYS); None if
    none opens it."""
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        return None
    for key in keys:
        with contextlib.suppress(InvalidTag, ValueError):
            box = AESGCM(derive_key(key, "operator-second-factor"))
            return box.decrypt(raw[:12], raw[12:], f"{purpose}:{username}".encode()).decode()
    return None


def new_secret() -> str:
    """A second factor's secret: 160 random bits in base32, as authenticator apps take it."""
    return pyotp.random_base32()


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code `code` is (within WINDOW of now), None if it is none of them."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=STEP)
    current = int((time.time() if now is None else now) // STEP)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if same_text(totp.at(step * STEP), code):
            return step
    return None


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    """The otpauth:// address an authenticator app reads from the enrolment's QR code."""
    return pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=username, issuer_name=issuer)


class Operators:
    def __init__(self, sessions: sessionmaker[Session], keys: Sequence[bytes] = ()) -> None:
        self.sessions = sessions
        self.keys = list(keys)  # hub's secret keys, the current first: what the second factors are sealed under

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
        return op.role, password_tag(op.password_hash, op.totp_secret)

    def has_second_factor(self, username: str) -> bool:
        with self.sessions() as s:
            return s.scalar(select(Operator.totp_secret).where(Operator.username == username)) is not None

    def check_code(self, username: str, code: str, now: float | None = None) -> bool:
        """Whether `code` is the enabled account's current code, not taken before: a code is taken once (its step
        noted in the same statement that checks it was not), so one read over a shoulder or from a proxy's log is
        of no use afterwards."""
        with self.sessions() as s:
            op = s.scalar(select(Operator).where(Operator.username == username))
        if op is None or op.disabled or op.totp_secret is None:
            return False
        secret = unseal(self.keys, username, op.totp_secret)
        step = matching_step(secret, code, now) if secret is not None else None
        if step is None:
            return False
        with self.sessions.begin() as s:
            taken = s.execute(
                update(Operator)
                .where(
                    Operator.username == username,
                    Operator.totp_secret == op.totp_secret,
                    or_(Operator.totp_last_step.is_(None), Operator.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
            return bool(taken.rowcount)  # type: ignore[attr-defined]

    def enroll(self, username: str, secret: str, code: str, now: float | None = None) -> bool:
        """Keep `secret` as the account's second factor if `code` is its current code (the operator's app reads it
        as hub does); False otherwise, or if the account enrolled meanwhile (in another browser)."""
        from hub.services import actions

        step = matching_step(secret, code, now)
        if step is None:
            return False
        with self.sessions.begin() as s:
            done = s.execute(
                update(Operator)
                .where(Operator.username == username, Operator.totp_secret.is_(None), Operator.disabled.is_(False))
                .values(totp_secret=seal(self.keys, username, secret), totp_last_step=step)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return False
            actions.record(s, f"console:{username}", "second_factor_enrolled", {"username": username})
        return True

    def reset_second_factor(self, username: str, *, by: str | None = None) -> None:
        """The account's second factor forgotten (its phone lost or replaced): its open sessions end, and it enrolls
        a new one at its next sign-in."""

        def forget(op: Operator) -> None:
            op.totp_secret, op.totp_last_step = None, None

        self._change(username, by, "operator_second_factor_reset", {}, forget)

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
                    "second_factor": o.totp_secret is not None,
                    "created_at": o.created_at.isoformat(),
                    "last_sign_in": seen.isoformat() if (seen := last.get(f"console:{o.username}")) else None,
                }
                for o in s.scalars(select(Operator).order_by(Operator.username))
            ]
