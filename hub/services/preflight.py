"""`hub check`: before going live (and after any change of configuration), ask every system hub depends on whether
it answers as hub needs — the database at the schema's head, the broker, the national portal accepting hub's
credentials, the other peers reachable, hub's signing key producing a signature its own verifier passes with the
configured anchors and revocation, the identity providers' published keys. Each check says ok, warn or fail with
what it found; nothing is written anywhere but the exchange record of the calls made (and, to time the disk's
fsync, a scratch file beside the SQLite database, removed at once)."""

from __future__ import annotations

import os
import ssl
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from hub.adapters.errors import PeerError
from hub.adapters.identity import TokenVerifier, client_tokens
from hub.logs import correlation_id

if TYPE_CHECKING:
    from hub.runtime import Runtime

CERT_WARN_DAYS = 30
SLOW_FSYNC_MS = 10.0  # a commit waits for one: past this, every answer that commits does too
LOW_DISK_BYTES = 1024 * 1_048_576  # the SQLite volume: warn below 1 GiB free


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    ms: float = 0.0


def _reachable(
    url: str, timeout: float, tls: ssl.SSLContext | None = None, *, with_cert: bool = True
) -> tuple[str, str]:
    """Any HTTP answer means the system is there (hub's own calls prove the rest); no answer is a failure. Over
    HTTPS as hub's adapters connect (`tls`: the province's CAs and hub's client certificate, ADR 0035).
    `with_cert`: whether hub presents a client certificate to this peer — an HTTPS peer that hangs up on a hub
    presenting none most likely requires one (TLS 1.3 says so only by closing the connection)."""
    try:
        r = httpx.get(
            url, timeout=timeout, follow_redirects=False, trust_env=False, verify=tls if tls is not None else True
        )
    except httpx.HTTPError as exc:
        said = f"{url}: no answer ({exc.__class__.__name__}: {str(exc)[:160]})"
        closed = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) or "certificate required" in str(exc)
        if url.startswith("https:") and not with_cert and closed:
            said += "; it hung up after the handshake: does it require hub's client certificate (HUB_TLS_CLIENT_CERT)?"
        return "fail", said
    return "ok", f"{url}: HTTP {r.status_code}"


def _client_certificate(path: Path, now: datetime) -> tuple[str, str]:
    """hub's TLS client certificate (the first of HUB_TLS_CLIENT_CERT's chain): whom it names, until when. Peers
    that require it refuse every connection once it has expired."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    subject = cert.subject.rfc4514_string()
    left = cert.not_valid_after_utc - now
    if left <= timedelta(0):
        return "fail", f"{subject}: expired on {cert.not_valid_after_utc:%Y-%m-%d}: peers requiring it refuse hub"
    if left < timedelta(days=CERT_WARN_DAYS):
        return "warn", f"{subject}: expires in {left.days} days ({cert.not_valid_after_utc:%Y-%m-%d}): renew it"
    return "ok", f"{subject}: valid {left.days} more days"


def _fsync_ms(folder: Path, rounds: int = 20) -> float:
    """The median time to write a page and fsync it in `folder`, as a commit's log sync does."""
    times = []
    fd, name = tempfile.mkstemp(prefix=".hub-check-", dir=folder)
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        os.unlink(name)
    return statistics.median(times)


