"""What operators did to hub, kept: each replay, retry, dead letter set aside, maintenance switch, payment queried,
operator account changed, and each sign-in (failed ones too), with who, when, to what and what came of it. Written
in the transaction of the action it records — an action is never without its record, nor a record without its
action. Append-only: nothing in hub updates or deletes a row. Read in the console (`/ops/actions`) and with
`hub operators actions`."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from hub.domain.dates import utcnow
from hub.logs import correlation_id
from hub.store.models import OperatorAction, table

ACTIONS = (
    "replay",
    "retry",
    "set_aside",
    "maintenance_on",
    "maintenance_off",
    "payment_check",
    "payment_given_up",
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "operator_added",
    "operator_disabled",
    "operator_enabled",
    "operator_password_set",
    "operator_role_set",
    "operator_second_factor_reset",
    "second_factor_enrolled",
    "personal_data_removed",
    "access_log_viewed",
    "job_run",
)
INSERT_ACTION = insert(table(OperatorAction))


def cli_actor() -> str:
    """The actor of a command run on the server: cli:<the OS user running it>."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no name
        user = str(os.getuid())
    return f"cli:{user}"


def record(
    session: Session, actor: str, action: str, target: Mapping[str, Any], outcome: Mapping[str, Any] | None = None
) -> None:
    """Keep one action, in `session`'s transaction (committed with the action, or not at all)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown operator action {action!r}")
    session.execute(
        INSERT_ACTION,
        {
            "at": utcnow(),
            "actor": actor[:64],
            "action": action,
            "target": dict(target),
            "outcome": dict(outcome or {}),
            "correlation_id": cid if (cid := correlation_id.get()) != "-" else None,
        },
    )


def recent(
    session: Session, *, actor: str | None = None, action: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """The latest actions first, of one actor or one kind if asked."""
    query = select(OperatorAction).order_by(OperatorAction.id.desc()).limit(limit)
    if actor:
        query = query.where(OperatorAction.actor == actor)
    if action:
        query = query.where(OperatorAction.action == action)
    return [
        {
            "id": a.id,
            "at": a.at.isoformat(),
            "actor": a.actor,
            "action": a.action,
            "target": a.target,
            "outcome": a.outcome,
            "correlation_id": a.correlation_id,
        }
        for a in session.scalars(query)
    ]
