"""The `hub` command as a newcomer and an operator use it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest

from hub.sandbox.common import ServerThread
from tests.conftest import Creds, Hub, HubFactory
from tests.helpers import a_failed_poll, dossier, step, waiting_out_a_backoff
from tests.pki_helpers import Token, Trust

HUB = str(Path(sys.executable).with_name("hub"))


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return subprocess.run(
        [HUB, *args],
        cwd=cwd,
        env={**base, "COLUMNS": "160", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_runs_end_to_end_on_a_fresh_directory(tmp_path: Path) -> None:
    result = run(["demo"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "What arrived where" in out and "outage" in out
    # hub's own warnings during the outage are lines of the demo, saying what they are about (not bare log text)
    assert "· hub warning: delivery failed (destination national_portal" in out and "\ndelivery failed" not in out
    assert "Không được tiếp nhận" in out and "Yêu cầu bổ sung" in out  # a refusal and a supplement request
    assert "Tin nhắn SMS gửi công dân" in out and "đã được tiếp nhận. Ngày hẹn trả kết quả" in out  # notifications
    assert "signed document 57/TLKS-UBND" in out and "XAdES-B-T" in out  # signed, time-stamped, accepted
    assert "Công an phường Bến Nghé reported (signed status notices" in out and "03 Đã tiếp nhận" in out
    assert "credited once; hub moved the dossier to 4 by itself" in out  # a fee paid through the payment platform
    assert "the citizen, signed in, sees" in out and "civil_status_registration" in out  # their data's uses
    assert "its owner, signed in, looks it up" in out and "fee 8,000 VND" in out  # their own dossier, its fee paid
    assert "sign-in 00, DongBoHoSoMC 00" in out  # a one-stop system written for the portal, through /dvcqg
    # this month's report: the one refused (3) and the one withdrawn while newly filed (1 -> 7) were never received;
    # the four others were, and are resolved (the demo's walks are seeded)
    assert "report on procedures resolved: 4 received (2 online), 4 resolved (100 % on time), 0 withdrawn" in out
    assert "/docs" in out
    assert (tmp_path / "var" / "demo" / "hub.db").exists()


def with_a_dead_letter(
    hub_factory: HubFactory, portal: httpx.Client, tmp_path: Path
) -> tuple[Hub, dict[str, Any], dict[str, str]]:
    """A hub whose dossier's second message is a dead letter (the portal forgot the dossier: `portal_unknown_dossier`),
    and the environment a command needs to reach its database."""
    hub = hub_factory()
    d = dossier(1)
    hub.http.post("/v1/dossiers", json=d)
    hub.wait_idle()
    portal.post("/_sandbox/reset")  # the portal forgets the dossier: the next progress is refused (unknown)
    hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 4))
    hub.wait_idle()
    return hub, d, {"HUB_DATABASE_URL": hub.settings.effective_database_url, "HUB_VAR_DIR": str(tmp_path)}


def test_jobs_scheduled_says_how_often_each_runs_and_since_when_a_failing_one_has_not_succeeded(
    hub_factory: HubFactory, portal: httpx.Client, tmp_path: Path
) -> None:
    """`hub jobs scheduled`, the console's sync-jobs page for a shell or a monitoring script: each job's schedule
    in words, its last run and outcome; the portal down at a poll, the poll is failing since its last success and
    the command exits 1; the next poll that succeeds, 0; no success for three of its intervals (no worker runs
    it), stale, 1 again."""
    hub = hub_factory()
    hub.runtime.routes.add("000.00.17.*", "http://127.0.0.1:9")  # an agency to poll the portal for
    env = {
        "HUB_DATABASE_URL": hub.settings.effective_database_url,
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_PORTAL_POLL_INTERVAL": "120",
        "HUB_RECONCILE_INTERVAL": "0",
    }
    hub.runtime.poll_portal()
    a_failed_poll(hub, portal)
    listed = run(["jobs", "scheduled", "--json"], tmp_path, env)
    assert listed.returncode == 1, listed.stderr  # a job is failing
    jobs = {j["name"]: j for j in json.loads(listed.stdout)["items"]}
    assert set(jobs) == {
        "poll_portal", "check_payments", "reconcile", "reconcile_payments", "poll_edoc_status", "anchor_audit_log",
        "remove_personal_data",
    }  # fmt: skip
    poll = jobs["poll_portal"]
    assert (poll["schedule"], poll["outcome"], poll["failing"]) == ("every 2 minutes", "error", True)
    assert poll["last_ok_at"] is not None and poll["last_ok_at"] <= poll["finished_at"]
    assert jobs["reconcile"]["schedule"] == "not scheduled (runs when asked)"
    assert jobs["reconcile_payments"]["schedule"] == "daily, from 6:00 Vietnam time"
    assert (jobs["anchor_audit_log"]["finished_at"], jobs["anchor_audit_log"]["failing"]) == (None, False)
    table = run(["jobs", "scheduled"], tmp_path, env)
    assert table.returncode == 1 and re.search(r"poll_portal\s.*every 2 minutes.*failed", table.stdout), table.stdout
    hub.runtime.poll_portal()  # the portal back
    assert run(["jobs", "scheduled"], tmp_path, env).returncode == 0
    # no worker runs the poll any more: three of its intervals without a success, it is stale; so is a job that
    # has never run while the schedule has (a job no worker knows, say): as old as the first run of any job
    often = {**env, "HUB_PORTAL_POLL_INTERVAL": "0.5", "HUB_AUDIT_ANCHOR_INTERVAL": "0.5"}
    time.sleep(1.6)
    stale = run(["jobs", "scheduled", "--json"], tmp_path, often)
    assert stale.returncode == 1
    items = {j["name"]: j for j in json.loads(stale.stdout)["items"]}
    poll, anchor = items["poll_portal"], items["anchor_audit_log"]
    assert (poll["failing"], poll["stale"], poll["schedule"]) == (False, True, "every 0.5 seconds")
    assert (anchor["finished_at"], anchor["stale"]) == (None, True)
    assert not any(j["stale"] for name, j in items.items() if name not in ("poll_portal", "anchor_audit_log"))
    # the metric the alert HubScheduledJobStale judges has an age for it too (it had none, and never fired)
    ages = re.findall(r'hub_scheduled_job_last_success_age_seconds\{task="anchor_audit_log"\} ([0-9.e+]+)',
                      hub.http.get("/metrics").text)  # fmt: skip
    assert ages and float(ages[0]) >= 1.6


@pytest.mark.parametrize("backend", ["postgresql"])  # the same statements on SQLite: jobs retry tests both
def test_jobs_list_show_and_replay(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds, tmp_path: Path, backend: str
) -> None:
    hub, d, env = with_a_dead_letter(hub_factory, portal, tmp_path)
    listed = run(["jobs", "list", "--state", "dead", "--json"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["totals"] == {"delivered": 1, "dead": 1}
    [dead] = data["items"]
    assert dead["MaHoSo"] == d["MaHoSo"] and dead["last_error_code"] == "portal_unknown_dossier"
    shown = run(["jobs", "show", str(dead["id"]), "--json"], tmp_path, env)
    assert json.loads(shown.stdout)["peer_reply"]["error_code"] == 5
    explained = run(["jobs", "show", str(dead["id"])], tmp_path, env)  # what the code means, and what to do
    said = "portal_unknown_dossier (refused for good): The portal holds no dossier with this MaHoSo"
    assert said in explained.stdout and "hub jobs replay" in explained.stdout, explained.stdout
    table = run(["jobs", "list"], tmp_path, env)
    assert "portal_unknown_dossier" in table.stdout
    unknown_state = run(["jobs", "list", "--state", "failed"], tmp_path, env)  # not a state: said, not an empty list
    assert unknown_state.returncode == 2 and "--state must be one of" in unknown_state.stderr
    # refusals: nothing named, an id that is not a dead letter, an unknown id
    assert run(["jobs", "replay"], tmp_path, env).returncode == 2
    refused = run(["jobs", "replay", "999999", str(2**64), "--json"], tmp_path, env)
    assert refused.returncode == 1 and json.loads(refused.stdout) == {"replayed": 0, "not_dead": [999999, 2**64]}
    assert run(["jobs", "show", str(2**64)], tmp_path, env).returncode == 1  # past any key: unknown, no traceback
    assert run(["jobs", "show", "999999"], tmp_path, env).returncode == 1
    # the operator re-files the dossier at the portal, then replays: delivered
    hub.runtime.portal.call(
        "DongBoHoSoMC", {"isUpdating": False, "data": [d]}, idempotency_key=None, correlation_id="operator"
    )
    replayed = run(["jobs", "replay", str(dead["id"]), "--json"], tmp_path, env)
    assert json.loads(replayed.stdout) == {"replayed": 1, "not_dead": []}
    hub.runtime.wake()
    assert hub.wait_idle() == {"delivered": 2}


@pytest.mark.parametrize("backend", ["sqlite"])  # the statements are the relay test's, on both databases
def test_jobs_set_aside_asks_for_a_reason_and_says_who(
    hub_factory: HubFactory, portal: httpx.Client, tmp_path: Path, backend: str
) -> None:
    """A dead letter the operator will not deliver: set aside from the command line, with the reason it must be
    given, under the name of whoever ran it (what follows it is the relay test's)."""
    _, d, env = with_a_dead_letter(hub_factory, portal, tmp_path)
    no_reason = run(["jobs", "set-aside", "--dossier", d["MaHoSo"]], tmp_path, env)
    assert no_reason.returncode == 2 and "--reason is required" in no_reason.stderr
    assert run(["jobs", "set-aside", "--reason", "x"], tmp_path, env).returncode == 2  # nothing named
    done = run(
        ["jobs", "set-aside", "--dossier", d["MaHoSo"], "--reason", "cổng đã xóa hồ sơ", "--json"], tmp_path, env
    )
    assert json.loads(done.stdout) == {"set_aside": 1, "not_dead": []}, done.stderr
    listed = json.loads(run(["jobs", "list", "--state", "set_aside", "--json"], tmp_path, env).stdout)
    [row] = listed["items"]
    assert row["set_aside_reason"] == "cổng đã xóa hồ sơ" and row["set_aside_by"].startswith("cli:")
    assert listed["totals"] == {"delivered": 1, "set_aside": 1}


def test_jobs_retry_sends_a_waiting_delivery_now(
    hub_factory: HubFactory, portal: httpx.Client, tmp_path: Path, backend: str
) -> None:
    """The peer's problem is fixed: the operator sends what waits out its backoff now, attempts kept, instead of
    waiting up to HUB_RELAY_BACKOFF_CAP."""
    hub, d = waiting_out_a_backoff(hub_factory, portal)
    env = {"HUB_DATABASE_URL": hub.settings.effective_database_url, "HUB_VAR_DIR": str(tmp_path)}
    assert run(["jobs", "retry"], tmp_path, env).returncode == 2  # nothing named
    refused = run(["jobs", "retry", "999999", "--json"], tmp_path, env)
    assert refused.returncode == 1 and json.loads(refused.stdout) == {"retried": 0, "not_waiting": [999999]}
    retried = run(["jobs", "retry", "--dossier", d["MaHoSo"], "--json"], tmp_path, env)
    assert json.loads(retried.stdout) == {"retried": 1, "not_waiting": []}, retried.stderr
    assert hub.wait_idle(timeout=10) == {"delivered": 1}  # its next attempt was two minutes away
    assert [h["status"] for h in portal.get(f"/_sandbox/dossiers/{d['MaHoSo']}").json()["history"]] == [2]
    # both, the one that did nothing too, are in the record of operators' actions under the OS user who ran them
    from hub.services.actions import cli_actor

    done = json.loads(run(["operators", "actions", "--action", "retry", "--json"], tmp_path, env).stdout)
    assert [(a["actor"], a["target"], a["outcome"]) for a in done] == [
        (cli_actor(), {"dossier": d["MaHoSo"]}, {"retried": 1, "not_waiting": []}),
        (cli_actor(), {"ids": [999999]}, {"retried": 0, "not_waiting": [999999]}),
    ]
    assert run(["operators", "actions", "--action", "delete"], tmp_path, env).returncode == 2
    [job] = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["events"][0]["deliveries"]
    assert job["attempts"] == 2
    again = run(["jobs", "retry", "--destination", "national_portal", "--json"], tmp_path, env)
    assert json.loads(again.stdout) == {"retried": 0, "not_waiting": []}  # nothing waits any more


def test_db_upgrade_and_configuration_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/x.db"  # a directory that does not exist yet
    ok = run(["db", "upgrade"], tmp_path, {"HUB_DATABASE_URL": url})
    assert ok.returncode == 0 and (tmp_path / "new" / "x.db").exists()
    assert "(was empty)" in ok.stdout and "Running upgrade" not in ok.stdout + ok.stderr  # one line, not a dozen
    again = run(["db", "upgrade"], tmp_path, {"HUB_DATABASE_URL": url})
    assert again.returncode == 0 and "(no change)" in again.stdout
    bad = run(["jobs", "list"], tmp_path, {"HUB_MODE": "production"})
    assert bad.returncode == 2 and "configuration error" in bad.stderr and "Traceback" not in bad.stderr
    no_broker = run(["worker"], tmp_path)
    assert no_broker.returncode == 2 and "HUB_BROKER_URL" in no_broker.stderr
    # a database hub does not store in is said as such, not as a driver missing; one that does not answer, in a line
    other = run(["jobs", "list"], tmp_path, {"HUB_DATABASE_URL": "mysql://hub@db/hub"})
    assert other.returncode == 2 and "HUB_DATABASE_URL" in other.stderr and "Traceback" not in other.stderr
    away = run(["jobs", "list"], tmp_path, {"HUB_DATABASE_URL": "postgresql+psycopg://hub@127.0.0.1:1/hub"})
    assert away.returncode == 1 and "the database does not answer" in away.stderr, away.stderr
    assert "Traceback" not in away.stderr


def test_serve_and_worker_refuse_a_database_not_at_the_codes_schema(tmp_path: Path) -> None:
    """On PostgreSQL hub never migrates by itself (the operator runs `hub db upgrade` once for all machines): on a
    database not at its schema it says so and stops, instead of answering 500s and logging a traceback a second."""
    import uuid

    import psycopg

    from tests.conftest import PG_ADMIN, PG_BASE, drop_pg_database

    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_BASE.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    env = {"HUB_DATABASE_URL": url, "HUB_VAR_DIR": str(tmp_path), "HUB_BROKER_URL": "redis://127.0.0.1:6379/15"}
    try:
        for command in (["serve", "--no-sandbox", "--port", "1"], ["worker"]):
            refused = run(command, tmp_path, env, timeout=60)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert "run `hub db upgrade`" in refused.stderr and "Traceback" not in refused.stderr
        # the operators' commands on that database say the same, each in a line, not a traceback of the query
        for command in (["jobs", "list"], ["audit", "verify"], ["peers", "status"]):
            said = run(command, tmp_path, env)
            assert said.returncode == 1 and "not at hub's schema" in said.stderr, said.stdout + said.stderr
            assert "run `hub db upgrade`" in said.stderr and "Traceback" not in said.stderr
        assert run(["db", "upgrade"], tmp_path, env).returncode == 0
    finally:
        drop_pg_database(url)


WORKER_THAT_FAILS = """
from celery import bootsteps

from hub.cli import cli
from hub.sync.celery_app import app


class Broken(bootsteps.StartStopStep):  # what any error Celery cannot recover from does: the worker stops
    requires = {"celery.worker.components:Pool"}

    def start(self, parent):
        raise RuntimeError("a step that fails")


app.steps["worker"].add(Broken)
cli(["worker", "--concurrency", "1"])
"""


def test_a_worker_that_stops_on_an_error_says_so_with_its_exit_code(tmp_path: Path) -> None:
    """A supervisor restarts `hub worker` "on failure" by its exit code: Celery stopping on an error it cannot
    recover from must not look like a clean stop (Celery's `worker_main` dropped the code: it exited 0)."""
    from tests.conftest import create_pg_database, drop_pg_database

    url = create_pg_database()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_DATABASE_URL": url,
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_BROKER_URL": "redis://127.0.0.1:6379/15",
    }
    try:
        failed = subprocess.run(
            [sys.executable, "-c", WORKER_THAT_FAILS], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
        assert "Unrecoverable error" in failed.stderr and "the worker stopped on an error" in failed.stderr
        unknown = run(["worker", "--pool", "greenlets"], tmp_path, env)
        assert unknown.returncode == 2 and "prefork, threads or solo" in unknown.stderr
    finally:
        drop_pg_database(url)


@pytest.mark.parametrize("backend", ["sqlite"])  # ORM only: nothing that differs between the databases
def test_catalogue_sync_and_list(
    hub_factory: HubFactory, portal: httpx.Client, creds: Creds, tmp_path: Path, backend: str
) -> None:
    hub = hub_factory(start_worker=False)
    env = {
        "HUB_DATABASE_URL": hub.settings.effective_database_url,
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_NATIONAL_PORTAL_URL": hub.settings.effective_national_portal_url,
        "HUB_NATIONAL_PORTAL_USERNAME": hub.settings.national_portal_username,
        "HUB_NATIONAL_PORTAL_PASSWORD": creds.portal_password,
    }
    synced = run(["catalogue", "sync", "--json"], tmp_path, env)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout) == {"stored": 16, "skipped": 0}
    from tests.test_downflow import outbound

    assert ("LayDanhSachTTHC", "ok") in outbound(hub, "cli-catalogue-sync")  # on the record of outbound exchanges
    listed = json.loads(run(["catalogue", "list", "--json"], tmp_path, env).stdout)
    assert {p["MaTTHC"] for p in listed} >= {"1.001193", "1.000894"}
    table = run(["catalogue", "list"], tmp_path, env).stdout
    assert "Đăng ký khai sinh" in table
    down = run(["catalogue", "sync"], tmp_path, {**env, "HUB_NATIONAL_PORTAL_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "peer_unavailable" in down.stderr and "Traceback" not in down.stderr


def test_peers_status_and_purge(hub_factory: HubFactory, portal: httpx.Client, tmp_path: Path) -> None:
    hub = hub_factory()
    d = dossier(1)
    hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": "purge-1"})
    hub.wait_idle()
    portal.post("/_sandbox/reset")
    hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 4))  # refused: unknown there
    hub.wait_idle()
    env = {"HUB_DATABASE_URL": hub.settings.effective_database_url, "HUB_VAR_DIR": str(tmp_path)}
    [peer] = json.loads(run(["peers", "status", "--json"], tmp_path, env).stdout)
    assert peer["peer"] == "national_portal" and peer["delivered"] == 1 and peer["dead"] == 1
    assert peer["last_ok"] and peer["last_failure"] and peer["last_error_code"] == "portal_unknown_dossier"
    assert "national_portal" in run(["peers", "status"], tmp_path, env).stdout
    unconfirmed = run(["jobs", "purge", "--older-than-days", "0"], tmp_path, env)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert json.loads(run(["jobs", "list", "--json"], tmp_path, env).stdout)["totals"] == {"delivered": 1, "dead": 1}
    purged = run(["jobs", "purge", "--older-than-days", "0", "--yes", "--json"], tmp_path, env)
    assert json.loads(purged.stdout) == {"purged": 1}
    # the dead letter stays (it holds its dossier's order); the history stays
    assert json.loads(run(["jobs", "list", "--json"], tmp_path, env).stdout)["totals"] == {"dead": 1}
    assert len(hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["events"]) == 2
    # --history: old exchange records go too, except those about the dead letter (an operator needs them)
    history = json.loads(run(["jobs", "purge", "--older-than-days", "0", "--yes", "--history", "--json"], tmp_path,
                             env).stdout)  # fmt: skip
    assert history["purged"] == 0 and history["exchanges"] >= 1 and history["idempotency_keys"] == 1
    from sqlalchemy import select

    from hub.store.models import Exchange, OutboxMessage

    with hub.runtime.sessions() as s:
        left = s.execute(select(Exchange.outbox_id, Exchange.error_code)).all()
        [dead_id] = s.scalars(select(OutboxMessage.id).where(OutboxMessage.state == "dead")).all()
    assert left and {outbox_id for outbox_id, _ in left} == {dead_id}
    assert "portal_unknown_dossier" in {code for _, code in left}
    # replaying every dead letter, with a progress bar for a person (text) and none for a script (--json)
    shown = run(["jobs", "replay", "--all-dead"], tmp_path, env)
    assert shown.returncode == 0 and "replaying dead letters" in shown.stderr and "replayed 1" in shown.stdout
    assert json.loads(run(["jobs", "replay", "--all-dead", "--json"], tmp_path, env).stdout)["replayed"] in (0, 1)