def run(rt: Runtime) -> list[Check]:
    s = rt.settings
    timeout = s.connect_timeout + s.read_timeout
    correlation = f"preflight-{uuid.uuid4().hex[:12]}"
    checks: list[Check] = []

    def check(name: str, probe: Callable[[], tuple[str, str]]) -> None:
        started = time.perf_counter()
        try:
            status, detail = probe()
        except PeerError as exc:
            status, detail = "fail", f"{exc.code}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a check reports what went wrong; it never stops the others
            status, detail = "fail", f"{exc.__class__.__name__}: {exc}"
        checks.append(Check(name, status, detail[:300], round((time.perf_counter() - started) * 1000, 1)))

    def database() -> tuple[str, str]:
        from hub.store import db

        current, head = db.current_revision(rt.engine), db.head_revision(s.effective_database_url)
        if current != head:
            return "fail", f"schema at {current}, code expects {head}: run `hub db upgrade`"
        return "ok", f"{rt.engine.dialect.name}, schema at {head}"

    def durability() -> tuple[str, str]:
        from hub.store import db

        path = db.sqlite_path(s.effective_database_url)
        if path is None:
            if rt.engine.dialect.name != "postgresql":
                return "skip", f"{rt.engine.dialect.name}: not checked"
            with rt.engine.connect() as conn:
                value = str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
            if value == "off":
                return "warn", "PostgreSQL synchronous_commit=off: a database crash may take back commits hub answered"
            return "ok", f"PostgreSQL synchronous_commit={value}: a commit is on disk before hub answers"
        took = _fsync_ms(path.parent)
        said = f"an fsync on {path.parent} takes {took:.2f} ms (median of 20)"
        if s.sqlite_synchronous == "normal":
            return "warn", f"HUB_SQLITE_SYNCHRONOUS=normal: a power cut may take back the last commits; {said}"
        if took > SLOW_FSYNC_MS:
            return "warn", f"each commit waits for the disk: {said} (ADR 0019)"
        return "ok", f"SQLite synchronous=full: each commit on disk before hub answers; {said}"

    def disk() -> tuple[str, str]:
        from hub.store.space import MIB

        free = rt.disk.free_bytes()
        if free is None:
            return "skip", "PostgreSQL: its server's disk is its own monitoring's"
        said = f"{free / MIB:,.0f} MiB free on the database's volume ({rt.disk.database_file})"
        if free < rt.disk.reserve_bytes:
            return "fail", f"{said}, below the reserve of {s.disk_reserve_mb} MiB: writes will be refused"
        if free < LOW_DISK_BYTES:
            return "warn", f"{said}: the access log and the outbox grow with every request (`hub jobs purge`)"
        return "ok", said

    def broker() -> tuple[str, str]:
        if s.embedded:
            return "skip", "embedded mode: no broker"
        import redis

        redis.Redis.from_url(s.broker_url, socket_timeout=timeout, socket_connect_timeout=s.connect_timeout).ping()
        return "ok", "Redis answers"

    def portal() -> tuple[str, str]:
        rt.portal.sign_in(correlation_id=correlation, on_exchange=rt.record_exchange)
        return "ok", f"{s.effective_national_portal_url}: signed in as {s.national_portal_username}"

    def signing() -> tuple[str, str]:
        cert = rt.signatures.signer().certificate
        left = cert.not_valid_after_utc - datetime.now(UTC)
        tsa = rt.signatures.tsa_url()
        signed = rt.signatures.sign(b"<KiemTra><NoiDung>hub check</NoiDung></KiemTra>")  # as hub signs for peers
        report = rt.signatures.verify(signed)
        subject = cert.subject.rfc4514_string()
        if s.signing_pkcs11_module is not None:
            subject += f" (key on token {s.signing_pkcs11_token!r})"
        if report.indication != "TOTAL-PASSED":
            return "fail", f"{subject}: its own signature is {report.indication} {report.sub_indication or ''}"
        form = "XAdES-B-T (time-stamped)" if tsa else "XAdES-B-B (no TSA configured)"
        if tsa and s.signing_long_term:
            form = "XAdES-B-LT (time-stamped, carrying its certificates and revocation evidence)"
        if left < timedelta(days=CERT_WARN_DAYS):
            return "warn", f"{subject}: certificate expires in {left.days} days; signatures pass ({form})"
        return "ok", f"{subject}: {form} signature passes with chain and revocation; valid {left.days} more days"

    def document_exchange() -> tuple[str, str]:
        """The platform takes hub's key (asked for the status notices waiting, none taken), and hub has anchors to
        verify those notices with."""
        if s.mode == "production" and not s.document_exchange_url:
            return "skip", "HUB_DOCUMENT_EXCHANGE_URL not set: documents for other agencies are refused"
        waiting = rt.document_exchange.statuses(limit=1, correlation_id=correlation, on_exchange=rt.record_exchange)
        rt.signatures.verifier()  # no trust anchors: NotConfigured, said as the failure
        notices = "status notices are waiting" if waiting else "no status notice waiting"
        return "ok", f"{s.effective_document_exchange_url}: hub's key accepted; {notices}"

    def payment(platform: Any, url: str) -> Callable[[], tuple[str, str]]:
        def probe() -> tuple[str, str]:
            """The platform takes hub's partner code and key: asked about a payment hub never made (no payment is
            made), it answers that it has none, where a wrong secret is refused (PeerAuthFailed, said as the
            failure) — found before the first citizen's payment is, not by it."""
            reference = f"HUBCHECK{uuid.uuid4().hex[:12].upper()}"
            found = platform.query(reference, correlation_id=correlation)
            if found.status != "unknown":
                return "warn", f"{url}: asked about {reference}, which hub never made, it answered {found.status!r}"
            return "ok", f"{url}: hub's partner code and key accepted (asked about a payment it has not got)"

        return probe

    def smtp() -> tuple[str, str]:
        """The mail relay takes hub as hub sends to it (STARTTLS, its credentials); nothing is sent."""
        if rt.email is None:
            return "skip", "HUB_SMTP_HOST not set: no email to citizens"
        return "ok", rt.email.check()

    def keys(verifier: TokenVerifier) -> Callable[[], tuple[str, str]]:
        def probe() -> tuple[str, str]:  # through the verifier's own key client: its URL, its exchange record
            found = verifier.published_keys()
            return ("ok" if found else "fail"), f"{verifier.issuer}: {found} signing key(s) published"

        return probe

    def access_log() -> tuple[str, str]:
        from hub.services.audit import read_anchors
        from hub.store.db import sqlite_path

        path = s.effective_audit_anchor_file
        if s.audit_anchor_interval <= 0:
            return "warn", "HUB_AUDIT_ANCHOR_INTERVAL is 0: entries cut off the log's end would go unnoticed"
        existing = next(p for p in (path, *path.parents) if p.exists())  # the job creates missing folders
        if not os.access(existing, os.W_OK):
            return "fail", f"{path}: cannot be written ({existing} is not writable): the log's head is not noted"
        noted = read_anchors(path)
        said = f"{len(noted)} head(s) noted, the last at {noted[-1].get('noted_at')}" if noted else "no head noted yet"
        database = sqlite_path(s.effective_database_url)
        if database is not None:
            beside = next(p for p in (database, *database.parents) if p.exists())
            if os.stat(beside).st_dev == os.stat(existing).st_dev:
                return "warn", f"{path}: on the database's volume (put it on another: HUB_AUDIT_ANCHOR_FILE); {said}"
        return "ok", f"{path}: {said}"

    def access_log_key() -> tuple[str, str]:
        with rt.sessions() as session:
            key = rt.prefill.access_log.last_key(session)
        if key is None:
            return "fail", (
                "the access log's last entry was not chained under HUB_SECRET_KEY nor any of HUB_PREVIOUS_SECRET_KEYS: "
                "after a rotation, put the old key there (ADR 0034); else run `hub audit verify`"
            )
        if key == -1:
            return "ok", "empty; new entries are chained under HUB_SECRET_KEY"
        if key == 0:
            return "ok", "the last entry is chained under HUB_SECRET_KEY"
        return "ok", f"the last entry is chained under previous key #{key}: the next ones take HUB_SECRET_KEY"

    def database_role() -> tuple[str, str]:
        """Whether hub's processes connect as a role that may rewrite its records (ADR 0044)."""
        if rt.engine.dialect.name != "postgresql":
            return "skip", f"{rt.engine.dialect.name}: no roles; the database file's permissions protect it"
        from hub.store import grants

        role, owner, rewrites = grants.connected_role(rt.engine)
        if owner or rewrites:
            said = "owns hub's tables" if owner else "may update the access log"
            return "warn", (
                f"hub connects as {role}, which {said}: a flaw in hub could rewrite its records and drop their "
                "triggers; connect `hub serve` and `hub worker` as a role given `hub db grant ROLE`"
            )
        return "ok", f"hub connects as {role}: it may write as hub does, not alter or rewrite its records"

    def retention() -> tuple[str, str]:
        """Whether closed dossiers' personal data goes after a retention period (ADR 0037), and how many wait."""
        days = s.personal_data_retention_days
        if not days:
            said = "closed dossiers keep their personal data for ever (HUB_PERSONAL_DATA_RETENTION_DAYS not set)"
            return ("warn" if s.mode == "production" else "ok"), said
        from hub.services import retention as kept

        with rt.sessions() as session:
            due = kept.due(session, closed_for_days=days)
        return "ok", f"removed {days:g} days after a dossier closes; {due} dossier(s) due at the next run"

    def console_accounts() -> tuple[str, str]:
        """Who may sign in to the console and how (ADR 0053): a production console without a second factor, or
        with no account at all, is said."""
        from hub.console.auth import Operators

        accounts = [a for a in Operators(rt.sessions).list() if not a["disabled"]]
        with_factor = sum(1 for a in accounts if a["second_factor"])
        if not accounts:
            return "warn", "no console account enabled (`hub operators add NAME --role operator`)"
        said = f"{len(accounts)} account(s) enabled, {with_factor} with a second factor"
        if s.console_requires_second_factor:
            return "ok", f"{said}; required (the others set one up at their next sign-in)"
        if s.mode == "production":
            return "warn", f"{said}; not required (HUB_CONSOLE_SECOND_FACTOR=false): a password alone opens it"
        return "ok", f"{said}; not required (dev mode)"

    cid = correlation_id.set(correlation)  # the exchanges the checks make carry it
    try:
        check("database", database)
        check("durability", durability)
        check("disk", disk)
        check("database_role", database_role)
        check("broker", broker)
        check("national_portal", portal)
        for whose, cert in s.tls_client_certs().items():  # the shared one, and each peer's own
            name = f"tls_client_certificate:{whose}" if whose else "tls_client_certificate"
            check(name, lambda cert=cert: _client_certificate(cert, datetime.now(UTC)))  # type: ignore[misc]
        for name, url in {"population": s.effective_population_url, **_peer_urls(rt)}.items():
            platform = rt.payment_platforms.get(name.removeprefix("payment_")) if name.startswith("payment_") else None
            if platform is not None and not (name == "payment_vnpay" and not s.payment_vnpay_api_url):
                check(name, payment(platform, url))
                continue
            tls, with_cert = s.tls_context_for(name), s.tls_client_cert_for(name) is not None
            check(name, lambda url=url, tls=tls, c=with_cert: _reachable(url, timeout, tls, with_cert=c))  # type: ignore[misc]
        one_stop_systems(check, rt, timeout)
        check("document_exchange", document_exchange)
        check("email", smtp)
        check("signing", signing)
        check("access_log", access_log)
        check("access_log_key", access_log_key)
        check("personal_data_retention", retention)
        check("console", console_accounts)
        if rt.citizen_tokens is not None:
            check("identity_provider", keys(rt.citizen_tokens))
        if (access_tokens := client_tokens(s, rt.record_exchange)) is not None:
            check("authorization_server", keys(access_tokens))
    finally:
        correlation_id.reset(cid)
    return checks


