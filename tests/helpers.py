"""Message builders for tests (realistic civil-status dossiers, progress steps)."""

from __future__ import annotations

import random
from typing import Any

from hub.sandbox.one_stop import make_dossier, make_progress
from tests.conftest import AGENCY

_rng = random.Random(42)


def dossier(seq: int = 1, *, status: int = 2, agency: str = AGENCY, **fields: Any) -> dict[str, Any]:
    d = make_dossier(agency, seq, _rng, status=status)
    d.update(fields)
    return d


def step(code: str, status: int, note: str = "Xử lý hồ sơ") -> dict[str, Any]:
    return make_progress(code, status, note)