def test_serve_with_no_configuration_runs_the_whole_flow_against_its_sandboxes(tmp_path: Path) -> None:
    """`hub serve` on a fresh directory: the sandboxes start with it (notifications included), a dossier posted
    reaches the national-portal sandbox and the citizen's SMS and email reach theirs."""
    import time

    from tests.conftest import listen_port as free_port

    names = ("NATIONAL", "ONESTOP", "POPULATION", "PKI", "PAYMENT", "SMTP", "SMS", "EDOC")
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}

    def log() -> str:  # what hub serve said, for a failure's message
        return (tmp_path / "serve.err").read_text(errors="replace")[-4000:]

    for _ in range(3):  # a port found free may be taken before hub binds it (by any process's outgoing connection)
        ports = {f"HUB_SANDBOX_{n}_PORT": str(free_port()) for n in names}
        port = free_port()
        said = (tmp_path / "serve.err").open("w")
        proc = subprocess.Popen(
            [HUB, "serve", "--port", str(port)], cwd=tmp_path, env={**base, **ports}, stdout=subprocess.DEVNULL,
            stderr=said,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        if proc.poll() is None or "in use" not in log():
            break
    try:
        assert proc.poll() is None and time.monotonic() < deadline, f"hub serve did not come up: {log()}"
        # what it printed is enough to start: the console's URL and account, the API key of the dev client
        printed = (tmp_path / "serve.err").read_text()
        assert re.search(rf"console: http://127\.0\.0\.1:{port}/ops +user admin, password \S+", printed), printed
        key = json.loads((tmp_path / "var" / "dev-secrets.json").read_text())["client_api_key"]
        assert f"X-API-Key: {key}" in printed, printed
        assert "alembic.runtime.plugins" not in printed, printed
        d = dossier(41, status=2, Email="cong.dan@example.vn")
        r = httpx.post(f"{api}/v1/dossiers", json=d, headers={"X-API-Key": key, "Idempotency-Key": "serve-1"})
        assert r.status_code == 202, r.text
        portal = f"http://127.0.0.1:{ports['HUB_SANDBOX_NATIONAL_PORT']}"
        sms = f"http://127.0.0.1:{ports['HUB_SANDBOX_SMS_PORT']}"
        deadline = time.monotonic() + 30
        while True:
            at_portal = httpx.get(f"{portal}/_sandbox/dossiers/{d['MaHoSo']}")
            texts = httpx.get(f"{sms}/_sandbox/sms").json()["items"]
            mails = httpx.get(f"{sms}/_sandbox/mail").json()["items"]
            if at_portal.status_code == 200 and texts and mails:
                break
            assert time.monotonic() < deadline, (at_portal.text, texts, mails, log())
            time.sleep(0.2)
        assert [h["status"] for h in at_portal.json()["history"]] == [2]
        [text] = texts
        assert d["MaHoSo"] in text["message"] and "tiếp nhận" in text["message"]
        assert d["MaHoSo"] in mails[0]["body"]
        # a document for another agency: signed with the sandbox key, time-stamped, taken by the exchange sandbox
        edoc = {
            "sender_name": "UBND phường Bến Nghé", "to": [{"id": "000.00.17.H29", "name": "Công an phường"}],
            "code_number": "12", "code_notation": "CV-UBND", "place": "TP. Hồ Chí Minh", "type": 2,
            "type_name": "Công văn", "subject": "Đề nghị phối hợp",
        }  # fmt: skip
        r = httpx.post(f"{api}/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc, headers={"X-API-Key": key})
        assert r.status_code == 202, r.text
        exchange = f"http://127.0.0.1:{ports['HUB_SANDBOX_EDOC_PORT']}"
        deadline = time.monotonic() + 30
        while not (docs := httpx.get(f"{exchange}/_sandbox/documents").json()["items"]):
            assert time.monotonic() < deadline, log()
            time.sleep(0.2)
        assert docs[0]["signature_format"] == "XAdES-B-T" and docs[0]["header"]["code"] == "12/CV-UBND"
        # operators see the worker delivering: in /readyz, and `hub workers` from the same directory
        (worker,) = httpx.get(f"{api}/readyz").json()["workers"]
        assert worker["name"].startswith("embedded@") and worker["pid"] == proc.pid, worker
        noted = worker | {"beat_age_s": ANY, "last_drain_age_s": ANY}  # as /readyz said, a moment later
        assert workers(tmp_path, base) == (0, {"mode": "embedded", "delivering": True, "workers": [noted]})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        said.close()
    assert workers(tmp_path, base) == (1, {"mode": "embedded", "delivering": False, "workers": []})


@pytest.mark.parametrize("backend", ["postgresql"])  # on SQLite: the test above
def test_hub_workers_says_whether_a_hub_serve_delivers_from_postgresql_without_a_broker(
    hub_factory: HubFactory, tmp_path: Path, pg_url: str
) -> None:
    """`hub serve` on PostgreSQL with no broker delivers from its own worker thread; the process that runs the
    scheduled jobs holds their lock in the database. `hub workers` finds it there (it used to say "no database at
    None"), and says when no process delivers, exiting 1 as for the other modes."""
    from hub.sync.embedded import PgJobsLock
    from tests.conftest import create_pg_database, drop_pg_database

    own = create_pg_database()
    elsewhere = PgJobsLock(pg_url)  # a hub on another database of the same server: its lock is not this one's
    try:
        assert elsewhere.held()
        hub = hub_factory(database_url=own)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUB_")}, "HUB_DATABASE_URL": own}
        deadline = time.monotonic() + 15
        while (found := workers(tmp_path, env))[0] != 0:  # the lock is taken at the worker's first round
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        said = found[1]
        assert said["mode"] == "embedded" and said["delivering"] is True, said
        [holder] = said["scheduled_jobs_run_by"]
        assert holder["pid"] > 0 and holder["since"]
        hub.runtime.close()  # the process stops: its session ends, and the lock with it
        assert workers(tmp_path, env) == (1, {"mode": "embedded", "delivering": False, "scheduled_jobs_run_by": []})
    finally:
        elsewhere.close()
        drop_pg_database(own)


def test_ports_held_by_another_process_are_named_not_a_traceback(tmp_path: Path) -> None:
    """A newcomer who runs `hub sandbox` and then `hub serve` (whose default starts the sandboxes too), or starts
    hub twice, is told which ports are taken and what to do — nothing starts half-way."""
    import socket

    from tests.conftest import listen_port

    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        free = {f"HUB_SANDBOX_{n}_PORT": str(listen_port()) for n in ("ONESTOP", "POPULATION", "PKI", "PAYMENT")}
        env = {**base, **free, "HUB_SANDBOX_NATIONAL_PORT": str(taken)}
        serving = run(["serve", "--port", str(listen_port())], tmp_path, env)
        assert serving.returncode == 2, serving.stderr
        assert f"national portal 127.0.0.1:{taken}" in serving.stderr and "hub serve --no-sandbox" in serving.stderr
        assert "Traceback" not in serving.stderr + serving.stdout
        sandbox = run(["sandbox", "--national-port", str(taken)], tmp_path, env)
        assert sandbox.returncode == 2 and f"national portal 127.0.0.1:{taken}" in sandbox.stderr, sandbox.stderr
        twice = run(["serve", "--port", str(taken)], tmp_path, base)
        assert twice.returncode == 2 and f"127.0.0.1:{taken} is in use" in twice.stderr, twice.stderr
        assert "Traceback" not in sandbox.stderr + twice.stderr


def test_hub_serve_with_several_processes_lists_each_ones_worker(tmp_path: Path) -> None:
    """`hub serve --workers 2` in embedded mode: each process delivers from the SQLite file with a worker thread
    of its own. Whichever process answers /readyz lists both, as `hub workers` does; one killed (-9) drops out
    within the roster's time-to-live."""
    import signal

    from tests.conftest import listen_port

    port = listen_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_NATIONAL_PORTAL_URL"] = "http://127.0.0.1:9"  # no peers needed here: nothing is filed
    said = (tmp_path / "serve.err").open("w")
    proc = subprocess.Popen(
        [HUB, "serve", "--port", str(port), "--workers", "2", "--no-sandbox"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=said, start_new_session=True,
    )  # fmt: skip

    def listed() -> list[int]:
        try:
            return sorted(w["pid"] for w in httpx.get(f"http://127.0.0.1:{port}/readyz").json()["workers"])
        except httpx.TransportError:
            return []

    try:
        deadline = time.monotonic() + 60
        while len(listed()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.err").read_text()[-3000:]
            time.sleep(0.3)
        pids = listed()
        assert len(set(pids)) == 2 and proc.pid not in pids  # the two server processes, not their supervisor
        for _ in range(6):  # either process answers, each lists both
            assert listed() == pids
        code, shown = workers(tmp_path, env)
        assert code == 0 and sorted(w["pid"] for w in shown["workers"]) == pids
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while pids[0] in listed() or pids[0] in [w["pid"] for w in workers(tmp_path, env)[1]["workers"]]:
            assert time.monotonic() < deadline, "a killed worker is still listed"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        said.close()


def workers(cwd: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """`hub workers --json`: its exit code and what it said."""
    run = subprocess.run([HUB, "workers", "--json"], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    said = json.loads(run.stdout) if run.stdout.strip() else {"stderr": run.stderr}
    return run.returncode, {k: v for k, v in said.items() if k != "database"}


def test_clients_list_shows_how_each_authenticates_never_the_key(tmp_path: Path) -> None:
    made = run(["clients", "new-key"], tmp_path)
    assert made.returncode == 0 and re.fullmatch(r"[A-Za-z0-9_-]{32}\n", made.stdout), made.stdout
    key = made.stdout.strip()
    clients = [
        {
            "name": "motcua-hcm",
            "api_key": key,
            "next_api_key": key[::-1],
            "agencies": ["000.00.17.*"],
            "prefill_per_minute": 120,
        },
        {"name": "lgsp-dn", "oauth_client_id": "dn-motcua", "agencies": ["000.00.23.*"], "prefill_per_minute": None},
    ]
    env = {"HUB_CLIENTS": json.dumps(clients), "HUB_OAUTH_ISSUER": "https://lgsp.example.gov.vn/oauth2"}
    listed = run(["clients", "list", "--json"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert shown["oauth_issuer"] == "https://lgsp.example.gov.vn/oauth2"
    assert [(c["name"], c["api_key"], c["oauth_client_id"], c["prefill_per_minute"]) for c in shown["clients"]] == [
        ("motcua-hcm", True, None, 120),
        ("lgsp-dn", False, "dn-motcua", None),
    ]
    table = run(["clients", "list"], tmp_path, env)
    assert "OAuth dn-motcua" in table.stdout and "120/min" in table.stdout and "rotating" in table.stdout
    assert [c["next_api_key"] for c in shown["clients"]] == [True, False]
    assert key not in listed.stdout + table.stdout + table.stderr and key[::-1] not in listed.stdout + table.stdout
    # a client with no way to authenticate is a configuration error, said plainly
    bad = run(["clients", "list"], tmp_path, {"HUB_CLIENTS": json.dumps([{"name": "x", "agencies": ["*"]}])})
    assert bad.returncode == 2 and "needs an api_key or an oauth_client_id" in bad.stderr


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL is backed up with its own tools
def test_db_backup_is_a_consistent_copy_taken_while_hub_writes(
    hub_factory: HubFactory, creds: Creds, tmp_path: Path
) -> None:
    import sqlite3
    import threading

    hub = hub_factory(start_worker=False)
    stop = threading.Event()
    filed: list[int] = []

    def keep_filing() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            assert hub.http.post("/v1/dossiers", json=dossier(500 + n)).status_code == 202
            filed.append(n)

    writer = threading.Thread(target=keep_filing)
    writer.start()
    try:
        while len(filed) < 20:
            time.sleep(0.01)
        env = {"HUB_DATABASE_URL": hub.settings.effective_database_url, "HUB_VAR_DIR": str(tmp_path)}
        made = run(["db", "backup", str(tmp_path / "backups" / "hub-1.db"), "--json"], tmp_path, env)
        during = len(filed)
    finally:
        stop.set()
        writer.join()
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    assert 20 <= report["dossiers"] <= during + 1 and report["status_events"] == report["dossiers"]
    with sqlite3.connect(tmp_path / "backups" / "hub-1.db") as copy:  # a snapshot: no dossier without its rows
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        orphans = copy.execute(
            "SELECT count(*) FROM dossiers d WHERE NOT EXISTS (SELECT 1 FROM status_events e WHERE e.dossier_id = d.id)"
            " OR NOT EXISTS (SELECT 1 FROM outbox o WHERE o.dossier_id = d.id)"
        ).fetchone()
        assert orphans == (0,)
    again = run(["db", "backup", str(tmp_path / "backups" / "hub-1.db")], tmp_path, env)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    # restored: a hub started on the copy serves what it holds
    restored = run(
        ["jobs", "list", "--json"], tmp_path, {**env, "HUB_DATABASE_URL": f"sqlite:///{tmp_path}/backups/hub-1.db"}
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["totals"] == {"pending": report["outbox"]}
    pg = run(["db", "backup", str(tmp_path / "x.db")], tmp_path, {"HUB_DATABASE_URL": "postgresql+psycopg://h/db"})
    assert pg.returncode == 2 and "pg_dump" in pg.stderr


def test_check_asks_every_system_and_says_what_fails(
    tmp_path: Path,
    creds: Creds,
    portal_server: ServerThread,
    population_server: ServerThread,
    pay_server: ServerThread,
    onestop_server: ServerThread,
    trust: Trust,
) -> None:
    import shutil

    from tests.conftest import PAY_PARTNER, PAY_SECRET, PORTAL_USER

    shutil.copytree(trust.dir, tmp_path / "var" / "sandbox-pki")  # the dev default: the sandbox PKI signs
    from hub.sandbox import document_exchange

    roots = [trust.pki.issued[r].cert for r in ("national_root", "gov_root")]
    exchange = ServerThread(document_exchange.create_app(roots, {"edoc-check-key-0123456789"})).start()
    env = {
        "HUB_VAR_DIR": str(tmp_path / "var"),
        "HUB_SECRET_KEY": creds.secret_key,
        "HUB_NATIONAL_PORTAL_URL": portal_server.url,
        "HUB_NATIONAL_PORTAL_USERNAME": PORTAL_USER,
        "HUB_NATIONAL_PORTAL_PASSWORD": creds.portal_password,
        "HUB_POPULATION_URL": f"{population_server.url}/ws/congdan",
        "HUB_PAYMENT_DVC_URL": pay_server.url,
        "HUB_PAYMENT_DVC_PARTNER": PAY_PARTNER,
        "HUB_PAYMENT_DVC_SECRET": PAY_SECRET,
        "HUB_DOCUMENT_EXCHANGE_URL": exchange.url,
        "HUB_DOCUMENT_EXCHANGE_API_KEY": "edoc-check-key-0123456789",
        "HUB_SIGNING_TSA_URL": f"{trust.server.url}/pki/tsa",
        "HUB_CITIZEN_IDP_ISSUER": f"{trust.server.url}/idp",
        "HUB_OAUTH_ISSUER": f"{trust.server.url}/idp",
    }
    assert run(["db", "upgrade"], tmp_path, env).returncode == 0
    assert run(["routes", "add", "000.00.17.*", onestop_server.url], tmp_path, env).returncode == 0
    good = run(["check", "--json"], tmp_path, env)
    assert good.stdout.startswith("{"), good.stderr
    report = json.loads(good.stdout)
    assert good.returncode == 0 and report["ok"] is True, good.stdout
    status = {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}
    # commits are synced to disk, and how long the disk takes to sync is said (slow disks: a warning)
    assert status["durability"][0] in ("ok", "warn") and "synchronous=full" in status["durability"][1]
    assert "ms (median of 20)" in status["durability"][1]
    assert status["disk"][0] in ("ok", "warn") and "MiB free on the database's volume" in status["disk"][1]
    assert {name for name, (state, _) in status.items() if state == "ok" and name not in ("durability", "disk")} == {
        "database", "national_portal", "population", "payment_dvc", "document_exchange", "signing", "one_stop",
        "identity_provider", "authorization_server", "access_log_key", "personal_data_retention",
    }  # fmt: skip
    assert "keep their personal data for ever" in status["personal_data_retention"][1]  # dev: said, not a warning
    assert "XAdES-B-T" in status["signing"][1] and "signed in as hub-test" in status["national_portal"][1]
    assert "hub's key accepted; no status notice waiting" in status["document_exchange"][1]
    assert "hub's partner code and key accepted" in status["payment_dvc"][1]
    assert status["console"] == ("warn", "no console account enabled (`hub operators add NAME --role operator`)")
    added = run(["operators", "add", "tran.van.an", "--role", "operator", "--password-env", "PW"], tmp_path,
                {**env, "PW": "mat-khau-dai-du-12"})  # fmt: skip
    assert added.returncode == 0, added.stderr
    required = run(["check", "--json"], tmp_path, {**env, "HUB_CONSOLE_SECOND_FACTOR": "true"})
    console = {c["name"]: c for c in json.loads(required.stdout)["checks"]}["console"]
    assert console["status"] == "ok" and console["detail"] == (
        "1 account(s) enabled, 0 with a second factor; required (the others set one up at their next sign-in)"
    )
    assert status["one_stop"][1] == f"{onestop_server.url}: HTTP 404 (serves 000.00.17.*)"
    # a route to a one-stop system that is not there (a mistyped address): found now, not by a dead letter
    assert run(["routes", "add", "000.00.12.H29", "http://127.0.0.1:9"], tmp_path, env).returncode == 0
    assert status["access_log"][0] == "warn" and "database's volume" in status["access_log"][1]  # both under var/
    import sqlite3

    with sqlite3.connect(tmp_path / "var" / "hub.db") as made:  # what it asked is in the exchange record
        asked = dict(made.execute("SELECT peer, correlation_id FROM exchanges").fetchall())
    assert {"national_portal", "tsa", "identity_provider", "authorization_server"} <= set(asked), asked
    assert len(set(asked.values())) == 1 and next(iter(asked.values())).startswith("preflight-"), asked
    # a wrong portal password and a register that does not answer: each said, the rest still checked
    bad = run(
        ["check"],
        tmp_path,
        {**env, "HUB_NATIONAL_PORTAL_PASSWORD": "wrong-password", "HUB_POPULATION_URL": "http://127.0.0.1:9/ws",
         "HUB_DOCUMENT_EXCHANGE_API_KEY": "not-the-platforms-key",
         "HUB_PAYMENT_DVC_SECRET": "not-the-platforms-secret"},
    )  # fmt: skip
    exchange.stop()
    assert bad.returncode == 1, bad.stdout
    # commits not synced, and a volume with less room than the reserve hub keeps (writes would be refused)
    unsynced = run(
        ["check", "--json"], tmp_path, {**env, "HUB_SQLITE_SYNCHRONOUS": "normal", "HUB_DISK_RESERVE_MB": "100000000"}
    )
    said = {c["name"]: c for c in json.loads(unsynced.stdout)["checks"]}
    assert said["durability"]["status"] == "warn" and "power cut" in said["durability"]["detail"]
    kept = run(["check", "--json"], tmp_path, {**env, "HUB_PERSONAL_DATA_RETENTION_DAYS": "1825"})
    retention = {c["name"]: c for c in json.loads(kept.stdout)["checks"]}["personal_data_retention"]
    assert (
        retention["status"] == "ok" and "removed 1825 days after a dossier closes; 0 dossier(s)" in retention["detail"]
    )
    assert said["disk"]["status"] == "fail" and "below the reserve of 100000000 MiB" in said["disk"]["detail"]
    assert unsynced.returncode == 1
    assert not list((tmp_path / "var").glob(".hub-check-*"))  # the scratch file is gone
    lines = {line.split("│")[1].strip(): line for line in bad.stdout.splitlines() if line.count("│") >= 4}
    assert "FAIL" in lines["national_portal"] and "peer_auth_failed" in lines["national_portal"]
    assert "FAIL" in lines["population"] and " ok " in lines["signing"]
    assert "FAIL" in lines["document_exchange"] and "edoc_auth_failed" in lines["document_exchange"]
    # a payment secret the platform does not hold is found now, not by the first citizen who pays
    assert "FAIL" in lines["payment_dvc"] and "peer_auth_failed" in lines["payment_dvc"]
    assert "HUB_PAYMENT_DVC_SECRET" in bad.stdout
    assert " ok " in lines["one_stop:000.00.17.*"] and "FAIL" in lines["one_stop:000.00.12.H29"]


def test_check_signs_through_the_token_and_long_term_when_so_configured(
    tmp_path: Path, trust: Trust, token: Token
) -> None:
    """The agency's key on a token, what hub signs long-term: `hub check` signs and verifies once that way."""
    from hub.sandbox.token import SOFTHSM

    env = {
        "HUB_VAR_DIR": str(tmp_path / "var"),
        "HUB_SIGNING_PKCS11_MODULE": str(SOFTHSM), "HUB_SIGNING_PKCS11_TOKEN": token.label,
        "HUB_SIGNING_PKCS11_KEY": "hub-ec", "HUB_SIGNING_PKCS11_PIN": token.pin,
        "HUB_SIGNING_TSA_URL": f"{trust.server.url}/pki/tsa", "HUB_SIGNING_LONG_TERM": "true",
        "HUB_SIGNING_TRUST_ANCHORS": json.dumps([str(trust.dir / "gov_root.pem")]), **token.env(),
    }  # fmt: skip
    assert run(["db", "upgrade"], tmp_path, env).returncode == 0
    checked = run(["check", "--json"], tmp_path, env)
    signing = next(c for c in json.loads(checked.stdout)["checks"] if c["name"] == "signing")
    assert signing["status"] == "ok", signing
    assert "key on token 'hub-agency'" in signing["detail"] and "XAdES-B-LT" in signing["detail"]


def test_operators_add_says_what_is_wrong_before_asking_for_a_password(tmp_path: Path) -> None:
    env = {"HUB_VAR_DIR": str(tmp_path / "var"), "OPERATOR_PASSWORD": "mật-khẩu-đủ-dài-2026"}
    wrong_role = run(["operators", "add", "nguyen.van.a", "--role", "admin"], tmp_path, env)  # no prompt answered
    assert wrong_role.returncode == 2 and "role must be one of viewer, operator" in wrong_role.stderr
    made = run(["operators", "add", "nguyen.van.a", "--role", "operator", "--password-env", "OPERATOR_PASSWORD"],
               tmp_path, env)  # fmt: skip
    assert made.returncode == 0 and "nguyen.van.a (operator) created" in made.stdout, made.stderr
    weak = run(["operators", "add", "tran.b", "--password-env", "SHORT"], tmp_path, {**env, "SHORT": "123"})
    assert weak.returncode == 2 and "at least 10 characters" in weak.stderr
    # the account's life: disabled, enabled, a new password, another role — each kept as the OS user's action
    for args, said in [
        (["disable", "nguyen.van.a"], "nguyen.van.a disabled"),
        (["enable", "nguyen.van.a"], "nguyen.van.a enabled"),
        (["password", "nguyen.van.a", "--password-env", "OPERATOR_PASSWORD"], "password set"),
        (["role", "nguyen.van.a", "viewer"], "nguyen.van.a is now viewer"),
    ]:
        done = run(["operators", *args], tmp_path, env)
        assert done.returncode == 0 and said in done.stdout, done.stderr
    assert run(["operators", "disable", "nobody"], tmp_path, env).returncode == 1
    assert run(["operators", "role", "nguyen.van.a", "admin"], tmp_path, env).returncode == 2
    assert (
        run(
            ["operators", "password", "nguyen.van.a", "--password-env", "SHORT"], tmp_path, {**env, "SHORT": "1"}
        ).returncode
        == 2
    )
    listed = json.loads(run(["operators", "list", "--json"], tmp_path, env).stdout)
    assert [(o["username"], o["role"], o["disabled"]) for o in listed] == [("nguyen.van.a", "viewer", False)]
    kept = json.loads(run(["operators", "actions", "--json"], tmp_path, env).stdout)
    assert [a["action"] for a in kept] == [
        "operator_role_set", "operator_password_set", "operator_enabled", "operator_disabled", "operator_added"
    ]  # fmt: skip
    assert {a["target"]["username"] for a in kept} == {"nguyen.van.a"} and kept[0]["target"]["role"] == "viewer"


@pytest.mark.parametrize("backend", ["postgresql"])  # as distributed mode has it: the flag shared by machines
def test_maintenance_from_the_command_line_stops_a_running_hubs_worker(
    hub_factory: HubFactory, tmp_path: Path, backend: str
) -> None:
    """`hub maintenance on` writes the flag every process reads within a second; `status` says who set it; `off`
    resumes; anything else is a usage error."""
    hub = hub_factory()
    env = {"HUB_DATABASE_URL": hub.settings.effective_database_url, "HUB_VAR_DIR": str(tmp_path)}
    on = run(["maintenance", "on", "--json"], tmp_path, env)
    assert on.returncode == 0, on.stderr
    said = json.loads(on.stdout)
    assert said["maintenance"] is True and said["by"] and said["since"]
    deadline = time.monotonic() + 5
    while not hub.runtime.maintenance.on():  # the running hub sees it within its cache's second
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert json.loads(run(["maintenance", "status", "--json"], tmp_path, env).stdout)["maintenance"] is True
    assert run(["maintenance", "off"], tmp_path, env).returncode == 0
    assert json.loads(run(["maintenance", "--json"], tmp_path, env).stdout)["maintenance"] is False
    assert run(["maintenance", "sideways"], tmp_path, env).returncode == 2


def test_commands_with_the_database_away_say_so_in_a_line_and_check_the_rest(tmp_path: Path) -> None:
    """PostgreSQL stopped (or unreachable): each command says the database does not answer, in a line, with no
    traceback for each exchange or job run it could not record; `hub check` still checks everything else and
    lists the database's failure among them."""
    away = {
        "HUB_DATABASE_URL": "postgresql+psycopg://hub@127.0.0.1:1/hub",
        "HUB_NATIONAL_PORTAL_URL": "http://127.0.0.1:9",
    }
    for args in (["payments", "check"], ["jobs", "list"], ["workers"]):
        said = run(args, tmp_path, away)
        assert said.returncode != 0 and "the database does not answer" in said.stderr, (args, said.stderr)
        assert "Traceback" not in said.stderr + said.stdout, (args, said.stderr)
    checked = run(["check", "--json"], tmp_path, away)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
    status = {c["name"]: c["status"] for c in json.loads(checked.stdout)["checks"]}
    assert status["database"] == status["national_portal"] == status["one_stop"] == "fail", status
    assert status["access_log"] == "ok"  # what needs no database is still checked
