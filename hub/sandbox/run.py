"""Start the sandbox peers on loopback (for `hub sandbox`, `hub serve` in the embedded default and the demo)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub.sandbox import document_exchange, national_portal, one_stop, payment_dvc, pki, population
from hub.sandbox.common import PortsInUse, ServerThread, ports_in_use
from hub.sandbox.notify import SmtpSink, create_sms_app
from hub.sandbox.population_data import Population


@dataclass
class Sandboxes:
    national: ServerThread
    one_stop: ServerThread
    population: ServerThread
    pki: ServerThread | None = None
    pki_dir: Path | None = None
    payment: ServerThread | None = None
    smtp: SmtpSink | None = None
    sms: ServerThread | None = None  # the SMS gateway; GET /_sandbox/mail shows what the SMTP sandbox received
    sms_key: str | None = None
    document_exchange: ServerThread | None = None

    def stop(self) -> None:
        self.national.stop()
        self.one_stop.stop()
        self.population.stop()
        if self.pki is not None:
            self.pki.stop()
        if self.payment is not None:
            self.payment.stop()
        if self.sms is not None:
            self.sms.stop()
        if self.document_exchange is not None:
            self.document_exchange.stop()
        if self.smtp is not None:
            self.smtp.stop()


def start(
    host: str,
    national_port: int,
    one_stop_port: int,
    credentials: dict[str, str],
    population_port: int = 0,
    *,
    pki_port: int = 0,
    pki_dir: Path | None = None,
    payment_port: int = 0,
    payment_partners: dict[str, str] | None = None,
    notify_ports: tuple[int, int] | None = None,
    sms_key: str | None = None,
    edoc: tuple[int, str] | None = None,
    population_size: int = 3000,
    oauth_clients: dict[str, str] | None = None,
) -> Sandboxes:
    """Start the peers. With `pki_dir`, also the test PKI (fresh keys) with its CRL/OCSP endpoints; its roots,
    intermediates, leaf certificates and keys are written there as PEM files. With `notify_ports` (SMTP, SMS),
    also the SMTP sandbox and the SMS gateway (API key `sms_key`, or a fresh one). With `edoc` (port, API key) and
    the test PKI, the document exchange platform, which trusts the PKI's roots. `oauth_clients` (client_id →
    secret): the clients its authorization server issues access tokens to (client credentials grant).
    Raises `PortsInUse`, before starting any, when a fixed port asked for is held by another process."""
    wanted = {"national portal": national_port, "one-stop": one_stop_port, "population database": population_port}
    if pki_dir is not None:
        wanted["test PKI"] = pki_port
    if payment_partners:
        wanted["payment platform"] = payment_port
    if notify_ports is not None:
        wanted |= {"SMTP": notify_ports[0], "SMS gateway": notify_ports[1]}
    if edoc is not None and pki_dir is not None:
        wanted["document exchange"] = edoc[0]
    taken = ports_in_use(host, wanted)
    if taken:
        raise PortsInUse(host, taken)
    national = ServerThread(national_portal.create_app(credentials), host, national_port).start()
    onestop = ServerThread(one_stop.create_app(), host, one_stop_port).start()
    people = ServerThread(
        population.create_app(population.PopulationState(population=Population(population_size))),
        host,
        population_port,
    ).start()
    trust = None
    made: pki.TestPki | None = None
    if pki_dir is not None:
        state = pki.PkiState(oauth_clients=dict(oauth_clients or {}))
        trust = ServerThread(pki.create_app(state), host, pki_port).start()
        state.pki = pki.TestPki(trust.url)
        state.pki.write(pki_dir)
        made = state.pki
    pay = None
    if payment_partners:
        pay = ServerThread(payment_dvc.create_app(payment_partners), host, payment_port).start()
    smtp = sms = None
    if notify_ports is not None:
        import secrets

        sms_key = sms_key or secrets.token_urlsafe(16)
        smtp = SmtpSink(host, notify_ports[0]).start()
        sms = ServerThread(create_sms_app({sms_key}, mail=smtp), host, notify_ports[1]).start()
    exchange = None
    if edoc is not None and made is not None:
        roots = [made.issued[r].cert for r in ("national_root", "gov_root")]
        app = document_exchange.create_app(roots, {edoc[1]}, notary=made.signer("receiver"))
        exchange = ServerThread(app, host, edoc[0]).start()
    return Sandboxes(national, onestop, people, trust, pki_dir, pay, smtp, sms, sms_key, exchange)
