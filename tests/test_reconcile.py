"""Reconciliation with the national portal, with deliberate drift of each kind seeded in the portal sandbox:
a dossier the portal lost, one restored from an older backup (status behind), one changed at the portal (status
ahead), one filed at the portal that hub never heard of — reported per dossier, the safe ones repaired in order."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hub.sandbox.common import ServerThread
from tests.conftest import Creds, Hub, HubFactory
from tests.helpers import dossier, portal_cli_env
from tests.test_cli import run
from tests.test_relay import PortalOfficer, file_and_walk, portal_history


@pytest.fixture
def drifted(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds, onestop_server: ServerThread
) -> tuple[Hub, list[str]]:
    hub = hub_factory()
    codes = file_and_walk(hub, 4, [4])  # 1 in sync, 2 lost, 3 behind (walked further below), 4 ahead
    for status in (9,):
        hub.http.post(f"/v1/dossiers/{codes[2]}/progress", json=_step(codes[2], status))
    assert hub.wait_idle() == {"delivered": 9}
    portal.post(f"/_sandbox/dossiers/{codes[1]}/forget")
    portal.post(f"/_sandbox/dossiers/{codes[2]}/restore", json={"status": 4})
    PortalOfficer(portal, creds.portal_password).call(
        "CapNhatTienDoHoSoMC", {"data": [_step(codes[3], 9)]}
    )  # someone at the portal moved dossier 4 on
    hub.runtime.routes.add("000.00.17.*", onestop_server.url)
    filed_there = dossier(77, status=2)
    assert portal.post("/_sandbox/file", json={"dossier": filed_there}).status_code == 200
    return hub, [*codes, filed_there["MaHoSo"]]


def _step(code: str, status: int) -> dict[str, object]:
    from tests.helpers import step

    return step(code, status)


def test_each_kind_of_drift_is_reported_and_the_safe_ones_repaired(
    drifted: tuple[Hub, list[str]], portal: httpx.Client
) -> None:
    hub, codes = drifted
    _, lost, behind, ahead, unknown = codes
    result = hub.runtime.reconcile()
    kinds = {d["code"]: d["kind"] for d in result["drift"]}
    assert kinds == {
        lost: "missing_at_portal",
        behind: "status_behind",
        ahead: "status_ahead",
        unknown: "unknown_to_hub",
    }
    assert result["in_sync"] == 1 and result["checked"] == 4
    repaired = {d["code"]: d["repaired"] for d in result["drift"]}
    assert repaired[lost] == 2 and repaired[behind] == 1 and repaired[ahead] == 0
    assert hub.wait_idle() == {"delivered": 9}
    assert portal_history(portal, lost) == [2, 4]  # refiled, in order
    assert portal_history(portal, behind) == [2, 4, 9]
    again = hub.runtime.reconcile(repair=False)
    assert {d["code"]: d["kind"] for d in again["drift"]} == {ahead: "status_ahead", unknown: "unknown_to_hub"}
    assert again["in_sync"] == 3
    # every question put to the portal is on the record of outbound exchanges, as the relay's deliveries are
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        asked = s.execute(
            select(Exchange.operation, Exchange.correlation_id, Exchange.outcome).where(
                Exchange.correlation_id.like("reconcile%")
            )
        ).all()
    look_ups = sorted(c for op, c, _ in asked if op == "TraCuuHoSo")
    assert look_ups == sorted(2 * [f"reconcile-{c}" for c in (lost, behind, ahead)] + [f"reconcile-{codes[0]}"] * 2)
    assert [(op, outcome) for op, c, outcome in asked if c == "reconcile"] == 2 * [("TraCuuHoSoMoi", "ok")]
    # the portal's "unknown dossier" to the first look-up of the lost one is its answer, on the record as handled:
    # a province going live, its dossiers not yet at the portal, must not read as a portal failing (HubPeerErrors)
    assert {outcome for op, c, outcome in asked if c == f"reconcile-{lost}"} == {"handled", "ok"}


def test_reconcile_from_the_command_line(drifted: tuple[Hub, list[str]], tmp_path: Path) -> None:
    env = portal_cli_env(drifted[0], tmp_path)
    dry = run(["reconcile", "--no-repair", "--json"], tmp_path, env)
    assert dry.returncode == 1, dry.stderr  # drift that needs a person remains
    report = json.loads(dry.stdout)
    assert report["drift_by_kind"] == {
        "missing_at_portal": 1,
        "status_behind": 1,
        "status_ahead": 1,
        "unknown_to_hub": 1,
    }
    assert report["repaired_events"] == 0
    table = run(["reconcile", "--no-repair"], tmp_path, env)
    assert "status_ahead" in table.stdout and "comparing with the national portal" in table.stderr


@pytest.mark.parametrize(("batch", "concurrency"), [(1, 1), (3, 4)])
def test_batches_and_concurrent_look_ups_give_the_same_verdicts_in_order(
    drifted: tuple[Hub, list[str]], batch: int, concurrency: int
) -> None:
    from hub.sync.reconcile import reconcile

    hub, (_, lost, behind, ahead, _) = drifted
    seen: list[tuple[int, int]] = []
    result = reconcile(
        hub.runtime.sessions,
        hub.runtime.portal,
        repair=False,
        batch=batch,
        concurrency=concurrency,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert [(d.code, d.kind) for d in result.drift] == [
        (lost, "missing_at_portal"),
        (behind, "status_behind"),
        (ahead, "status_ahead"),
    ]
    assert (result.checked, result.in_sync, result.errors) == (4, 1, 0)
    assert [d for d, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][0] == seen[-1][1] >= 4


def test_a_portal_reply_that_breaks_the_contract_is_an_error_not_a_crash(drifted: tuple[Hub, list[str]]) -> None:
    """The portal answers a look-up with a status that is no status, and lists entries that are not dossiers:
    that dossier is counted as an error (as an unreachable look-up is), the junk entries are passed over, and the
    run goes on to judge every other dossier."""
    from typing import Any

    from hub.sync.reconcile import reconcile, unknown_to_hub

    hub, (in_sync, lost, behind, ahead, unknown) = drifted
    real = hub.runtime.portal

    class Garbling:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def look_up(self, code: str, *, correlation_id: str, **kw: Any) -> dict[str, Any] | None:
            seen = real.look_up(code, correlation_id=correlation_id, **kw)
            return {**seen, "TrangThaiHoSo": "đang xử lý"} if seen is not None and code == in_sync else seen

        def call(self, service: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
            reply = real.call(service, payload, **kw)
            if service == "TraCuuHoSoMoi":
                reply = {**reply, "data": [*reply["data"], "junk", {"MaHoSo": "x", "TrangThaiHoSo": None}, 7]}
            return reply

    result = reconcile(hub.runtime.sessions, Garbling(), repair=False)  # type: ignore[arg-type]
    assert (result.checked, result.in_sync, result.errors) == (4, 0, 1)
    assert [(d.code, d.kind) for d in result.drift] == [
        (lost, "missing_at_portal"),
        (behind, "status_behind"),
        (ahead, "status_ahead"),
    ]
    found = unknown_to_hub(hub.runtime.sessions, Garbling(), ["000.00.17.*"])  # type: ignore[arg-type]
    assert [(d.code, d.kind) for d in found] == [(unknown, "unknown_to_hub")]


def test_a_portal_down_is_asked_once_per_batch_not_once_per_dossier(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """Reconciling while the portal throttles hub (429): the look-ups already in flight fail, the rest of the run
    is not asked (before: every open dossier was — 10,000 of them, or 10 s apiece against a portal that times out),
    and the run says so (exit 1 from the command)."""
    hub = hub_factory()
    file_and_walk(hub, 20, [4])
    assert hub.wait_idle() == {"delivered": 40}
    portal.post("/_sandbox/faults", json={"rate_limit_seconds": 30})
    try:
        result = hub.runtime.reconcile()
        told_to_wait = portal.get("/_sandbox/faults").json()["rate_limited"]
    finally:
        portal.post("/_sandbox/faults", json={"rate_limit_seconds": 0})
    concurrency = hub.settings.reconcile_concurrency
    assert result["checked"] == 20 and result["errors"] + result["not_asked"] == 20, result
    assert result["errors"] <= concurrency and result["not_asked"] >= 20 - concurrency
    assert told_to_wait <= concurrency + 1  # the look-ups in flight when the first was told, and the listing
    assert run_outcome(hub) == "error"  # not a success: the console and HubScheduledJobStale see it
    assert hub.runtime.reconcile()["in_sync"] == 20  # the portal back: all asked, all in sync
    assert run_outcome(hub) == "ok"


def run_outcome(hub: Hub) -> str:
    from hub.sync import jobs

    with hub.runtime.sessions() as s:
        last = jobs.last_run(s, "reconcile")
        assert last is not None
        return last.outcome


def test_dossiers_whose_result_was_returned_are_compared_for_a_week_then_left_alone(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """A province returns hundreds of thousands of results a year: each hourly run asked the portal about every one
    of them, for ever. A dossier at 10 is compared for `HUB_RECONCILE_DAYS` (7) after — the portal left
    behind on that last step is brought up to date — and not once its personal data has been removed (its messages
    were scrubbed: they cannot go to the portal again)."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from hub.domain.dates import utcnow
    from hub.store.models import Dossier, Exchange

    hub = hub_factory()
    recent, old, redacted = file_and_walk(hub, 3, [4, 9, 10])
    assert hub.wait_idle() == {"delivered": 12}
    with hub.runtime.sessions.begin() as s:
        s.execute(update(Dossier).where(Dossier.code == old).values(updated_at=utcnow() - timedelta(days=8)))
        s.execute(update(Dossier).where(Dossier.code == redacted).values(redacted_at=utcnow()))
    for code in (recent, old, redacted):
        portal.post(f"/_sandbox/dossiers/{code}/restore", json={"status": 9})  # the portal lost the last step
    result = hub.runtime.reconcile()
    assert result["checked"] == 1 and [(d["code"], d["kind"]) for d in result["drift"]] == [(recent, "status_behind")]
    assert hub.wait_idle() == {"delivered": 12}  # the last step went again
    assert portal_history(portal, recent)[-1] == 10 and portal_history(portal, old)[-1] == 9
    with hub.runtime.sessions() as s:
        asked = set(s.scalars(select(Exchange.correlation_id).where(Exchange.operation == "TraCuuHoSo")))
    assert asked == {f"reconcile-{recent}"}  # the others were not even asked about