def one_stop_systems(check: Callable[[str, Callable[[], tuple[str, str]]], None], rt: Runtime, timeout: float) -> None:
    """The one-stop systems the down-flow routing table sends to (`hub routes`), each reached once, with the agency
    codes it serves: a route to a mistyped address would otherwise be found by the first dossier filed at the
    portal, as a dead letter."""
    from hub.services.routes import Routes

    served: dict[str, list[str]] = {}
    try:
        for route in Routes(rt.sessions).all():
            served.setdefault(route["endpoint"], []).append(route["agency_pattern"])
    except Exception as exc:  # noqa: BLE001 - the database does not answer: said by its own check, and here
        said = f"the routing table could not be read ({exc.__class__.__name__})"
        check("one_stop", lambda: ("fail", said))
        return
    if not served:
        check("one_stop", lambda: ("skip", "no down-flow route (`hub routes add AGENCY URL`): dossiers the national "
                                   "portal passes on reach no one-stop system"))  # fmt: skip
        return
    s = rt.settings
    tls, with_cert = s.tls_context_for("one_stop"), s.tls_client_cert_for("one_stop") is not None
    for endpoint, patterns in served.items():

        def probe(endpoint: str = endpoint, patterns: list[str] = patterns) -> tuple[str, str]:
            status, detail = _reachable(endpoint, timeout, tls, with_cert=with_cert)
            return status, f"{detail} (serves {', '.join(patterns)})"

        check("one_stop" if len(served) == 1 else f"one_stop:{patterns[0]}", probe)


def _peer_urls(rt: Runtime) -> dict[str, str]:
    s = rt.settings
    urls: dict[str, Any] = {
        "payment_dvc": s.effective_payment_dvc_url if "dvc" in rt.payment_platforms else None,
        "payment_vnpay": (s.payment_vnpay_api_url or s.payment_vnpay_pay_url)
        if "vnpay" in rt.payment_platforms
        else None,
        "sms": s.sms_gateway_url or None,
    }
    return {name: url for name, url in urls.items() if url}
