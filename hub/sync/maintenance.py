"""Maintenance mode: while on, no worker dispatches (deliveries, polls, payment checks wait); ingest goes on and
fills the outbox. The flag lives in the database, so every process on every machine obeys it within a second."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.store.models import Flag

NAME = "maintenance"


def on_since(session: Session) -> datetime | None:
    """When maintenance mode was switched on, if it is on now (the flag as every process reads it)."""
    flag = session.get(Flag, NAME)
    return flag.updated_at if flag is not None and flag.value == "on" else None


class Maintenance:
    def __init__(self, sessions: sessionmaker[Session], *, cache_seconds: float = 1.0) -> None:
        self.sessions = sessions
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, bool] = (0.0, False)
        self._lock = threading.Lock()

    def on(self) -> bool:
        now = time.monotonic()
        with self._lock:
            at, value = self._cached
            if now - at < self.cache_seconds:
                return value
        try:
            with self.sessions() as s:
                value = on_since(s) is not None
        except Exception:  # noqa: BLE001 - a database we cannot read: do not dispatch blindly either way; keep last
            return self._cached[1]
        with self._lock:
            self._cached = (now, value)
        return value

    def status(self) -> dict[str, str | bool | None]:
        with self.sessions() as s:
            flag = s.scalar(select(Flag).where(Flag.name == NAME))
        return {
            "maintenance": flag is not None and flag.value == "on",
            "by": flag.updated_by if flag else None,
            "since": flag.updated_at.isoformat() if flag else None,
        }

    def set(self, on: bool, by: str) -> None:
        with self.sessions.begin() as s:
            flag = s.get(Flag, NAME)
            if flag is None:
                s.add(Flag(name=NAME, value="on" if on else "off", updated_by=by[:64], updated_at=utcnow()))
            else:
                flag.value, flag.updated_by, flag.updated_at = ("on" if on else "off"), by[:64], utcnow()
            from hub.services import actions

            actions.record(s, by, "maintenance_on" if on else "maintenance_off", {})
        with self._lock:
            self._cached = (0.0, on)
