"""The `hub` command: serve, worker, sandbox, demo, db, jobs."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

from hub.domain.spreadsheet import spreadsheet_safe
from hub.settings import DEV_CLIENT, Settings, load_settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="hub: integration hub for Vietnamese e-government")
db_cli = typer.Typer(no_args_is_help=True, help="Database schema")
catalogue_cli = typer.Typer(no_args_is_help=True, help="Procedure catalogue (thủ tục hành chính)")
jobs_cli = typer.Typer(no_args_is_help=True, help="Outbox deliveries (sync jobs): list, show, retry, replay")
cli.add_typer(db_cli, name="db")
cli.add_typer(jobs_cli, name="jobs")
cli.add_typer(catalogue_cli, name="catalogue")


class _Console(Console):
    """Rich's console, except that a message whose text is not valid markup — a "[/]" in an officer's name a client
    system sent, in a peer's error message, in a file name — is printed as it is instead of raising MarkupError:
    what others wrote never crashes a command. (Tables of such data take it as plain text: `_plain`.)"""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        try:
            return super().render_str(text, **kwargs)
        except MarkupError:
            return super().render_str(text, **{**kwargs, "markup": False})


def _plain(*values: object) -> list[Text]:
    """Table cells shown as written: data is never read as Rich markup (styles, links, "[/]")."""
    return [Text(str(v)) for v in values]


out = _Console() if sys.stdout.isatty() else _Console(width=140)  # pipes and CI logs get full tables
err = _Console(stderr=True, soft_wrap=True)  # messages unfolded: URLs, keys and paths stay whole to copy


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:  # noqa: BLE001 - a configuration error is the operator's to fix: say it plainly
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _schema_ready(settings: Settings) -> None:
    """On a server database, refuse to start on a schema other than the code's: tables missing or older would
    make every request and delivery fail with a traceback (hub migrates only its own embedded SQLite file; on
    PostgreSQL `hub db upgrade` is the operator's step, once, whatever number of machines run hub). A database
    that does not answer yet is no reason not to start: hub answers 503 and retries until it does."""
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return
    from sqlalchemy.exc import OperationalError

    from hub.store import db

    engine = db.make_engine(url, pool_size=1)
    try:
        current, head = db.stored_revision(engine), db.code_head()
    except OperationalError as exc:
        err.print(f"[yellow]database not reachable yet[/yellow] ({exc.orig.__class__.__name__}); starting anyway")
        return
    finally:
        engine.dispose()
    if current != head:
        err.print(
            f"[red]database schema at {current or 'nothing'}, this hub needs {head}:[/red] "
            "run `hub db upgrade` (with this HUB_DATABASE_URL) first"
        )
        raise typer.Exit(2)


def _dev_console_admin(settings: Settings, base_url: str) -> None:
    """Dev mode with no console account yet: make `admin` (operator) with a generated password, and say it."""
    import secrets as secrets_

    from hub.console.auth import Operators
    from hub.store import db

    engine = db.make_engine(settings.effective_database_url)
    try:
        operators = Operators(db.make_sessionmaker(engine))
        try:
            existing = operators.count()
        except Exception:  # noqa: BLE001 - the database not answering yet (the schema was checked before)
            err.print("console: the database does not answer yet; `hub operators add` makes an account later")
            return
        if existing == 0:
            password = secrets_.token_urlsafe(12)
            operators.add("admin", password, "operator")
            err.print(f"console: {base_url}/ops  user admin, password {password} (dev mode; shown once)")
    finally:
        engine.dispose()


def _dev_api_key(settings: Settings) -> None:
    """Dev mode with the generated client: say its API key, so that a newcomer can call the API at once."""
    client = next((c for c in settings.clients if c.name == DEV_CLIENT), None)
    if client is not None and client.api_key is not None:
        key = client.api_key.get_secret_value()
        err.print(f"API: header X-API-Key: {key}  (dev client {DEV_CLIENT}, every agency; var/dev-secrets.json)")


def _sandbox_oauth_clients(settings: Settings) -> dict[str, str]:
    """The sandbox authorization server knows each client system with an oauth_client_id and an API key, the API
    key as its client secret (dev only: a real server has its own registrations)."""
    return {
        c.oauth_client_id: c.api_key.get_secret_value()
        for c in settings.clients
        if c.oauth_client_id and c.api_key is not None
    }


def _payment_partners(settings: Settings) -> dict[str, str]:
    secret = settings.payment_dvc_secret
    return {settings.payment_dvc_partner: secret.get_secret_value()} if secret else {}


def _sandbox_credentials(settings: Settings) -> dict[str, str]:
    password = settings.national_portal_password
    return {settings.national_portal_username: password.get_secret_value() if password else ""}


def _edoc_key(settings: Settings) -> str:
    key = settings.document_exchange_api_key
    return key.get_secret_value() if key else ""


def _edoc_sandbox(settings: Settings) -> tuple[int, str] | None:
    """The document exchange sandbox is started with the others unless a real platform is configured."""
    return None if settings.document_exchange_url else (settings.sandbox_edoc_port, _edoc_key(settings))


def _notify_ports(settings: Settings) -> tuple[int, int] | None:
    """The SMTP and SMS sandboxes are started with the others unless real ones are configured."""
    if settings.smtp_host or settings.sms_gateway_url:
        return None
    return settings.sandbox_smtp_port, settings.sandbox_sms_port


def _sandbox_ports_taken(exc: Exception, *, serving: bool) -> NoReturn:
    """A sandbox port held by another process: say which, and what to do, instead of a traceback."""
    err.print(f"[red]sandbox ports in use: {exc}[/red]")
    if serving:
        err.print(
            "The sandbox peers seem to be running already (`hub sandbox`, or another `hub serve`): stop them, or "
            "start hub on them with `hub serve --no-sandbox`. Other ports: HUB_SANDBOX_*_PORT."
        )
    else:
        err.print(
            "Another `hub sandbox` or `hub serve` seems to run them already: stop it, or choose other ports "
            "(--national-port, --one-stop-port, --population-port, HUB_SANDBOX_*_PORT)."
        )
    raise typer.Exit(2)


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    sandbox: Annotated[bool, typer.Option(help="start the sandbox peers when no portal URL is configured")] = True,
) -> None:
    """Run the API (and, with no broker configured, the embedded worker)."""
    import uvicorn

    from hub import logs

    logs.configure()
    settings = _settings()
    _schema_ready(settings)
    from hub.sandbox.common import PortsInUse, ports_in_use

    if ports_in_use(host, {"hub": port}):
        err.print(f"[red]{host}:{port} is in use[/red] — is another `hub serve` running? Choose one with --port.")
        raise typer.Exit(2)
    peers = None
    if sandbox and not settings.national_portal_url and settings.mode == "dev":
        from hub.sandbox import run

        try:
            peers = run.start(
                settings.sandbox_host,
                settings.sandbox_national_port,
                settings.sandbox_onestop_port,
                _sandbox_credentials(settings),
                settings.sandbox_population_port if not settings.population_url else 0,
                population_size=settings.sandbox_population_size,
                pki_port=settings.sandbox_pki_port,
                pki_dir=settings.var_dir / "sandbox-pki",
                payment_port=settings.sandbox_payment_port,
                payment_partners=_payment_partners(settings) if not settings.payment_dvc_url else None,
                notify_ports=_notify_ports(settings),
                edoc=_edoc_sandbox(settings),
                oauth_clients=_sandbox_oauth_clients(settings),
            )
        except PortsInUse as exc:
            _sandbox_ports_taken(exc, serving=True)
        err.print(
            f"sandbox peers: national portal {peers.national.url}, one-stop {peers.one_stop.url}, "
            f"population database {peers.population.url}/ws/congdan"
        )
        if peers.smtp is not None and peers.sms is not None and peers.sms_key is not None:
            # the app (and each uvicorn worker process) reads its settings from the environment
            os.environ.update(
                HUB_SMTP_HOST=peers.smtp.host,
                HUB_SMTP_PORT=str(peers.smtp.port),
                HUB_SMS_GATEWAY_URL=peers.sms.url,
                HUB_SMS_API_KEY=peers.sms_key,
            )
            err.print(f"notifications: SMTP and SMS sandboxes, sent messages at {peers.sms.url}/_sandbox/sms|mail")
    if settings.effective_database_url.startswith("sqlite"):
        from hub.store import db

        db.upgrade(settings.effective_database_url)
    base_url = f"http://{host}:{port}"
    if settings.mode == "dev":
        _dev_console_admin(settings, base_url)
        _dev_api_key(settings)
    err.print(f"hub on {base_url}" + (f"  (API docs: {base_url}/docs)" if settings.api_docs else ""))
    try:
        uvicorn.run(
            "hub.api.asgi:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http="httptools",
            loop="uvloop",
            log_level="warning",
            access_log=False,
        )
    finally:
        if peers is not None:
            peers.stop()


@cli.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
    pool: Annotated[str, typer.Option(help="prefork | threads | solo")] = "prefork",
    name: Annotated[
        str | None, typer.Option(help="node name, unique in the cluster (default: hub-PID@HOST); %h is the host")
    ] = None,
) -> None:
    """Run a Celery worker (distributed mode; needs HUB_BROKER_URL)."""
    from hub import logs

    if pool not in ("prefork", "threads", "solo"):
        err.print(f"[red]unknown pool {pool!r}:[/red] prefork, threads or solo")
        raise typer.Exit(2)
    settings = _settings()
    if settings.embedded:
        err.print("[red]HUB_BROKER_URL is not set:[/red] in the embedded default `hub serve` delivers by itself")
        raise typer.Exit(2)
    _schema_ready(settings)
    logs.configure()
    from celery.utils.nodenames import default_nodename, host_format

    from hub.sync.celery_app import app

    # Celery's own `worker` command, minus its exit code: `app.worker_main` drops it, and a worker that stopped on
    # an error exited 0, which a supervisor's "restart on failure" takes for a clean stop
    celery_worker = app.Worker(
        hostname=host_format(default_nodename(name or f"hub-{os.getpid()}@%h")),  # unique: one roster entry each
        pool_cls=pool,
        concurrency=concurrency,
        loglevel="INFO",
        queues=["hub"],
        without_gossip=True,
        without_mingle=True,
    )
    celery_worker.start()
    code = int(celery_worker.exitcode or 0)
    from hub.sync.celery_app import stuck

    if stuck.is_set():
        err.print(
            f"[red]the worker's consumer was stuck[/red] (no drain for {settings.worker_stuck_seconds:g} s): stopped "
            "for its supervisor to start it again (exit 75)"
        )
        raise typer.Exit(75)
    if code:
        err.print(f"[red]the worker stopped on an error[/red] (exit {code}); its leased deliveries go back in line")
    raise typer.Exit(code)


@cli.command()
def sandbox(
    national_port: Annotated[int | None, typer.Option(help="default: HUB_SANDBOX_NATIONAL_PORT (8701)")] = None,
    one_stop_port: Annotated[int | None, typer.Option(help="default: HUB_SANDBOX_ONESTOP_PORT (8702)")] = None,
    population_port: Annotated[int | None, typer.Option(help="default: HUB_SANDBOX_POPULATION_PORT (8703)")] = None,
) -> None:
    """Run the sandbox peers (national portal, provincial one-stop, population database) on loopback."""
    from hub.sandbox import run
    from hub.sandbox.common import PortsInUse

    settings = _settings()
    try:
        peers = run.start(
            settings.sandbox_host,
            national_port or settings.sandbox_national_port,
            one_stop_port or settings.sandbox_onestop_port,
            _sandbox_credentials(settings),
            population_port or settings.sandbox_population_port,
            population_size=settings.sandbox_population_size,
            pki_port=settings.sandbox_pki_port,
            pki_dir=settings.var_dir / "sandbox-pki",
            payment_port=settings.sandbox_payment_port,
            payment_partners=_payment_partners(settings),
            notify_ports=(settings.sandbox_smtp_port, settings.sandbox_sms_port),
            sms_key=settings.sms_api_key.get_secret_value() if settings.sms_api_key else None,
            edoc=(settings.sandbox_edoc_port, _edoc_key(settings)),
            oauth_clients=_sandbox_oauth_clients(settings),
        )
    except PortsInUse as exc:
        _sandbox_ports_taken(exc, serving=False)
    out.print(f"national portal sandbox: {peers.national.url}  (control: {peers.national.url}/_sandbox/docs)")
    out.print(f"one-stop sandbox:        {peers.one_stop.url}  (control: {peers.one_stop.url}/_sandbox/docs)")
    out.print(f"population sandbox:      {peers.population.url}/ws/congdan?wsdl  (SOAP)")
    if peers.pki is not None:
        out.print(f"test PKI (CRL, OCSP):    {peers.pki.url}  keys and certificates in {peers.pki_dir}")
        out.print(f"time-stamping (RFC 3161): {peers.pki.url}/pki/tsa")
        out.print(f"identity provider:       {peers.pki.url}/idp  (OpenID Connect; client credentials at /idp/token)")
    if peers.payment is not None:
        out.print(f"DVC payment platform:    {peers.payment.url}  (pay pages under /pay/)")
    if peers.document_exchange is not None:
        out.print(f"document exchange:       {peers.document_exchange.url}/api/edoc/send  (signed edXML only)")
    if peers.smtp is not None and peers.sms is not None:
        smtp = f"{peers.smtp.host}:{peers.smtp.port}"
        out.print(f"SMTP sandbox:            {smtp}  (received: {peers.sms.url}/_sandbox/mail)")
        out.print(f"SMS gateway sandbox:     {peers.sms.url}/api/sms  (sent: {peers.sms.url}/_sandbox/sms)")
        if not settings.sms_api_key:
            out.print(f"  SMS API key for hub:   HUB_SMS_API_KEY={peers.sms_key}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        peers.stop()


@cli.command()
def demo(dossiers: Annotated[int, typer.Option(help="dossiers to file")] = 6) -> None:
    """Start the sandboxes and hub (embedded), walk dossiers through their statuses, and show what arrived."""
    from hub.demo import run_demo

    sys.exit(run_demo(dossiers, out))


@db_cli.command("upgrade")
def db_upgrade(
    revision: str = "head",
    grant: Annotated[
        str | None,
        typer.Option(help="then give this role hub's privileges on the tables, new ones included (`hub db grant`)"),
    ] = None,
) -> None:
    """Apply the schema migrations."""
    from hub.store import db

    settings = _settings()
    before, after = db.upgrade(settings.effective_database_url, revision)
    out.print(f"database at {after}" + (f" (was {before or 'empty'})" if after != before else " (no change)"))
    if grant is not None:
        db_grant(grant)


@db_cli.command("grant")
def db_grant(
    role: Annotated[str, typer.Argument(help="the PostgreSQL role `hub serve` and `hub worker` connect as")],
) -> None:
    """Give ROLE what hub's processes need on its tables and no more (PostgreSQL; run as the tables' owner, with
    its HUB_DATABASE_URL, after `hub db upgrade`): no DDL, no TRUNCATE, and on the records hub keeps as history only
    what hub does to them (ADR 0044). Then connect `hub serve` and `hub worker` as ROLE."""
    from hub.store import db, grants

    settings = _settings()
    if db.sqlite_path(settings.effective_database_url) is not None:
        err.print("[red]SQLite has no roles: hub's file is protected by its permissions (docs/operations.md)[/red]")
        raise typer.Exit(2)
    if not grants.ROLE.fullmatch(role):
        err.print(f"[red]{role!r} is not a role name (lower-case letters, digits and _)[/red]")
        raise typer.Exit(2)
    engine = db.make_engine(settings.effective_database_url)
    try:
        current, head = db.current_revision(engine), db.head_revision(settings.effective_database_url)
        if current != head:
            err.print(f"[red]schema at {current}, code expects {head}: run `hub db upgrade` first[/red]")
            raise typer.Exit(2)
        done = grants.grant(engine, role)
    finally:
        engine.dispose()
    out.print(f"{len(done)} statements: {role} may now run hub on this database, and no more")


@cli.command()
def check(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ask every system hub depends on whether it answers as hub needs (before going live, after a change):
    database schema, commits synced and room on its disk, broker, the portal and the payment platforms accepting
    hub's credentials, peers and the routed one-stop systems reachable, hub's own signature passing its verifier,
    identity providers' keys. Exit 1 if any check fails."""
    from hub.services import preflight

    rt = _jobs_runtime()
    try:
        checks = preflight.run(rt)
    finally:
        rt.close()
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        from dataclasses import asdict

        out.print_json(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        table = Table(title=f"hub check ({rt.settings.mode} mode)")
        for column in ("check", "", "what was found", "ms"):
            table.add_column(column)
        marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]", "skip": "-"}
        for c in checks:
            table.add_row(*_plain(c.name), marks[c.status], *_plain(c.detail, f"{c.ms:.0f}"))
        out.print(table)
    if failed:
        raise typer.Exit(1)


