"""Message builders for tests (realistic civil-status dossiers, progress steps)."""

from __future__ import annotations

import random
from typing import Any

from hub.sandbox.one_stop import make_dossier, make_progress
from tests.conftest import AGENCY, Hub

_rng = random.Random(42)


def dossier(seq: int = 1, *, status: int = 2, agency: str = AGENCY, **fields: Any) -> dict[str, Any]:
    d = make_dossier(agency, seq, _rng, status=status)
    d.update(fields)
    return d


def step(code: str, status: int, note: str = "Xử lý hồ sơ") -> dict[str, Any]:
    return make_progress(code, status, note)


def exchanges(hub: Hub, peer: str) -> list[tuple[str, str, str, str | None, bool]]:
    """The exchange record's rows with `peer`: (operation, correlation id, outcome, error code, answer digested)."""
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        rows = s.scalars(select(Exchange).where(Exchange.peer == peer).order_by(Exchange.id)).all()
        return [(r.operation, r.correlation_id, r.outcome, r.error_code, r.response_digest is not None) for r in rows]
