"""Polling fallback of the down-flow: ask the national portal for dossiers filed there for the agencies hub routes
(TraCuuHoSoMoi), and take in what a lost push did not bring. A dossier already known unchanged creates nothing,
so a push and a poll of the same dossier lead to one delivery."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr, ValidationError

from hub.adapters.errors import PeerError
from hub.domain.errors import DomainError
from hub.services.schemas import DossierIn
from hub.settings import ClientSystem

log = logging.getLogger("hub.polling")

POLLER = ClientSystem(name="dvcqg-poll", api_key=SecretStr("-"), agencies=["*"], roles=["national_portal"])


def poll_portal(runtime: Any, *, since: str = "00000000000000") -> dict[str, int]:
    """One polling round over the routing table's agencies. Returns counts (new, unchanged, invalid, errors)."""
    counts = {"seen": 0, "new_events": 0, "unchanged": 0, "invalid": 0, "errors": 0}
    for route in runtime.routes.all():
        try:
            reply = runtime.portal.call(
                "TraCuuHoSoMoi",
                {"MaCoQuan": route["agency_pattern"], "TuNgay": since},
                idempotency_key=None,
                correlation_id="poll",
                on_exchange=runtime.record_exchange,
            )
        except PeerError as exc:
            counts["errors"] += 1
            log.warning("poll: portal did not answer", extra={"error_code": exc.code})
            continue
        items = reply.get("data")
        for item in items if isinstance(items, list) else []:
            counts["seen"] += 1
            try:
                dossier = DossierIn.model_validate(item)
                answer = runtime.dossiers.push_from_portal(POLLER, dossier, idempotency_key=None, correlation_id="poll")
            except (ValidationError, DomainError) as exc:
                counts["invalid"] += 1
                log.warning("poll: dossier not taken in", extra={"reason": exc.__class__.__name__})
                continue
            counts["unchanged" if answer.body.get("unchanged") else "new_events"] += 1
    return counts