@db_cli.command("backup")
def db_backup(
    out_file: Annotated[Path, typer.Argument(help="the backup file to write (never overwritten)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A consistent copy of the embedded SQLite database, taken while hub runs (writers are not held back); checked
    before it is kept. PostgreSQL is backed up with its own tools (pg_dump, or base backups with WAL archiving)."""
    from hub.store import db

    settings = _settings()
    url = settings.effective_database_url
    if db.sqlite_path(url) is None:
        err.print(
            "[red]not a SQLite database:[/red] back PostgreSQL up with its own tools — `pg_dump --format=custom` "
            "for a copy, base backups with WAL archiving for point-in-time recovery (docs/operations.md)"
        )
        raise typer.Exit(2)
    try:
        done = db.backup_sqlite(url, out_file)
    except FileExistsError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        err.print(f"[red]backup failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps(done))
        return
    out.print(
        f"backup written: {done['file']} ({done['bytes']:,} bytes in {done['seconds']} s; integrity ok) — "
        f"{done['dossiers']} dossiers, {done['status_events']} status events, {done['outbox']} outbox rows, "
        f"{done['access_log']} access-log entries",
        soft_wrap=True,
    )


def _progress(*, disable: bool) -> Any:
    """A progress bar on stderr for long operations (hidden with --json, and when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=disable, transient=False,
    )  # fmt: skip


def _jobs_runtime() -> Any:
    from hub.runtime import Runtime

    return Runtime(_settings(), role="cli", start_worker=False)


def _reason_and_actor(reason: str, by: str | None) -> tuple[str, str]:
    """An operator's decision from the command line: its reason, required (exit 2 without one), and who decided
    (--by, or cli:<the user running the command>)."""
    from hub.services.actions import cli_actor
    from hub.sync import jobs

    try:
        cleaned = jobs.clean_reason(reason)
    except ValueError as exc:
        err.print(f"[red]--reason is required, at most {jobs.MAX_REASON} characters: {exc}[/red]")
        raise typer.Exit(2) from None
    return cleaned, (by or "").strip() or cli_actor()


class _Store:
    """Only hub's database, for the commands that read or repair the outbox: a full Runtime also builds every
    peer's client (the register's WSDL, the trust anchors...), a second of start-up a command does not use."""

    def __init__(self) -> None:
        from hub.store import db

        url = _settings().effective_database_url
        self.engine = db.make_engine(url)
        if url.startswith("sqlite"):
            db.upgrade(url)  # embedded: the file is ours, keep it at head (as the Runtime does)
        self.sessions = db.make_sessionmaker(self.engine)

    def close(self) -> None:
        self.engine.dispose()


@jobs_cli.command("scheduled")
def jobs_scheduled(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
) -> None:
    """The scheduled jobs (portal poll, payment checks, reconciliations, document notices, the access log's anchor,
    retention): how often each runs, its last run and outcome, and when a failing one last succeeded — the
    console's sync-jobs page. Exit 1 when a job's last run failed, or a scheduled job has not succeeded for three
    of its intervals (stale: no worker runs it), for a monitoring script."""
    from hub.console.i18n import words
    from hub.sync import jobs

    rt = _Store()
    try:
        with rt.sessions() as session:
            found = jobs.scheduled(session, _settings())
    finally:
        rt.close()
    t = words("en")
    for job in found:
        job["schedule"] = jobs.schedule_words(job, t)
    if as_json:
        out.print_json(json.dumps({"items": found}))
    else:
        table = Table(title="scheduled jobs")
        for col in ("job", "schedule", "last run", "outcome", "last success", "detail"):
            table.add_column(col)
        for job in found:
            table.add_row(
                *_plain(
                    job["name"],
                    job["schedule"],
                    job["finished_at"] or "never",
                    (t.get(f"run:{job['outcome']}", job["outcome"]) if job["outcome"] else "—")
                    + (" (stale)" if job["stale"] else ""),
                    (job["last_ok_at"] or "never") if job["failing"] else "",
                    json.dumps(job["detail"], ensure_ascii=False)[:80] if job["detail"] else "",
                )
            )
        out.print(table)
    if any(job["failing"] or job["stale"] for job in found):
        raise typer.Exit(1)


@jobs_cli.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option(help="pending | in_flight | delivered | dead | set_aside")] = None,
    dossier: Annotated[str | None, typer.Option(help="MaHoSo")] = None,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
) -> None:
    """List outbox deliveries, newest first."""
    from hub.sync import jobs
    from hub.sync.outbox import STATES

    if state is not None and state not in STATES:
        err.print(f"[red]--state must be one of {', '.join(STATES)}[/red]")
        raise typer.Exit(2)
    rt = _Store()
    try:
        with rt.sessions() as session:
            rows = jobs.list_jobs(session, state=state, dossier=dossier, limit=limit)
            totals = jobs.totals(session)
    finally:
        rt.close()
    if as_json:
        out.print_json(json.dumps({"totals": totals, "items": rows}))
        return
    table = Table(title=f"outbox — {', '.join(f'{k}: {v}' for k, v in sorted(totals.items())) or 'empty'}")
    for col in ("id", "MaHoSo", "seq", "destination", "operation", "state", "attempts", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            *_plain(
                str(r["id"]),
                r["MaHoSo"],
                str(r["seq"]),
                r["destination"],
                r["operation"],
                r["state"],
                str(r["attempts"]),
                (r["last_error_code"] or "") + (": " + r["last_error"][:60] if r["last_error"] else ""),
            )
        )
    out.print(table)


@jobs_cli.command("show")
def jobs_show(job_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one delivery with its message and the peer's last answer."""
    from hub.sync import jobs

    rt = _Store()
    try:
        with rt.sessions() as session:
            row = jobs.show_job(session, job_id)
    finally:
        rt.close()
    if row is None:
        err.print(f"[red]no outbox row {job_id}[/red]")
        raise typer.Exit(1)
    out.print_json(json.dumps(row, ensure_ascii=False, default=str))
    from hub.api.problem_types import PEER_ERRORS

    explained = PEER_ERRORS.get(str(row.get("last_error_code")))
    if explained is not None and not as_json:  # what the code means, as GET /peer-errors/{code} says it
        out.print(
            f"{row['last_error_code']} ({explained.outcome}): {explained.meaning} {explained.action}", soft_wrap=True
        )


@jobs_cli.command("replay")
def jobs_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="dead-letter ids")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="every dead letter")] = False,
    dossier: Annotated[str | None, typer.Option(help="the dead letters of one MaHoSo")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Put dead letters back in line; per-dossier order is kept."""
    from hub.services.actions import cli_actor
    from hub.sync import jobs

    who = cli_actor()
    if not ids and not all_dead and not dossier:
        err.print("[red]name dead-letter ids, or --dossier MaHoSo, or --all-dead[/red]")
        raise typer.Exit(2)
    rt = _Store()
    try:
        if all_dead and not ids and not dossier:
            result: dict[str, Any] = {"replayed": 0, "not_dead": []}
            with rt.sessions() as session:
                dead = [row["id"] for row in jobs.list_jobs(session, state="dead", limit=1_000_000)]
            with _progress(disable=as_json) as progress:
                task = progress.add_task("replaying dead letters", total=len(dead))
                for start in range(0, len(dead), 1000):
                    chunk = dead[start : start + 1000]
                    with rt.sessions.begin() as session:
                        result["replayed"] += jobs.replay(session, by=who, ids=chunk, all_dead=True)["replayed"]
                    progress.update(task, advance=len(chunk))
        else:
            with rt.sessions.begin() as session:
                result = jobs.replay(session, by=who, ids=ids or None, dossier=dossier, all_dead=all_dead)
    finally:
        rt.close()
    said = f"replayed {result['replayed']} dead letter(s)"
    _said(result, as_json, said, result["replayed"], "not dead letters", result["not_dead"])


@jobs_cli.command("set-aside")
def jobs_set_aside(
    ids: Annotated[list[int] | None, typer.Argument(help="dead-letter ids")] = None,
    dossier: Annotated[str | None, typer.Option(help="the dead letters of one MaHoSo")] = None,
    reason: Annotated[str, typer.Option(help="why they are not to be delivered (kept with them; required)")] = "",
    by: Annotated[str | None, typer.Option(help="who decided (default: the user running this command)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Set dead letters aside: never delivered, and no longer holding back their dossier's later messages, which
    then flow in their order. For a message the peer will never take and that must not be sent again (the portal
    already has what it says; it was wrong and a corrected one follows). Who, when and why are kept with it.
    Final: a message set aside is not replayed."""
    from hub.sync import jobs

    if not ids and not dossier:
        err.print("[red]name dead-letter ids, or --dossier MaHoSo[/red]")
        raise typer.Exit(2)
    reason, who = _reason_and_actor(reason, by)
    rt = _Store()
    try:
        with rt.sessions.begin() as session:
            result = jobs.set_aside(session, ids=ids or None, dossier=dossier, by=who, reason=reason)
    finally:
        rt.close()
    said = f"set {result['set_aside']} dead letter(s) aside; their dossiers' later messages go on"
    _said(result, as_json, said, result["set_aside"], "not dead letters", result["not_dead"])


@jobs_cli.command("retry")
def jobs_retry(
    ids: Annotated[list[int] | None, typer.Argument(help="ids of waiting deliveries")] = None,
    dossier: Annotated[str | None, typer.Option(help="the waiting deliveries of one MaHoSo")] = None,
    destination: Annotated[
        str | None, typer.Option(help="every waiting delivery to one peer (national_portal, one_stop, …)")
    ] = None,
    all_waiting: Annotated[bool, typer.Option("--all", help="every waiting delivery")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Deliver waiting messages now instead of after their backoff (up to HUB_RELAY_BACKOFF_CAP, 5 min) — once
    a peer's problem is fixed. Attempts are kept; per-dossier order is kept. Dead letters: `replay`."""
    from hub.services.actions import cli_actor
    from hub.sync import jobs

    if not ids and not dossier and not destination and not all_waiting:
        err.print("[red]name delivery ids, or --dossier MaHoSo, or --destination PEER, or --all[/red]")
        raise typer.Exit(2)
    rt = _Store()
    try:
        with rt.sessions.begin() as session:
            result = jobs.retry(
                session,
                by=cli_actor(),
                ids=ids or None,
                dossier=dossier,
                destination=destination,
                all_waiting=all_waiting,
            )
    finally:
        rt.close()
    done = f"{result['retried']} waiting delivery(ies) due now; the workers take them at their next poll"
    _said(result, as_json, done, result["retried"], "not waiting", result["not_waiting"])


def _said(result: dict[str, Any], as_json: bool, done: str, count: int, missed: str, left: list[int]) -> None:
    """What `jobs replay` / `jobs retry` did; exit 1 if it did nothing and some ids named rows it does not act on."""
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(done + (f"; {missed}: {left}" if left else ""))
    if left and not count:
        raise typer.Exit(1)


@jobs_cli.command("purge")
def jobs_purge(
    older_than_days: Annotated[float, typer.Option(help="only rows older than this many days")] = 30.0,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: without it nothing is deleted")] = False,
    history: Annotated[
        bool,
        typer.Option("--history", help="also the exchange records, job runs and remembered answers older than that"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Delete old delivered outbox rows (dead letters never; status history kept). With --history, also the
    exchange records (except those about messages still waiting or dead), scheduled-job runs and the answers
    remembered for Idempotency-Keys (a key re-sent after that is taken as new). The access log of personal data and
    the payment callbacks are never purged: they are legal records."""
    from hub.sync import jobs

    if not yes:
        err.print("[red]purge deletes outbox rows: repeat with --yes to confirm[/red]")
        raise typer.Exit(2)
    if older_than_days < 0:
        err.print("[red]--older-than-days must be >= 0[/red]")
        raise typer.Exit(2)
    rt = _Store()
    purged = 0
    try:
        with rt.sessions() as session:
            total = jobs.purgeable(session, older_than_days=older_than_days)
        with _progress(disable=as_json) as progress:
            task = progress.add_task("purging delivered outbox rows", total=total)
            while True:  # short transactions of 5,000 rows, so deliveries are not held up
                with rt.sessions.begin() as session:
                    n = jobs.purge(session, older_than_days=older_than_days, batch=5000)["purged"]
                purged += n
                progress.update(task, advance=n)
                if n == 0:
                    break
            removed = {"exchanges": 0, "job_runs": 0, "idempotency_keys": 0}
            if history:
                task = progress.add_task("purging exchange records and remembered answers", total=None)
                while True:
                    with rt.sessions.begin() as session:
                        step = jobs.purge_history(session, older_than_days=older_than_days)
                    removed = {k: removed[k] + step[k] for k in removed}
                    progress.update(task, advance=step["exchanges"] + step["idempotency_keys"])
                    if step["exchanges"] == 0 and step["idempotency_keys"] == 0:
                        break
    finally:
        rt.close()
    result: dict[str, int] = {"purged": purged, **(removed if history else {})}
    if as_json:
        out.print_json(json.dumps(result))
    else:
        extra = (
            f"; {removed['exchanges']} exchange record(s), {removed['job_runs']} job run(s), "
            f"{removed['idempotency_keys']} remembered answer(s) to Idempotency-Keys"
            if history
            else ""
        )
        out.print(f"purged {purged} outbox row(s){extra}")


dossiers_cli = typer.Typer(
    no_args_is_help=True,
    help="Dossiers held by hub: how they were resolved over a period, their personal data's retention",
)
cli.add_typer(dossiers_cli, name="dossiers")


@dossiers_cli.command("report")
def dossiers_report(
    start: Annotated[str, typer.Option("--from", help="the first day, YYYY-MM-DD (Vietnam's calendar)")],
    end: Annotated[str, typer.Option("--to", help="the last day, included")],
    agency: Annotated[
        str | None, typer.Option(help="only this agency's dossiers (a code, or a prefix ending in *)")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
) -> None:
    """How procedures were resolved over the period, per agency and procedure (ADR 0048): carried over, received
    online and otherwise, resolved before, on or after the appointment date, withdrawn or stopped, still being
    resolved at the end (within time, overdue)."""
    from datetime import date as date_

    from hub.domain.dates import utcnow
    from hub.domain.errors import DomainError
    from hub.services import reports

    if output not in ("table", "json", "csv"):
        err.print("[red]--format must be table, json or csv[/red]")
        raise typer.Exit(2)
    try:
        first, last = date_.fromisoformat(start), date_.fromisoformat(end)
    except ValueError:
        err.print("[red]--from and --to must be YYYY-MM-DD[/red]")
        raise typer.Exit(2) from None
    store = _Store()
    try:
        with store.sessions() as session:
            report = reports.resolution(session, first, last, agencies=[agency or "*"], now=utcnow())
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from None
    finally:
        store.close()
    if output == "json":
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
        return
    if output == "csv":
        sys.stdout.write(reports.as_csv(report))
        return
    table = Table(title=f"resolution of procedures {first} – {last} (as of {report.as_of})")
    table.add_column("agency", no_wrap=True)
    table.add_column("MaTTHC", no_wrap=True)
    for head in ("carried over", "received (online)", "resolved", "early", "on time", "late", "withdrawn, stopped",
                 "in progress", "overdue", "on time %"):  # fmt: skip
        table.add_column(head, justify="right")
    lines = [(*key, figures.as_dict()) for key, figures in sorted(report.lines.items())]
    for agency_code, procedure, f in [*lines, ("total", "", report.total().as_dict())]:
        rate = "—" if f["on_time_rate"] is None else f"{f['on_time_rate']:.2f}"
        table.add_row(*_plain(
            agency_code, procedure, f["carried_over"], f"{f['received']} ({f['received_online']})", f["resolved"],
            f["resolved_early"], f["resolved_on_time"], f["resolved_late"], f["ended"], f["in_progress"],
            f["in_progress_overdue"], rate,
        ))  # fmt: skip
    out.print(table)
    if report.unreadable:
        err.print(f"[yellow]{report.unreadable} dossier(s) left out: their NgayTiepNhan is not a date[/yellow]")


@dossiers_cli.command("redact")
def dossiers_redact(
    closed_for_days: Annotated[
        float, typer.Option(help="dossiers closed (3, 7, 8, 10) for longer than this many days", min=0)
    ],
    yes: Annotated[bool, typer.Option("--yes", help="confirm: without it nothing changes, the count is said")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Remove the personal data of closed dossiers past a retention period (Decree 13/2023): the owner's name, ID
    number and contacts, the summary, notes and files' links — from the dossier, its events and its delivered
    messages. Kept: MaHoSo, procedure, agency, dates, statuses, fees, each step's handler. A dossier with a message
    still to deliver (waiting or dead) is left whole. Final. Scheduled by HUB_PERSONAL_DATA_RETENTION_DAYS."""
    from hub.services import actions, retention

    rt = _Store()
    try:
        if not yes:
            with rt.sessions() as session:
                n = retention.due(session, closed_for_days=closed_for_days)
            err.print(f"[red]{n} dossier(s) would lose their personal data: repeat with --yes to do it[/red]")
            raise typer.Exit(2)
        with _progress(disable=as_json) as progress:
            task = progress.add_task("removing personal data of closed dossiers", total=None)
            totals = retention.redact_all(
                rt.sessions,
                closed_for_days,
                by=actions.cli_actor(),
                on_step=lambda step: progress.update(task, advance=step["dossiers"]),
            )
    finally:
        rt.close()
    if as_json:
        print(json.dumps(totals))
    else:
        out.print(
            f"{totals['dossiers']} dossier(s) lost their personal data ({totals['events']} event(s), "
            f"{totals['messages']} delivered message(s))"
        )


@cli.command("workers")
def workers_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The workers delivering now: from the roster in Redis (distributed mode), or the worker of each `hub serve`
    process on this SQLite database, from their notes beside it (embedded). Exit 1 if none does."""
    from hub.sync.workers import Roster, beat_ttl

    settings = _settings()
    if settings.embedded:
        from hub.store import db
        from hub.sync.embedded import FileRoster, Presence

        url = settings.effective_database_url
        path = db.sqlite_path(url)
        if path is None and url.startswith("postgresql"):
            _embedded_on_postgresql(url, as_json)
        if path is None or not path.exists():
            err.print(f"[red]no database at {path}[/red]" if path else "[red]no SQLite database file[/red]")
            raise typer.Exit(1)
        presence = Presence(path)
        try:
            delivering = not presence.alone()  # a `hub serve` that delivers holds the lock file shared
        finally:
            presence.close()
        # each one's worker thread, from its note beside the database (`hub serve --workers N`: N)
        noted = FileRoster(path, ttl=beat_ttl(settings.relay_poll_interval)).seen() if delivering else []
        if as_json:
            said = {"mode": "embedded", "delivering": delivering, "database": str(path)}
            out.print_json(json.dumps(said | {"workers": [w.as_dict() for w in noted]}))
        else:
            out.print(f"embedded: {'hub serve delivers' if delivering else 'no process delivers'} from {path}")
            if noted:
                _workers_table(noted)
        raise typer.Exit(0 if delivering else 1)
    import redis

    try:
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=3, socket_connect_timeout=3)
        seen = Roster(client, ttl=beat_ttl(settings.relay_poll_interval)).seen()
    except redis.RedisError as exc:
        err.print(f"[red]the broker does not answer:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        out.print_json(json.dumps([w.as_dict() for w in seen]))
    else:
        _workers_table(seen)
    if not seen:
        raise typer.Exit(1)


def _embedded_on_postgresql(url: str, as_json: bool) -> NoReturn:
    """`hub workers` for `hub serve` processes delivering from PostgreSQL without a broker: each delivers from its
    own worker thread, and the one that runs the scheduled jobs holds their lock (PgJobsLock) — seen in pg_locks."""
    from sqlalchemy.exc import DBAPIError

    from hub.sync.embedded import PgJobsLock

    try:
        holders = PgJobsLock.holders(url)
    except DBAPIError as exc:
        err.print(f"[red]the database does not answer:[/red] {exc.orig}")
        raise typer.Exit(2) from None
    if as_json:
        out.print_json(json.dumps({"mode": "embedded", "delivering": bool(holders), "database": "postgresql",
                                   "scheduled_jobs_run_by": holders}))  # fmt: skip
    elif holders:
        h = holders[0]
        out.print(
            f"embedded on PostgreSQL: hub serve delivers; its scheduled jobs run in the process of database session "
            f"{h['pid']} (from {h['address'] or 'this machine'}, since {h['since']})"
        )
    else:
        out.print("embedded on PostgreSQL: no process delivers (no hub serve holds the scheduled jobs' lock)")
    raise typer.Exit(0 if holders else 1)


def _workers_table(seen: list[Any]) -> None:
    table = Table(title=f"workers ({len(seen)})")
    for col in ("worker", "host", "pid", "processes", "last sign of life (s ago)", "last drain (s ago)"):
        table.add_column(col)
    for w in seen:
        drained = "—" if w.last_drain_age_s is None else str(w.last_drain_age_s)
        table.add_row(*_plain(w.name, w.host, str(w.pid), str(w.processes), str(w.beat_age_s), drained))
    out.print(table)


peers_cli = typer.Typer(no_args_is_help=True, help="External systems hub talks to")
cli.add_typer(peers_cli, name="peers")


@peers_cli.command("status")
def peers_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per peer: backlog, dead letters, oldest undelivered message, last success and failure."""
    from hub.sync import jobs

    rt = _Store()
    try:
        with rt.sessions() as session:
            rows = jobs.peers_status(session, rate_limits=_settings().peer_rate_limits)
    finally:
        rt.close()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="peers")
    for col in (
        "peer",
        "pending",
        "in flight",
        "dead",
        "delivered",
        "oldest undelivered (s)",
        "rate limit (/s)",
        "last ok",
        "last failure",
        "last error",
    ):
        table.add_column(col, no_wrap=col == "peer")  # the name whole, to be copied into `hub jobs` commands
    for p in rows:
        table.add_row(
            *_plain(
                p["peer"],
                str(p["pending"]),
                str(p["in_flight"]),
                str(p["dead"]),
                str(p["delivered"]),
                str(p["oldest_undelivered_s"] or "—"),
                (format(p["rate_limit"], "g") + (f" (≈{p['drain_s']:g} s)" if p["drain_s"] else ""))
                if p["rate_limit"] is not None
                else "—",
                p["last_ok"] or "—",
                p["last_failure"] or "—",
                p["last_error_code"] or "—",
            )
        )
    out.print(table)


clients_cli = typer.Typer(no_args_is_help=True, help="Client systems allowed to call /v1 (HUB_CLIENTS)")
cli.add_typer(clients_cli, name="clients")


@clients_cli.command("list")
def clients_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The client systems as configured: how each authenticates (never the key itself), what it may do."""
    settings = _settings()
    rows = [
        {
            "name": c.name,
            "api_key": c.api_key is not None,
            "next_api_key": c.next_api_key is not None,
            "oauth_client_id": c.oauth_client_id,
            "agencies": c.agencies,
            "roles": c.roles,
            "prefill_procedures": c.prefill_procedures,
            "prefill_purposes": c.prefill_purposes,
            "prefill_per_minute": c.prefill_per_minute,
        }
        for c in settings.clients
    ]
    if as_json:
        out.print_json(json.dumps({"oauth_issuer": settings.effective_oauth_issuer or None, "clients": rows}))
        return
    table = Table(title=f"client systems ({settings.mode} mode)")
    for column in ("name", "authenticates with", "agencies", "roles", "pre-fill (procedures / purposes)", "quota"):
        table.add_column(column)
    for c in settings.clients:
        keys = {0: [], 1: ["API key"], 2: ["API key (rotating: 2 taken)"]}[len(c.keys)]
        ways = keys + ([f"OAuth {c.oauth_client_id}"] if c.oauth_client_id else [])
        prefill = f"{', '.join(c.prefill_procedures) or '-'} / {', '.join(c.prefill_purposes) or '-'}"
        quota = f"{c.prefill_per_minute}/min" if c.prefill_per_minute else "none"
        table.add_row(*_plain(c.name, " + ".join(ways), ", ".join(c.agencies), ", ".join(c.roles), prefill, quota))
    out.print(table)
    if any(r["oauth_client_id"] for r in rows):
        out.print(f"access tokens from: {settings.effective_oauth_issuer or '(HUB_OAUTH_ISSUER not set: not taken)'}")


@clients_cli.command("new-key")
def clients_new_key() -> None:
    """A fresh random API key (32 URL-safe characters) to put in a client's HUB_CLIENTS entry."""
    import secrets as secrets_

    out.print(secrets_.token_urlsafe(24), soft_wrap=True)


routes_cli = typer.Typer(no_args_is_help=True, help="Down-flow routing: agency code -> provincial one-stop system")
cli.add_typer(routes_cli, name="routes")


@cli.command()
def poll(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="ask for the dossiers filed since this day, YYYY-MM-DD (Vietnam time), instead of the last "
            "HUB_PORTAL_POLL_DAYS: after pushes were lost for longer"
        ),
    ] = None,
) -> None:
    """Ask the national portal once for dossiers filed for the routed agencies (the fallback for lost pushes).
    Exit 1 when the portal did not answer for a route."""
    from datetime import date as date_
    from datetime import datetime as datetime_

    from hub.domain.dates import VN_TZ

    start = None
    if since is not None:
        try:
            start = datetime_.combine(date_.fromisoformat(since), datetime_.min.time(), VN_TZ)
        except ValueError:
            err.print("[red]--since must be YYYY-MM-DD[/red]")
            raise typer.Exit(2) from None
    rt = _jobs_runtime()
    try:
        counts = rt.poll_portal(start)
    finally:
        rt.close()
    if as_json:
        out.print_json(json.dumps(counts))
    else:
        out.print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    if counts.get("errors"):  # the portal did not answer for a route: its dossiers were not asked for
        raise typer.Exit(1)


@routes_cli.command("add")
def routes_add(pattern: str, endpoint: str) -> None:
    """Route an agency code (or a prefix ending in '*') to a one-stop system's base URL."""
    from hub.domain.errors import DomainError
    from hub.services.routes import Routes

    rt = _Store()
    try:
        route = Routes(rt.sessions).add(pattern, endpoint)
    except DomainError as exc:
        err.print(f"[red]{exc.code}:[/red] {exc.detail}")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    out.print(f"route {route['agency_pattern']} -> {route['endpoint']}")


@routes_cli.command("list")
def routes_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The routing table."""
    from hub.services.routes import Routes

    rt = _Store()
    try:
        rows = Routes(rt.sessions).all()
    finally:
        rt.close()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="routes")
    table.add_column("agency")
    table.add_column("one-stop endpoint")
    for r in rows:
        table.add_row(*_plain(r["agency_pattern"], r["endpoint"]))
    out.print(table)


@routes_cli.command("remove")
def routes_remove(pattern: str) -> None:
    """Remove a route (dossiers for that agency then dead-letter as unroutable until a route exists)."""
    from hub.services.routes import Routes

    rt = _Store()
    try:
        removed = Routes(rt.sessions).remove(pattern)
    finally:
        rt.close()
    if not removed:
        err.print(f"[red]no route {pattern}[/red]")
        raise typer.Exit(1)
    out.print(f"removed route {pattern}")


@catalogue_cli.command("sync")
def catalogue_sync(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Fetch the procedure catalogue from the national portal (LayDanhSachTTHC) into the store."""
    from hub.adapters.errors import PeerError

    rt = _jobs_runtime()
    try:
        result = rt.catalogue.sync(rt.portal, correlation_id="cli-catalogue-sync", on_exchange=rt.record_exchange)
    except PeerError as exc:
        err.print(f"[red]the portal did not answer the catalogue request:[/red] {exc.code}: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        rt.close()
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(f"catalogue: {result['stored']} procedure(s) stored, {result['skipped']} skipped")


@catalogue_cli.command("list")
def catalogue_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The procedures hub knows, with their time limits and fees."""
    from hub.domain.money import dong
    from hub.services.catalogue import Catalogue

    rt = _Store()
    try:
        items = Catalogue(rt.sessions).all()
    finally:
        rt.close()
    if as_json:
        out.print_json(json.dumps(items, ensure_ascii=False))
        return
    table = Table(title=f"{len(items)} procedure(s)")
    for col in ("MaTTHC", "TenTTHC", "limit (working days)", "fees (đồng)"):
        table.add_column(col)
    for p in items:
        fees = ", ".join(dong(f["Gia"]) for f in p["PhiLePhi"]) or "—"
        table.add_row(*_plain(p["MaTTHC"], p["TenTTHC"], str(p["ThoiHanGiaiQuyet"]), fees))
    out.print(table)


audit_cli = typer.Typer(no_args_is_help=True, help="Access log of personal data (append-only, hash-chained)")
cli.add_typer(audit_cli, name="audit")


def _audit_runtime(*, database: bool = True) -> tuple[Any, Any]:
    from hub.services.audit import AccessLog
    from hub.store import db

    settings = _settings()
    current, *previous = settings.secret_keys
    if not database:
        return None, AccessLog(current, previous)
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        db.upgrade(url)
    return db.make_engine(url), AccessLog(current, previous)


@audit_cli.command("verify")
def audit_verify(
    anchor: Annotated[
        list[str] | None, typer.Option(help="a head printed by an earlier run; must still be there")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="check an export (`hub audit export`) instead of the database")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the whole access log: any edited, inserted or removed entry breaks the chain. Exit 1 if broken.
    The heads hub noted outside the database (HUB_AUDIT_ANCHOR_FILE, every HUB_AUDIT_ANCHOR_INTERVAL s) must all
    still be in it: that catches entries cut off the end too. With --file, check an exported file entry by entry
    (needs the same HUB_SECRET_KEY, not the database)."""
    from hub.adapters.http import parse_json
    from hub.services.audit import read_anchors
    from hub.store import db

    noted = [] if file is not None else read_anchors(_settings().effective_audit_anchor_file)
    engine, log = _audit_runtime(database=file is None)
    if file is not None:
        try:
            with file.open(encoding="utf-8") as lines:
                result = log.check_export(parse_json(line) for line in lines if line.strip())
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            err.print(f"[red]cannot read {file}: {exc}[/red]")
            raise typer.Exit(2) from None
    else:
        try:
            with db.make_sessionmaker(engine)() as session:
                result = log.verify(session, anchors=frozenset([*(anchor or []), *(n["chain_hash"] for n in noted)]))
        finally:
            engine.dispose()
    gone = [n for n in noted if n["chain_hash"] in result.missing_anchors]
    if as_json:
        out.print_json(
            json.dumps({**result.as_dict(), "noted_heads": len(noted), "noted_heads_gone": [n["id"] for n in gone]})
        )
    elif result.intact:
        checked = f"; {len(noted)} noted head(s) found" if noted else ""
        out.print(f"[green]intact[/green]: {result.checked} entries; head {result.head}{checked}")
    elif result.broken_at is None:
        where = f" (entry {gone[0]['id']}, noted {gone[0].get('noted_at', '?')})" if gone else ""
        out.print(f"[red]BROKEN[/red]: {result.problem}{where}; {result.checked} entries left")
    else:
        out.print(f"[red]BROKEN[/red] at entry {result.broken_at}: {result.problem} ({result.checked} good before it)")
    raise typer.Exit(0 if result.intact else 1)


@audit_cli.command("export")
def audit_export(
    output: Annotated[Path, typer.Option("--out", help="the file to write (JSON lines, or CSV with --csv)")],
    since: Annotated[str | None, typer.Option(help="from this date or time (ISO 8601, Vietnam time)")] = None,
    until: Annotated[str | None, typer.Option(help="before this date or time (ISO 8601)")] = None,
    agency: Annotated[str | None, typer.Option(help="only reads made for this agency code")] = None,
    client: Annotated[str | None, typer.Option(help="only reads by this client system")] = None,
    csv_format: Annotated[bool, typer.Option("--csv", help="CSV for a spreadsheet (not re-checkable)")] = False,
) -> None:
    """Export access-log entries (an inspection, a period's archive): who read whose data (as an HMAC), why,
    under which consent, which fields — with the chain hashes, so `hub audit verify --file` can check the file
    later. The log is verified first: a broken chain is reported, not exported (exit 1)."""
    import csv

    from hub.services.audit import CHAINED
    from hub.store import db

    try:
        start, end = _when(since), _when(until)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    engine, log = _audit_runtime()
    written = 0
    try:
        with db.make_sessionmaker(engine)() as session:
            result = log.verify(session)
            if not result.intact:
                err.print(f"[red]the access log is BROKEN at entry {result.broken_at}: {result.problem}[/red]")
                raise typer.Exit(1)
            entries = log.export(session, since=start, until=end, agency=agency, client=client)
            try:
                f = output.open("w", encoding="utf-8", newline="")
            except OSError as exc:  # no such folder, not writable
                err.print(f"[red]cannot write {output}: {exc.strerror or exc}[/red]")
                raise typer.Exit(2) from None
            with f:
                if csv_format:
                    writer = csv.DictWriter(f, fieldnames=["id", *CHAINED, "prev_hash", "chain_hash"])
                    writer.writeheader()
                    for item in entries:
                        writer.writerow(spreadsheet_safe({**item, "fields": " ".join(item["fields"])}))
                        written += 1
                else:
                    for item in entries:
                        f.write(json.dumps(item, ensure_ascii=False) + "\n")
                        written += 1
    finally:
        engine.dispose()
    err.print(
        f"{written} entries written to {output}; the chain was intact ({result.checked} entries, head {result.head})"
    )


def _save_new(folder: Path, sent_name: str, fallback: str, data: bytes) -> Path:
    """Write a file another agency sent into `folder` under its bare name — no path of the sender's is followed, no
    control character kept — and never over a file already there (a second "x.pdf" becomes "x (2).pdf")."""
    name = "".join(c for c in Path(sent_name.replace("\\", "/")).name if c.isprintable())[:200]
    if name in ("", ".", ".."):
        name = fallback
    stem, suffix = Path(name).stem, Path(name).suffix
    for n in range(1, 10_000):
        path = folder / (name if n == 1 else f"{stem} ({n}){suffix}")
        try:
            with path.open("xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {name} in {folder}")


def _when(value: str | None) -> datetime | None:
    """An ISO 8601 date (midnight in Vietnam) or date-time (with an offset; without one, Vietnam's)."""
    if value is None:
        return None
    from hub.domain.dates import VN_TZ

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=VN_TZ)


@audit_cli.command("usage")
def audit_usage(
    subject_id: Annotated[
        str | None,
        typer.Argument(
            help="the citizen's 12-digit personal ID (not stored; matched by HMAC). Leave it out to be asked for it, "
            "or give it on standard input: on the command line it stays in the shell's history and shows in the "
            "process list"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    officer: Annotated[
        str | None, typer.Option(help="who asks, for the access log (default: this account's user name)")
    ] = None,
    agency: Annotated[str | None, typer.Option(help="the agency code the inquiry is made for")] = None,
    reason: Annotated[
        str | None, typer.Option(help="the grounds of the inquiry (a request letter, a complaint), kept in the log")
    ] = None,
) -> None:
    """Who used a citizen's data: every access, allowed or refused, newest first (an operator's export). The
    inquiry is itself logged (purpose access_log_inquiry, client "cli", with --reason) before anything is shown."""
    import getpass

    from hub.domain import identifiers
    from hub.domain.errors import DomainError
    from hub.domain.privacy import subject_hmacs
    from hub.services.audit import ACCESS_LOG_INQUIRY, Access
    from hub.store import db

    if subject_id is None:
        subject_id = typer.prompt("personal ID", err=True) if sys.stdin.isatty() else sys.stdin.readline()
        subject_id = subject_id.strip()
    else:
        err.print("note: a personal ID on the command line stays in the shell's history; leave it out to be asked")
    try:
        identifiers.personal_id(subject_id)
        if agency is not None:
            identifiers.agency_code(agency)
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from None
    subjects = subject_hmacs(_settings().secret_keys, subject_id)  # entries from before a key rotation too
    subject = subjects[0]
    engine, log = _audit_runtime()
    try:
        with db.make_sessionmaker(engine)() as session:
            items = list(log.usage(session, subjects))
        entry = Access.inquiry(
            ACCESS_LOG_INQUIRY,
            client="cli",
            agency=agency or "-",
            officer=officer or getpass.getuser(),
            subject=subject,
            correlation_id=f"cli-{uuid.uuid4().hex[:12]}",
            fields=["access_log"],
            reason=" ".join(reason.split()) if reason else None,
        )
        with db.raw_transaction(engine) as tx:
            log.append(tx, entry)
    finally:
        engine.dispose()
    if as_json:
        out.print_json(json.dumps(items, ensure_ascii=False))
        return
    table = Table(title=f"{len(items)} access(es) to this citizen's data")
    for col in ("at", "client", "agency", "officer", "as", "procedure", "purpose", "outcome", "fields"):
        table.add_column(col)
    for i in items:
        table.add_row(*_plain(
            i["at"], i["client"], i["agency"], i["officer"], i["as"], i["procedure"], i["purpose"],
            i["outcome"] + (f" ({i['reason']})" if i["reason"] else ""), ", ".join(i["fields"]) or "—",
        ))  # fmt: skip
    out.print(table)


sign_cli = typer.Typer(no_args_is_help=True, help="XML signatures: verify (ETSI report) and sign")
cli.add_typer(sign_cli, name="sign")


@sign_cli.command("verify")
def sign_verify(
    path: Annotated[Path, typer.Argument(help="the signed XML document, or a signed PDF (PAdES)")],
    trust: Annotated[list[Path] | None, typer.Option(help="trust anchor (PEM); repeat for several")] = None,
    intermediate: Annotated[list[Path] | None, typer.Option(help="extra intermediate certificates (PEM)")] = None,
    crl: Annotated[list[Path] | None, typer.Option(help="a CRL file (DER or PEM) to use as evidence")] = None,
    at: Annotated[str | None, typer.Option(help="validate as of this time, ISO 8601 with offset")] = None,
    fetch: Annotated[bool, typer.Option(help="fetch CRL/OCSP from the certificates' URLs")] = True,
    output: Annotated[str, typer.Option("--format", help="json | text")] = "text",
) -> None:
    """Exit 0 for TOTAL-PASSED, 1 for TOTAL-FAILED, 3 for INDETERMINATE, 2 for usage errors."""
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import serialization

    from hub.signing.revocation import RevocationSource
    from hub.signing.verify import Verifier

    if output not in ("json", "text"):
        err.print("[red]--format must be json or text[/red]")
        raise typer.Exit(2)
    if not trust:
        err.print("[red]give at least one --trust PEM (trust anchors are never taken from the system)[/red]")
        raise typer.Exit(2)
    try:
        data = path.read_bytes()
        anchors = _certificates(trust, "--trust")
        extra = _certificates(intermediate, "--intermediate")
        crls = []
        for p in crl or []:
            raw = p.read_bytes()
            loaded = cx509.load_pem_x509_crl(raw) if b"-----BEGIN" in raw else cx509.load_der_x509_crl(raw)
            crls.append(loaded.public_bytes(serialization.Encoding.DER))
        when = datetime.fromisoformat(at) if at else None
        if when is not None and when.tzinfo is None:
            raise ValueError("--at needs a time zone offset, e.g. 2026-11-24T09:00:00+07:00")
    except (OSError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    source = RevocationSource() if fetch else None
    try:
        verifier = Verifier(anchors, intermediates=extra, revocation=source, extra_crls=crls)
        from hub.signing.pdf import is_pdf, verify_pdf

        report = verify_pdf(verifier, data, at=when) if is_pdf(data) else verifier.verify(data, at=when)
    finally:
        if source is not None:
            source.close()
    if output == "json":
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.as_text())
    raise typer.Exit(report.exit_code)


def _certificates(paths: list[Path] | None, option: str) -> list[Any]:
    """The certificates in the files given to `option` (PEM, several a file, or DER); a file that holds none is a
    usage error naming the file (ValueError), not the ASN.1 parser's complaint."""
    from hub.signing.verify import read_certificates

    try:
        return read_certificates(paths or [])
    except ValueError as exc:
        raise ValueError(f"{option} {exc}") from None


def _load_signer(
    key: Path | None,
    cert: Path | None,
    pkcs12: Path | None,
    password_env: str | None,
    token: tuple[Path | None, str | None, str | None] = (None, None, None),
) -> Any:
    from hub.signing.sign import FileSigner

    password = os.environ.get(password_env, "") if password_env else ""
    module, token_label, key_label = token
    if module is not None:
        from hub.signing.pkcs11 import TokenConfig, TokenSigner

        if not token_label or not key_label or not password:
            err.print("[red]a token needs --token, --key-label and its PIN in --password-env[/red]")
            raise typer.Exit(2)
        given = _certificates([cert], "--cert") if cert is not None else None
        return TokenSigner(TokenConfig(module, token_label, key_label, password), given)
    if pkcs12 is not None:
        return FileSigner.from_pkcs12(pkcs12, password.encode() or None)
    if key is not None and cert is not None:
        return FileSigner.from_pem(key, cert, password.encode() or None)
    err.print("[red]give --key and --cert, --pkcs12, or a token (--pkcs11-module, --token, --key-label)[/red]")
    raise typer.Exit(2)


PKCS11_MODULE = typer.Option(
    "--pkcs11-module", help="the token's PKCS#11 library (.so): sign with a key that never leaves the token"
)
TOKEN_LABEL = typer.Option("--token", help="the token's label")
KEY_LABEL = typer.Option("--key-label", help="the private key's label on the token (its certificate is read there)")


@sign_cli.command("sign")
def sign_sign(
    path: Annotated[Path, typer.Argument(help="the XML document to sign (enveloped)")],
    key: Annotated[Path | None, typer.Option(help="private key (PEM)")] = None,
    cert: Annotated[Path | None, typer.Option(help="certificate (PEM), the chain may follow it in the file")] = None,
    pkcs12: Annotated[Path | None, typer.Option(help="key and certificate in a PKCS#12 file")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="name of the environment variable holding the key's password or token's PIN")
    ] = None,
    pkcs11_module: Annotated[Path | None, PKCS11_MODULE] = None,
    token: Annotated[str | None, TOKEN_LABEL] = None,
    key_label: Annotated[str | None, KEY_LABEL] = None,
    xades: Annotated[bool, typer.Option(help="XAdES-B-B (signing time, signing certificate)")] = False,
    tsa: Annotated[
        str | None, typer.Option(help="RFC 3161 time-stamping authority URL: XAdES-B-T (implies --xades)")
    ] = None,
    long_term: Annotated[
        bool,
        typer.Option(
            "--long-term",
            help="XAdES-B-LT: carry the certificates and CRL/OCSP evidence of the signature's validation now "
            "(needs --tsa and --trust; the signature must pass)",
        ),
    ] = False,
    trust: Annotated[
        list[Path] | None, typer.Option(help="trust anchor (PEM) to validate against for --long-term; repeat")
    ] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="where to write; default: stdout")] = None,
) -> None:
    """Sign a document with exclusive C14N and RSA-SHA256 / ECDSA-SHA256 (XAdES: C14N 1.1). Exit 2 on a usage
    error or a key that cannot sign, 4 when the time-stamping authority cannot be reached or refuses, 3 when
    --long-term finds the signature not validating now (no evidence to carry)."""
    from hub.signing.sign import sign_document

    if long_term and (not tsa or not trust):
        err.print("[red]--long-term needs --tsa (a time-stamp) and --trust (the anchors to validate against)[/red]")
        raise typer.Exit(2)

    def make() -> bytes:
        signer = _load_signer(key, cert, pkcs12, password_env, (pkcs11_module, token, key_label))
        signed = sign_document(path.read_bytes(), signer, xades=xades or tsa is not None, tsa_url=tsa)
        return _with_validation_data(signed, trust or []) if long_term else signed

    _sign_and_write(make, out_path)


def _with_validation_data(signed: bytes, trust: list[Path]) -> bytes:
    """XAdES-B-T → B-LT: validate now against `trust` and carry what was used; exit 3 if it does not pass."""
    from hub.signing.revocation import RevocationSource
    from hub.signing.sign import XADES_NS, add_validation_data
    from hub.signing.verify import Verifier
    from hub.signing.xml import parse_untrusted

    if parse_untrusted(signed).find(f".//{{{XADES_NS}}}SignatureTimeStamp") is None:
        err.print("[red]not a time-stamped XAdES signature (B-T): only one can carry its validation data[/red]")
        raise typer.Exit(2)
    source = RevocationSource()
    try:
        anchors = _certificates(trust, "--trust")
        certificates, crls, ocsps = Verifier(anchors, revocation=source).validation_data(signed)
    except ValueError as exc:
        err.print(f"[red]the signature does not validate now, so it cannot carry its validation data: {exc}[/red]")
        raise typer.Exit(3) from None
    finally:
        source.close()
    return add_validation_data(signed, certificates, crls, ocsps)


@sign_cli.command("extend")
def sign_extend(
    path: Annotated[Path, typer.Argument(help="a document with a time-stamped XAdES signature (B-T), anyone's")],
    trust: Annotated[list[Path], typer.Option(help="trust anchor (PEM) of the signer and of the TSA; repeat")],
    out_path: Annotated[Path | None, typer.Option("--out", help="where to write; default: stdout")] = None,
) -> None:
    """Make a time-stamped signature long-term (XAdES-B-LT), e.g. on taking a document into an archive: validate it
    now and add the certificates and CRL/OCSP evidence used to its unsigned properties, so it can be validated when
    the CA's services cannot be reached. Nothing signed changes. Exit 3 when it does not validate now (nothing
    written), 2 on a usage error or a signature that is not a time-stamped XAdES one."""

    def make() -> bytes:
        return _with_validation_data(path.read_bytes(), trust)

    _sign_and_write(make, out_path)


def _sign_and_write(make: Callable[[], bytes], out_path: Path | None) -> None:
    """Run a signing step and write what it signed (to stdout without --out): exit 2 on a usage error or a key
    that cannot sign, 4 when the time-stamping authority cannot be reached or refuses."""
    from hub.signing.sign import SigningError
    from hub.signing.xml import UnsafeXml

    try:
        signed: bytes = make()
    except SigningError as exc:  # its message names the file or the service at fault
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(4 if exc.code.startswith("tsa_") else 2) from None
    except (OSError, ValueError, KeyError, TypeError, UnsafeXml) as exc:
        err.print(f"[red]{exc.__class__.__name__}: {exc}[/red]")
        raise typer.Exit(2) from None
    if out_path is None:
        sys.stdout.buffer.write(signed)
    else:
        out_path.write_bytes(signed)


@sign_cli.command("edxml")
def sign_edxml(
    header_path: Annotated[Path, typer.Argument(metavar="HEADER.json", help="the document's header (see docs)")],
    attach: Annotated[list[Path] | None, typer.Option(help="a file to carry; repeat for several")] = None,
    key: Annotated[Path | None, typer.Option(help="private key (PEM)")] = None,
    cert: Annotated[Path | None, typer.Option(help="certificate (PEM), the chain may follow it in the file")] = None,
    pkcs12: Annotated[Path | None, typer.Option(help="key and certificate in a PKCS#12 file")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="environment variable holding the key's password or token's PIN")
    ] = None,
    pkcs11_module: Annotated[Path | None, PKCS11_MODULE] = None,
    token: Annotated[str | None, TOKEN_LABEL] = None,
    key_label: Annotated[str | None, KEY_LABEL] = None,
    tsa: Annotated[str | None, typer.Option(help="RFC 3161 time-stamping authority URL (XAdES-B-T)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="where to write; default: stdout")] = None,
) -> None:
    """Build an edXML envelope (QCVN 102:2016) from a JSON header and attachments, signed as the sending agency.
    Header keys: from {id, name}, to [{id, name}], code_number, code_notation, place, promulgation_date
    (YYYY-MM-DD), type, type_name, subject; optional content, signer_name, signer_position, due_date.
    Exit 2 on a usage error or a header that breaks contracts/edxml/edxml.xsd, 4 when the TSA fails."""
    import mimetypes
    from datetime import UTC, date, datetime

    from hub.signing import edxml

    def make() -> bytes:
        raw = json.loads(header_path.read_text(encoding="utf-8"))
        header = edxml.Header(
            sender=edxml.Organ(raw["from"]["id"], raw["from"]["name"]),
            receivers=[edxml.Organ(t["id"], t["name"]) for t in raw["to"]],
            code_number=str(raw["code_number"]),
            code_notation=raw["code_notation"],
            place=raw["place"],
            promulgation_date=date.fromisoformat(raw["promulgation_date"]),
            type=int(raw["type"]),
            type_name=raw["type_name"],
            subject=raw["subject"],
            content=raw.get("content", ""),
            signer_name=raw.get("signer_name", ""),
            signer_position=raw.get("signer_position", ""),
            due_date=date.fromisoformat(raw["due_date"]) if raw.get("due_date") else None,
        )
        files = [
            edxml.Attachment(p.name, mimetypes.guess_type(p.name)[0] or "application/octet-stream", p.read_bytes())
            for p in attach or []
        ]
        signer = _load_signer(key, cert, pkcs12, password_env, (pkcs11_module, token, key_label))
        return edxml.sign(header, files, signer, sent_at=datetime.now(UTC), tsa_url=tsa)

    _sign_and_write(make, out_path)


@sign_cli.command("edxml-read")
def sign_edxml_read(
    path: Annotated[Path, typer.Argument(help="a received edXML envelope")],
    trust: Annotated[list[Path] | None, typer.Option(help="trust anchor (PEM); repeat for several")] = None,
    save: Annotated[Path | None, typer.Option(help="directory to write the attachments to (only if verified)")] = None,
    output: Annotated[str, typer.Option("--format", help="json | text")] = "text",
) -> None:
    """Verify a received edXML envelope and show its header (and save its attachments) only when its signature
    passed and covers all of it. Exit codes as `hub sign verify`."""
    from hub.signing import edxml
    from hub.signing.revocation import RevocationSource
    from hub.signing.verify import Verifier

    if output not in ("json", "text") or not trust:
        err.print("[red]give at least one --trust PEM, and --format json or text[/red]")
        raise typer.Exit(2)
    try:
        data = path.read_bytes()
        anchors = _certificates(trust, "--trust")
    except (OSError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    source = RevocationSource()
    try:
        received = edxml.read(data, Verifier(anchors, revocation=source).verify)
    finally:
        source.close()
    if received.header is not None and save is not None:
        save.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(received.attachments, start=1):
            _save_new(save, a.name, f"attachment-{i}", a.data)
    if output == "json":
        print(json.dumps({"report": received.report.as_dict(), "header": received.header}, ensure_ascii=False))
    else:
        print(received.report.as_text())
        if received.header is not None:
            h = received.header
            print(f"  edXML:           {h['code']} {h['type']} — {h['subject']}")
            print(f"  from → to:       {h['from']['name']} → {', '.join(t['name'] for t in h['to'])}")
            for a in h["attachments"]:
                print(f"  attachment:      {a['name']} ({a['content_type']}, {a['bytes']} bytes)")
    raise typer.Exit(received.report.exit_code)


payments_cli = typer.Typer(no_args_is_help=True, help="Fee payments: reconcile, settle late callbacks")
cli.add_typer(payments_cli, name="payments")


@payments_cli.command("reconcile")
def payments_reconcile(
    day: Annotated[str, typer.Option("--date", help="the day to reconcile, YYYY-MM-DD (Vietnam time)")],
    platform: str = "dvc",
    output: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
    repair: Annotated[
        bool, typer.Option(help="credit a payment on the statement the platform confirms, hub had not (recovered)")
    ] = True,
) -> None:
    """hub's ledger against the platform's daily statement: matched, recovered (a payment whose confirmation never
    reached hub, asked about at the platform and credited now), missing at hub, missing at the platform, amount
    mismatch. Exit 1 when anything does not match."""
    import csv
    from datetime import date as date_

    if output not in ("table", "json", "csv"):
        err.print("[red]--format must be table, json or csv[/red]")
        raise typer.Exit(2)
    try:
        when = date_.fromisoformat(day)
    except ValueError:
        err.print("[red]--date must be YYYY-MM-DD[/red]")
        raise typer.Exit(2) from None
    rt = _jobs_runtime()
    try:
        if platform not in rt.payment_platforms:
            err.print(f"[red]payment platform {platform!r} is not configured[/red]")
            raise typer.Exit(2)
        from hub.domain.errors import DomainError

        try:
            result = rt.payments.reconcile(platform, when, correlation_id=f"reconcile-{day}", repair=repair)
        except DomainError as exc:
            err.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(3) from None
    finally:
        rt.close()
    if output == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif output == "csv":
        writer = csv.DictWriter(
            sys.stdout,
            fieldnames=["result", "reference", "transaction_id", "hub_amount", "platform_amount", "note"],
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in result["rows"])
    else:
        table = Table(
            title=f"{platform} {result['date']}: " + ", ".join(f"{k} {v}" for k, v in result["summary"].items())
        )
        for col in ("result", "reference", "transaction", "hub (đồng)", "platform (đồng)", "note"):
            table.add_column(col)
        for r in result["rows"]:
            table.add_row(*_plain(
                r["result"], r["reference"], r["transaction_id"], str(r["hub_amount"] or "—"),
                str(r["platform_amount"] or "—"), r["note"] or "",
            ))  # fmt: skip
        out.print(table)
    clean = result["summary"]["matched"] + result["summary"]["recovered"] == len(result["rows"])
    raise typer.Exit(0 if clean else 1)


@payments_cli.command("check")
def payments_check(
    references: Annotated[
        list[str] | None, typer.Argument(help="payment references (MaThamChieu) to ask about now, late or not")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask the platform about pending payments whose callback is late — or about the given ones, now — and settle
    what it reports. Exit 1 when a platform did not answer (those payments are asked again at the next check).
    """
    rt = _jobs_runtime()
    try:
        if references:
            counts = rt.payments.check_pending(
                correlation_id=f"payments-check-{uuid.uuid4().hex[:12]}", references=references
            )
        else:
            counts = rt.check_payments()
    finally:
        rt.close()
    if as_json:
        print(json.dumps(counts))
    else:
        out.print(counts or "nothing pending")
    if counts.get("errors") or counts.get("not_asked"):  # a platform did not answer: those wait for the next run
        raise typer.Exit(1)


@payments_cli.command("give-up")
def payments_give_up(
    reference: Annotated[str, typer.Argument(help="the payment's reference (MaThamChieu)")],
    reason: Annotated[str, typer.Option(help="why (kept with the operators' actions; required)")] = "",
    by: Annotated[str | None, typer.Option(help="who decided (default: the user running this command)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Give a pending pay link up now, not after HUB_PAYMENT_EXPIRE_AFTER_HOURS (the fee was wrong and has been
    corrected): the dossier's new payment can then be made. The platform is asked first — paid, it is credited
    instead. Exit 1 when it was not given up (paid or declined at the platform, not pending, or the platform
    did not answer)."""
    from hub.domain.errors import DomainError

    reason, who = _reason_and_actor(reason, by)
    rt = _jobs_runtime()
    try:
        result = rt.payments.give_up(
            reference, by=who, reason=reason, correlation_id=f"payments-give-up-{uuid.uuid4().hex[:12]}"
        )
    except DomainError as exc:
        err.print(f"[red]{exc.code}: {exc.detail}[/red]")
        raise typer.Exit(1) from None
    finally:
        rt.close()
    if as_json:
        print(json.dumps(result))
    elif result["given_up"]:
        out.print(f"{reference} given up (expired): the dossier's new payment can be made")
    else:
        out.print(f"{reference} not given up: the platform says {result['platform_said']}")
    if not result["given_up"]:
        raise typer.Exit(1)


edocs_cli = typer.Typer(no_args_is_help=True, help="Documents sent to other agencies (edXML): their receivers' status")
cli.add_typer(edocs_cli, name="edocs")


@edocs_cli.command("poll")
def edocs_poll(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Take the receivers' status notices waiting at the document exchange now (the workers do it every
    HUB_EDOC_STATUS_INTERVAL seconds): each verified, matched to the document hub sent, recorded, acknowledged."""
    from hub.adapters.errors import PeerError
    from hub.domain.errors import DomainError

    rt = _jobs_runtime()
    try:
        counts = rt.poll_edoc_status()
    except PeerError as exc:
        err.print(f"[red]the document exchange platform did not answer as it should ({exc.code}): {exc}[/red]")
        raise typer.Exit(1) from None
    except DomainError as exc:  # e.g. no trust anchors to verify the notices with: they stay at the platform
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    finally:
        rt.close()
    if as_json:
        print(json.dumps(counts))
    else:
        out.print(counts or "no status notice waiting")


operators_cli = typer.Typer(no_args_is_help=True, help="Accounts of the operator console (/ops)")
cli.add_typer(operators_cli, name="operators")


@operators_cli.command("add")
def operators_add(
    username: str,
    role: Annotated[str, typer.Option(help="viewer | operator | auditor")] = "viewer",
    password_env: Annotated[
        str | None, typer.Option(help="read the password from this environment variable instead of a prompt")
    ] = None,
) -> None:
    """Create a console account (the password is stored as an argon2 hash)."""
    from hub.console.auth import ROLES, Operators
    from hub.domain.errors import DomainError

    if role not in ROLES:  # said before the password is asked for, not after
        err.print(f"[red]role must be one of {', '.join(ROLES)}[/red]")
        raise typer.Exit(2)
    password = (
        os.environ.get(password_env, "")
        if password_env
        else typer.prompt("password", hide_input=True, confirmation_prompt=True)
    )
    rt = _Store()  # accounts live in the database: no peer's client needed
    try:
        Operators(rt.sessions).add(username, password, role)  # recorded as cli:<the OS user>
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    out.print(f"operator {username} ({role}) created")


def _operator_change(username: str, change: Callable[[Any], None], done: str) -> None:
    """Run one change to an account (hub.console.auth.Operators), saying what was done or why not."""
    from hub.console.auth import Operators
    from hub.domain.errors import DomainError

    rt = _Store()  # accounts live in the database: no peer's client needed
    try:
        change(Operators(rt.sessions))
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1 if exc.code == "operator_not_found" else 2) from None
    finally:
        rt.close()
    out.print(done)


@operators_cli.command("disable")
def operators_disable(username: str) -> None:
    """The account signs in no more; its open console sessions end at their next request."""
    _operator_change(username, lambda ops: ops.disable(username), f"operator {username} disabled")


@operators_cli.command("enable")
def operators_enable(username: str) -> None:
    """A disabled account may sign in again (with its password as it was)."""
    _operator_change(username, lambda ops: ops.enable(username), f"operator {username} enabled")


@operators_cli.command("password")
def operators_password(
    username: str,
    password_env: Annotated[
        str | None, typer.Option(help="read the password from this environment variable instead of a prompt")
    ] = None,
) -> None:
    """Set a new password (10+ characters); the account's open console sessions end."""
    password = (
        os.environ.get(password_env, "")
        if password_env
        else typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    )
    _operator_change(username, lambda ops: ops.set_password(username, password), f"operator {username}: password set")


@operators_cli.command("role")
def operators_role(username: str, role: Annotated[str, typer.Argument(help="viewer | operator | auditor")]) -> None:
    """Change an account's role; its open console sessions take it at their next request."""
    _operator_change(username, lambda ops: ops.set_role(username, role), f"operator {username} is now {role}")


@operators_cli.command("reset-second-factor")
def operators_reset_second_factor(username: str) -> None:
    """Forget an account's second factor (its phone lost or replaced): its open console sessions end, and it sets up
    a new one at its next sign-in (HUB_CONSOLE_SECOND_FACTOR)."""
    _operator_change(
        username, lambda ops: ops.reset_second_factor(username), f"operator {username}: second factor reset"
    )


@operators_cli.command("actions")
def operators_actions(
    actor: Annotated[str | None, typer.Option(help="one actor's: console:<user> or cli:<os user>")] = None,
    action: Annotated[str | None, typer.Option(help="one kind: replay, retry, set_aside, sign_in_failed, …")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What operators did (replays, retries, dead letters set aside, maintenance, payments queried, accounts) and
    their sign-ins, failed ones too — the latest first. The console shows the same at /ops/actions."""
    from hub.services import actions

    if action is not None and action not in actions.ACTIONS:
        err.print(f"[red]--action is one of {', '.join(actions.ACTIONS)}[/red]")
        raise typer.Exit(2)
    rt = _Store()
    try:
        with rt.sessions() as session:
            rows = actions.recent(session, actor=actor, action=action, limit=limit)
    finally:
        rt.close()
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table(title="operator actions (latest first)")
    for col in ("at", "actor", "action", "target", "outcome"):
        table.add_column(col)
    for a in rows:
        target, outcome = (json.dumps(a[k], ensure_ascii=False) for k in ("target", "outcome"))
        table.add_row(*_plain(str(a["at"]), str(a["actor"]), str(a["action"]), target, outcome))
    out.print(table)


@operators_cli.command("list")
def operators_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    from hub.console.auth import Operators

    rt = _Store()  # accounts live in the database: no peer's client needed
    try:
        items = Operators(rt.sessions).list()
    finally:
        rt.close()
    if as_json:
        print(json.dumps(items))
        return
    table = Table(title="console operators")
    for col in ("username", "role", "disabled", "second factor", "created_at", "last_sign_in"):
        table.add_column(col)
    for i in items:
        factor = "yes" if i["second_factor"] else "no"
        row = (i["username"], i["role"], i["disabled"], factor, i["created_at"], i["last_sign_in"] or "never")
        table.add_row(*_plain(*(str(v) for v in row)))
    out.print(table)


@cli.command()
def maintenance(
    action: Annotated[str, typer.Argument(help="on | off | status")] = "status",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Maintenance mode: `on` stops every worker from dispatching (ingest goes on, the outbox fills); `off` resumes."""
    if action not in ("on", "off", "status"):
        err.print("[red]say on, off or status[/red]")
        raise typer.Exit(2)
    from hub.services.actions import cli_actor
    from hub.sync.maintenance import Maintenance

    store = _Store()  # the flag is in the database, which every process reads within a second: no Runtime needed
    try:
        flag = Maintenance(store.sessions)
        if action != "status":
            flag.set(action == "on", by=cli_actor())
        status = flag.status()
    finally:
        store.close()
    if as_json:
        print(json.dumps(status))
    else:
        out.print(
            ("[yellow]maintenance ON[/yellow]" if status["maintenance"] else "maintenance off")
            + f"  ({status['by']}, {status['since']})"
        )


@cli.command("reconcile")
def reconcile_cmd(
    repair: Annotated[bool, typer.Option(help="re-enqueue missing events (safe: idempotent, in order)")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Compare hub's view of every open dossier with the national portal's; report drift per dossier (missing at
    the portal, status behind, status ahead, unknown to hub) and repair what is safe. Exit 1 when drift remains
    that needs a person (status ahead, unknown to hub) or the portal could not be asked."""
    rt = _jobs_runtime()
    try:
        with _progress(disable=as_json) as progress:
            task = progress.add_task("comparing with the national portal", total=None)

            def step(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = rt.reconcile(repair=repair, on_progress=step)
    finally:
        rt.close()
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        table = Table(
            title=f"checked {result['checked']}: in sync {result['in_sync']}, in progress {result['in_progress']}, "
            f"errors {result['errors']}, not asked {result['not_asked']} (portal unavailable), "
            f"repaired events {result['repaired_events']}"
        )
        for col in ("MaHoSo", "drift", "hub", "portal", "repaired", "note"):
            table.add_column(col)
        for d in result["drift"]:
            table.add_row(*_plain(d["code"], d["kind"], str(d["hub_status"] or "—"), str(d["portal_status"] or "—"),
                          str(d["repaired"]), d["note"]))  # fmt: skip
        out.print(table)
    needs_person = any(d["kind"] in ("status_ahead", "unknown_to_hub") for d in result["drift"])
    raise typer.Exit(1 if needs_person or result["errors"] or result["not_asked"] else 0)


def main() -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    from sqlalchemy.exc import DBAPIError

    try:
        cli()
    except DBAPIError as exc:  # a command that reads or writes the database, which cannot serve it: say why, plainly
        sys.exit(_database_refused(exc))


def _database_refused(exc: Exception) -> int:
    """What an operator reads when the database does not answer or is not at hub's schema (exit 1), instead of a
    traceback; the driver's own words (the server's address, the table missing) are kept, the statement not."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    lines = [line.strip() for line in str(getattr(exc, "orig", None) or exc).splitlines() if line.strip()]
    said = (lines[0] if lines else exc.__class__.__name__)[:300]  # the driver's first line: not the statement
    missing = "does not exist" in said or "no such table" in said or "no such column" in said
    if missing and isinstance(exc, ProgrammingError | OperationalError):
        err.print(f"[red]the database is not at hub's schema[/red] ({said}): run `hub db upgrade` first")
    elif isinstance(exc, OperationalError):
        err.print(f"[red]the database does not answer[/red]: {said}")
    else:
        err.print(f"[red]the database refused the command[/red]: {said}")
    return 1
