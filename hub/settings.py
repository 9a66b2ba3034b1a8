"""The one Settings object (env prefix HUB_, optional .env). Built once at start-up and passed in."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRETS_FILE = "dev-secrets.json"
DEV_CLIENT = "sandbox-onestop"  # the client system dev mode makes when none is configured
# the peers HUB_PEER_RATE_LIMITS may hold to a rate: the destinations of the outbox, and the population database
RATE_LIMITED = ("national_portal", "one_stop", "document_exchange", "sms", "email", "population")


def agency_matches(pattern: str, agency: str) -> bool:
    """An agency code against a configured pattern: the code itself, a prefix ending in `*`, or `*` for every one."""
    return pattern in ("*", agency) or (pattern.endswith("*") and agency.startswith(pattern[:-1]))


class ClientSystem(BaseModel):
    """A system allowed to call /v1 (a provincial one-stop system, a portal), and the agencies it acts for."""

    name: str
    api_key: SecretStr | None = Field(default=None, description="its API key (X-API-Key or Authorization: Bearer)")
    next_api_key: SecretStr | None = Field(
        default=None,
        description="a second key taken beside `api_key` while the client changes over to it (key rotation: set "
        "it, let the client switch, then make it the `api_key` and clear this)",
    )
    oauth_client_id: str | None = Field(
        default=None,
        description="its client_id at the OAuth 2.0 authorization server (HUB_OAUTH_ISSUER): access tokens "
        "issued to it by the client credentials grant authenticate it too, or instead of an API key",
    )
    agencies: list[str] = Field(description="agency codes it may act for; a trailing '*' matches a prefix")
    roles: list[str] = Field(
        default_factory=lambda: ["onestop"],
        description="onestop: files dossiers and progress; national_portal: pushes dossiers filed on the portal; "
        "auditor: reads the access log of personal data",
    )
    prefill_procedures: list[str] = Field(
        default_factory=list, description="procedure codes (MaTTHC) it may pre-fill forms for; '*' for all"
    )
    prefill_purposes: list[str] = Field(default_factory=list, description="purposes it may read personal data for")
    prefill_per_minute: int | None = Field(
        default=600,
        ge=1,
        description="pre-fills it may make a minute (a token bucket holding a minute's worth; null: no limit): "
        "bounds what a leaked key or a runaway integration can pull out of the population database",
    )

    @model_validator(mode="after")
    def _some_credential(self) -> ClientSystem:
        if self.api_key is None and not self.oauth_client_id:
            raise ValueError(f"client {self.name!r} needs an api_key or an oauth_client_id")
        return self

    @property
    def keys(self) -> list[SecretStr]:
        """The API keys it may present: its key, and during a rotation the next one."""
        return [k for k in (self.api_key, self.next_api_key) if k is not None]

    def may_prefill(self, procedure: str, purpose: str) -> bool:
        procedures_ok = "*" in self.prefill_procedures or procedure in self.prefill_procedures
        return procedures_ok and purpose in self.prefill_purposes

    def may_act_for(self, agency: str) -> bool:
        return any(agency_matches(pattern, agency) for pattern in self.agencies)


class PeerTls(BaseModel):
    """A peer's TLS settings (HUB_TLS_PEERS__{PEER}__…), or the shared ones (HUB_TLS_…)."""

    model_config = {"extra": "forbid"}

    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    client_key_password: SecretStr | None = None

    def over(self, shared: PeerTls) -> PeerTls:
        """These settings where given, the shared ones where not; a client certificate goes with its own key."""
        if self.client_cert is None and self.client_key is None:
            mine = (shared.client_cert, shared.client_key, shared.client_key_password)
        else:
            mine = (self.client_cert, self.client_key, self.client_key_password)
        return PeerTls(
            ca_file=self.ca_file or shared.ca_file, client_cert=mine[0], client_key=mine[1], client_key_password=mine[2]
        )

    def files(self, peer: str | None) -> tuple[Path | None, Path | None, Path | None, str | None]:
        """(CA file, client certificate, its key, the key's password), checked to be there: a missing one stops
        start-up naming its setting."""
        from hub.adapters.tls import setting_name

        if self.client_key is not None and self.client_cert is None:
            key, cert = setting_name(peer, "client_key"), setting_name(peer, "client_cert")
            raise ValueError(f"{key} is the key of {cert}: set the certificate too")
        for field in ("ca_file", "client_cert", "client_key"):
            path = getattr(self, field)
            if path is not None and not path.is_file():
                raise ValueError(f"{setting_name(peer, field)}: no file at {str(path)!r}")
        password = self.client_key_password.get_secret_value() if self.client_key_password else None
        return self.ca_file, self.client_cert, self.client_key, password


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore", env_nested_delimiter="__")

    mode: Literal["dev", "production"] = "dev"
    var_dir: Path = Path("var")
    database_url: str = ""  # empty -> SQLite file under var_dir
    broker_url: str = ""  # empty -> embedded in-process worker (no Redis needed)
    # Secrets: required in production; in dev mode generated once into var/dev-secrets.json (see load_settings).
    secret_key: SecretStr | None = None
    # the secret keys before the current one, newest first (a rotation: the old key moves here): what hub wrote under
    # them stays readable — the access log verifies, a citizen's history and consents are still found by their ID
    previous_secret_keys: list[SecretStr] = Field(default_factory=list)
    clients: list[ClientSystem] = Field(default_factory=list)
    max_body_bytes: int = 1_048_576
    # the body of a document with its files — an edXML dispatch (attachments in base64), a signed XML document to
    # verify (hub's XML parser takes up to 10 MiB) — may be larger than a JSON message
    max_document_bytes: int = Field(default=10 * 1_048_576, ge=1_048_576)
    db_pool_size: int = Field(default=20, ge=1, le=500)  # PostgreSQL connections kept open per process
    # bulkheads (ADR 0046): requests of the API waiting on one peer (the population database for pre-fills, the
    # portal for a one-stop system's look-up, a payment platform, a CA's revocation services or a TSA for
    # signatures, an identity provider's keys) at most this many at once per process, on threads of their own; one
    # more waits up to peer_queue_seconds for a place, then is answered 503 `peer_busy` — the rest of hub is not held
    peer_concurrency: int = Field(default=16, ge=1, le=500)
    peer_queue_seconds: float = Field(default=5.0, ge=0, le=300)
    # the API's documentation (/docs, /openapi.json): integrators read it; a deployment whose security review wants
    # no API description on the partners' network turns it off (both answer 404)
    api_docs: bool = True
    # SQLite (embedded): "full" syncs every commit to disk, so what hub answered for survives a power cut;
    # "normal" skips that fsync (~0.1–0.5 ms a commit) and a power cut may take the last commits back (ADR 0019)
    sqlite_synchronous: Literal["full", "normal"] = "full"
    # SQLite: free space kept on the database's volume; below it /readyz says "full" (the write-ahead log and the
    # checkpoint that copies it back need room of their own)
    disk_reserve_mb: int = Field(default=32, ge=0)

    # National portal (DVCQG) adapter.
    national_portal_url: str = ""  # empty -> the sandbox on loopback (dev only)
    national_portal_auth_path: str = "/api/auth"
    national_portal_service_path: str = "/api/service"
    national_portal_username: str = "hub-sandbox"
    national_portal_password: SecretStr | None = None
    national_portal_dstcode: str = "000.00.17.H56"
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    # HTTPS to every peer (portal, register, one-stop systems, payment platforms, document exchange, SMS gateway,
    # identity providers): CAs trusted besides certifi's bundle (PEM; e.g. the government's specialised CA), and
    # hub's client certificate for peers that require mutual TLS (the key in its own file or after the chain)
    tls_ca_file: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    tls_client_key_password: SecretStr | None = None
    _tls_context: ssl.SSLContext | None = PrivateAttr(default=None)  # built from the four above, once
    # a peer's own, where its network differs (HUB_TLS_PEERS__POPULATION__CLIENT_CERT=...): a CA file it leaves
    # out is the shared one; its client certificate, when it names one, replaces the shared one with its key
    tls_peers: dict[str, PeerTls] = Field(default_factory=dict)
    _tls_peer_contexts: dict[str, ssl.SSLContext | None] = PrivateAttr(default_factory=dict)

    # Population database (SOAP) adapter, for pre-filling forms.
    population_url: str = ""  # empty -> the sandbox on loopback (dev only)
    population_wsdl: Path | None = None  # empty -> contracts/population/population.wsdl shipped with hub
    population_integration_code: str = ""  # MaTichHop: the code the register's operator gives the integration
    population_username: str = ""  # the register's sign-in (with population_secret): HTTP Basic, hashed per request
    population_secret: SecretStr | None = None
    population_service_url: str = ""  # the service URL the sign-in's hash starts with; empty: HUB_POPULATION_URL
    population_timestamp_unit: Literal["s", "ms"] = "s"  # the sign-in's time: Unix seconds, or milliseconds
    population_x_road_client: str = ""  # X-Road-Client: hub's subsystem on the data-exchange platform (NDXP)
    population_api_key: SecretStr | None = None  # ApiKey header, when the platform's gateway issued one
    # Working days (NgayHenTra, overdue counts) follow Vietnam's official calendar — weekends, public holidays,
    # the government's make-up working Saturdays — from the `holidays` package; a province adds its own days off
    # and swapped working days here (JSON lists of YYYY-MM-DD), e.g. a swap decided after the package's release.
    calendar_days_off: list[date] = Field(default_factory=list)
    calendar_working_days: list[date] = Field(default_factory=list)
    prefill_validity_hours: float = 24.0  # how long a pre-filled value from the population database is valid
    population_cache_seconds: float = 300.0  # replies are reused (encrypted, keyed by HMAC) this long; 0: off

    # Citizens' sign-in (VNeID / the national portal's single sign-on, OpenID Connect): the ID tokens a citizen
    # shows to GET /v1/citizens/me/data-usage.
    citizen_idp_issuer: str = ""  # the provider's `iss`; empty -> the sandbox provider (dev only), else off
    citizen_idp_jwks_url: str = ""  # where it publishes its signing keys; empty -> {issuer}/jwks.json
    citizen_idp_audience: str = "hub"  # hub's client id at the provider: the tokens' `aud`
    citizen_id_claim: str = "sub"  # the claim that carries the citizen's 12-digit personal ID
    # requests a citizen may make a minute about their data (views of its usage, which are access-log entries
    # themselves, consent lists and withdrawals): a script looping on them would grow the log without bound (a
    # token bucket per citizen, as the clients' read quota)
    citizen_views_per_minute: int = Field(default=30, ge=1)
    # the web origins (scheme://host[:port]) of the portal pages where citizens sign in, whose scripts may call
    # /v1/citizens/me/* from the citizen's browser (CORS, bearer tokens, no cookies); empty: none may
    citizen_cors_origins: list[str] = Field(default_factory=list)
    # Client systems with OAuth 2.0 access tokens (client credentials grant) instead of, or beside, API keys: the
    # authorization server they get tokens from (the province's API gateway / LGSP).
    oauth_issuer: str = ""  # its `iss`; empty -> the sandbox's (dev only), else off
    oauth_jwks_url: str = ""  # its signing keys; empty -> {issuer}/jwks.json
    oauth_audience: str = "hub"  # hub as a resource server: the tokens' `aud`
    oauth_client_claim: str = "client_id"  # RFC 9068; Keycloak-style servers put it in `azp`
    # a token naming hub's scopes (hub:dossiers, hub:prefill…) may do only what they cover; with this, one naming
    # none of them may do nothing (else it acts with the client system's configured permissions)
    oauth_require_scopes: bool = False

    # Signatures: trust anchors only from here (never the OS bundle); hub's own signing key.
    signing_trust_anchors: list[Path] = Field(default_factory=list)  # PEM files; dev: the sandbox PKI's roots
    signing_intermediates: list[Path] = Field(default_factory=list)
    signing_key: Path | None = None  # PEM private key ...
    signing_cert: Path | None = None  # ... and its certificate (with the chain after it)
    signing_pkcs12: Path | None = None  # or both in a PKCS#12 file
    signing_key_password: SecretStr | None = None
    # or a key that never leaves its token (an HSM, a CA's USB token): the token's PKCS#11 library, the token's
    # label, the private key's label and the user PIN; the certificate is read from the token (or HUB_SIGNING_CERT)
    signing_pkcs11_module: Path | None = None
    signing_pkcs11_token: str = ""
    signing_pkcs11_key: str = ""
    signing_pkcs11_pin: SecretStr | None = None
    document_exchange_url: str = ""  # the inter-agency document exchange platform; dev: the sandbox on loopback
    document_exchange_api_key: SecretStr | None = None  # hub's key there (dev: generated into var/dev-secrets.json)
    signing_tsa_url: str = ""  # RFC 3161 TSA for XAdES-B-T; dev: the sandbox PKI's TSA when it is in use
    # XAdES-B-LT: what hub signs carries the certificates and CRL/OCSP evidence of its validation (archives)
    signing_long_term: bool = False
    revocation_cache_seconds: float = 3600.0  # CRL/OCSP evidence is reused until nextUpdate, at most this long
    # an OCSP responder / CRL server that did not answer is not asked again for this long (0: every time)
    revocation_down_seconds: float = Field(default=15.0, ge=0.0, le=600.0)

    # Citizen notifications (off until configured): email through SMTP, SMS through a gateway.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_sender: str = "hub@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    sms_gateway_url: str = ""
    sms_api_key: SecretStr | None = None
    sms_brandname: str = "DVCQG"

    # Fee payments.
    public_url: str = ""  # hub's base URL as peers reach it (payment callbacks); empty -> http://127.0.0.1:8000
    payment_dvc_url: str = ""  # the DVC payment platform; empty -> the sandbox on loopback (dev only)
    payment_dvc_partner: str = "HUB-SANDBOX"  # MaDoiTac
    payment_dvc_secret: SecretStr | None = None  # the partner secret in every MaXacThuc
    payment_vnpay_pay_url: str = ""  # the gateway's pay page (e.g. https://.../paymentv2/vpcpay.html); empty: off
    payment_vnpay_api_url: str = ""  # its merchant API (querydr, statement)
    payment_vnpay_merchant: str = ""  # vnp_TmnCode
    payment_vnpay_secret: SecretStr | None = None  # the HMAC-SHA512 key
    payment_platforms: dict[str, str] = Field(
        default_factory=dict, description="agency code pattern ('*' suffix) -> platform name; default: dvc"
    )
    payment_query_after_seconds: float = 900.0  # a pending payment without callback is queried after this
    payment_callback_max_age_hours: float = 48.0  # callbacks about older transactions are refused (replay)
    payment_check_interval: float = 60.0  # seconds between checks of pending payments; 0 disables
    # a payment still not paid this long after it was made is given up as expired (its pay link abandoned); a new
    # one can be made for the dossier, and a late confirmation of the old one is still credited
    payment_expire_after_hours: float = Field(default=72.0, gt=0)
    # once a day, the previous day's statement of each platform against hub's ledger (a scheduled job): checked
    # every interval (0 disables), taken from this hour of the day in Vietnam (the platforms publish after midnight)
    payment_reconcile_interval: float = 3600.0
    payment_reconcile_hour: int = Field(default=6, ge=0, le=23)

    # Sandbox peers (embedded default).
    sandbox_host: str = "127.0.0.1"
    sandbox_national_port: int = 8701
    sandbox_onestop_port: int = 8702
    sandbox_population_port: int = 8703
    sandbox_population_size: int = Field(default=3000, ge=10, le=200_000)  # people the population sandbox makes
    sandbox_pki_port: int = 8704
    sandbox_payment_port: int = 8705
    sandbox_smtp_port: int = 8706
    sandbox_sms_port: int = 8707
    sandbox_edoc_port: int = 8708

    # Relay.
    relay_batch_size: int = 64
    relay_concurrency: int = 16
    relay_lease_seconds: float = 20.0  # renewed while the batch is delivered: a dead worker's rows return within it
    relay_max_attempts: int = 25  # failures the peer reports for a message (500, error_code 99) before it is dead
    relay_give_up_after_hours: float = 72.0  # a peer that is down: messages wait this long before they are dead
    relay_backoff_base: float = 1.0
    relay_backoff_cap: float = 300.0
    relay_poll_interval: float = 1.0
    # how fast deliveries may go to each system of a destination, in messages a second, e.g. {"national_portal": 20}:
    # the rate a portal's connection agreement or its gateway allows, held by every worker together (one pace in
    # Redis; in embedded mode, in a file beside the database); after an outage the backlog drains at this rate
    # instead of all at once (ADR 0049). Unset: as fast as the workers go
    peer_rate_limits: dict[str, float] = Field(default_factory=dict)
    reconcile_interval: float = 3600.0  # seconds between reconciliations with the portal; 0 disables
    edoc_status_interval: float = 60.0  # seconds between polls for the receivers' status notices; 0 disables
    reconcile_concurrency: int = Field(default=8, ge=1, le=64)  # portal look-ups in flight during a reconciliation
    # how far back a reconciliation looks: a dossier whose result was returned (10) is compared this many days after,
    # so that a portal left behind on that last step is brought up to date, and the portal's dossiers filed this
    # many days back are listed (unknown_to_hub) — not for ever: each run would ask about every dossier ever closed
    reconcile_days: float = Field(default=7.0, ge=0)
    portal_poll_interval: float = 300.0  # seconds between polls of the portal for missed pushes; 0 disables
    # a poll asks for the dossiers filed at the portal this many days back (or back to the last answered poll)
    portal_poll_days: float = Field(default=3.0, gt=0)
    worker_enabled: bool = True  # `hub serve` in embedded mode runs the in-process worker
    # a `hub worker` whose consumer has started no drain for this long, although its ticker asks for one every poll
    # interval and its pool is not all busy, stops (exit 75) for its supervisor to start it again; 0: never
    worker_stuck_seconds: float = Field(default=300.0, ge=0)
    # The access log's head (last entry's id and chain hash) is noted outside the database every this many seconds
    # (0: never), in `audit_anchor_file` and the log: `hub audit verify` then finds entries cut off its end too.
    audit_anchor_interval: float = 300.0
    audit_anchor_file: Path | None = None  # empty -> var_dir/audit-anchors.jsonl
    # An operator's console session ends after this many minutes without a request (and after 8 hours in any case)
    console_idle_minutes: float = Field(default=30.0, gt=0)
    # Operators sign in to the console with a second factor — a code from an authenticator app (RFC 6238), enrolled
    # at their first sign-in — on top of their password. Unset: required in production, not in dev mode. An account
    # that has enrolled is asked for its code whatever this says (ADR 0053).
    console_second_factor: bool | None = None
    # Closed dossiers (3, 7, 8, 10) lose their personal data once closed this many days, nothing of them left to
    # deliver (hub.services.retention; Decree 13/2023): 0 keeps it (the province sets its retention period). Looked
    # for every `personal_data_retention_interval` seconds.
    personal_data_retention_days: float = Field(default=0.0, ge=0)
    personal_data_retention_interval: float = 3600.0

    @property
    def effective_audit_anchor_file(self) -> Path:
        return self.audit_anchor_file or self.var_dir / "audit-anchors.jsonl"

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        from hub.adapters.tls import TLS_PEERS, client_context

        unknown = sorted(set(self.tls_peers) - set(TLS_PEERS))
        if unknown:
            raise ValueError(f"HUB_TLS_PEERS: no peer {', '.join(unknown)}; the peers are {', '.join(TLS_PEERS)}")
        shared = PeerTls(
            ca_file=self.tls_ca_file,
            client_cert=self.tls_client_cert,
            client_key=self.tls_client_key,
            client_key_password=self.tls_client_key_password,
        )
        # built once, here: a file that is not PEM, or a key that is not the certificate's, stops every command at
        # start-up with the setting's name, as any other wrong setting does; every adapter then shares it
        self._tls_context = client_context(*shared.files(None))
        self._tls_peer_contexts = {
            peer: client_context(*own.over(shared).files(peer), peer=peer) for peer, own in self.tls_peers.items()
        }
        return self

    @model_validator(mode="after")
    def _signing_files(self) -> Settings:
        """The trust anchors and intermediates load as certificates, or hub does not start: a wrong file named at
        start-up with its setting, not a verification that fails later."""
        for name, paths in (
            ("HUB_SIGNING_TRUST_ANCHORS", self.signing_trust_anchors),
            ("HUB_SIGNING_INTERMEDIATES", self.signing_intermediates),
        ):
            if paths:
                from hub.signing.verify import read_certificates  # (signxml and lxml: only when there is a file)

                try:
                    read_certificates(paths)
                except ValueError as exc:
                    raise ValueError(f"{name} {exc}") from None
        return self

    def tls_client_cert_for(self, peer: str) -> Path | None:
        """The client certificate hub presents to `peer` (its own, or the shared one), if any."""
        own = self.tls_peers.get(peer)
        if own is not None and own.client_cert is not None:
            return own.client_cert
        return self.tls_client_cert

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """The context of hub's HTTPS to its peers (hub.adapters.tls), or None: each client's default."""
        return self._tls_context

    def tls_context_for(self, peer: str) -> ssl.SSLContext | None:
        """`peer`'s own context where HUB_TLS_PEERS gives it one, else the shared one."""
        return self._tls_peer_contexts.get(peer, self._tls_context)

    def tls_client_certs(self) -> dict[str, Path]:
        """Each client certificate hub presents, by whose it is ("" for the shared one), for `hub check`."""
        certs = {"": self.tls_client_cert} if self.tls_client_cert is not None else {}
        return certs | {peer: own.client_cert for peer, own in self.tls_peers.items() if own.client_cert is not None}

    @model_validator(mode="after")
    def _previous_keys_are_previous(self) -> Settings:
        current = self.secret_key.get_secret_value() if self.secret_key else None
        seen: set[str] = set()
        for key in self.previous_secret_keys:
            value = key.get_secret_value()
            if not value or value == current or value in seen:
                raise ValueError("HUB_PREVIOUS_SECRET_KEYS lists a key twice, an empty one, or HUB_SECRET_KEY itself")
            seen.add(value)
        return self

    @property
    def console_requires_second_factor(self) -> bool:
        return self.console_second_factor if self.console_second_factor is not None else self.mode == "production"

    @property
    def secret_keys(self) -> list[bytes]:
        """The secret keys, the current one first, then the previous ones (newest first)."""
        current = self.secret_key.get_secret_value().encode() if self.secret_key else b""
        return [current, *(k.get_secret_value().encode() for k in self.previous_secret_keys)]

    @field_validator("citizen_cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"{origin!r} is not a web origin like https://dichvucong.gov.vn (no path, no '*')")
        return value

    @field_validator("peer_rate_limits")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for destination, rate in value.items():
            if destination not in RATE_LIMITED:
                known = ", ".join(RATE_LIMITED)
                raise ValueError(f"{destination!r} is not a peer hub holds to a rate (one of {known})")
            if not 0 < rate <= 100_000:
                raise ValueError(f"{destination}: {rate} is not a rate (messages a second, more than 0)")
        return value

    @field_validator("clients", mode="before")
    @classmethod
    def _clients_from_json(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value)
        return value

    @model_validator(mode="after")
    def _token_settings_together(self) -> Settings:
        if self.signing_pkcs11_module is None:
            return self
        missing = [
            name
            for name, value in (
                ("HUB_SIGNING_PKCS11_TOKEN", self.signing_pkcs11_token),
                ("HUB_SIGNING_PKCS11_KEY", self.signing_pkcs11_key),
                ("HUB_SIGNING_PKCS11_PIN", self.signing_pkcs11_pin and self.signing_pkcs11_pin.get_secret_value()),
            )
            if not value
        ]
        if missing:
            raise ValueError("HUB_SIGNING_PKCS11_MODULE needs " + ", ".join(missing))
        if self.signing_key is not None or self.signing_pkcs12 is not None:
            raise ValueError("give one signing key: a token (HUB_SIGNING_PKCS11_*) or a file (HUB_SIGNING_KEY/PKCS12)")
        return self

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.mode != "production":
            return self
        problems = []
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 32:
            problems.append("HUB_SECRET_KEY must be set to a random value of at least 32 characters")
        if not self.clients:
            problems.append("HUB_CLIENTS must list the client systems, each with its own API key or OAuth client id")
        if any(len(key.get_secret_value()) < 24 for c in self.clients for key in c.keys):
            problems.append("client API keys must be at least 24 characters")
        if self.national_portal_password is None or not self.national_portal_password.get_secret_value():
            problems.append("HUB_NATIONAL_PORTAL_PASSWORD must be set")
        if not self.national_portal_url:
            problems.append("HUB_NATIONAL_PORTAL_URL must point at the real portal in production")
        if not self.population_url:
            problems.append("HUB_POPULATION_URL must point at the population database in production")
        if self.payment_dvc_url and (self.payment_dvc_secret is None or len(self.payment_dvc_secret) < 16):
            problems.append("HUB_PAYMENT_DVC_SECRET must be set (16+ characters) with HUB_PAYMENT_DVC_URL")
        if not self.database_url or self.database_url.startswith("sqlite"):
            problems.append("HUB_DATABASE_URL must point at PostgreSQL in production")
        if problems:
            raise ValueError("refusing to start in production mode: " + "; ".join(problems))
        return self

    @field_validator("database_url")
    @classmethod
    def _a_store_hub_runs_on(cls, url: str) -> str:
        """SQLite or PostgreSQL (through psycopg): another database is said at start-up, not as a missing driver."""
        scheme = url.split(":", 1)[0].lower()
        if url and not (scheme.split("+")[0] == "sqlite" or scheme in ("postgresql", "postgresql+psycopg")):
            raise ValueError(
                f"HUB_DATABASE_URL: hub stores in SQLite (sqlite:///FILE) or PostgreSQL (postgresql+psycopg://…), "
                f"not {scheme!r}"
            )
        return url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'hub.db').as_posix()}"

    @property
    def embedded(self) -> bool:
        """No broker configured: the in-process worker delivers (same task functions)."""
        return not self.broker_url

    @property
    def effective_national_portal_url(self) -> str:
        return self.national_portal_url or f"http://{self.sandbox_host}:{self.sandbox_national_port}"

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or "http://127.0.0.1:8000").rstrip("/")

    @property
    def effective_citizen_idp_issuer(self) -> str:
        if self.citizen_idp_issuer:
            return self.citizen_idp_issuer.rstrip("/")
        return f"http://{self.sandbox_host}:{self.sandbox_pki_port}/idp" if self.mode == "dev" else ""

    @property
    def effective_payment_dvc_url(self) -> str:
        return self.payment_dvc_url or f"http://{self.sandbox_host}:{self.sandbox_payment_port}"

    def payment_platform_for(self, agency: str) -> str:
        return next((p for pattern, p in self.payment_platforms.items() if agency_matches(pattern, agency)), "dvc")

    @property
    def effective_document_exchange_url(self) -> str:
        return self.document_exchange_url or f"http://{self.sandbox_host}:{self.sandbox_edoc_port}"

    @property
    def effective_population_url(self) -> str:
        return self.population_url or f"http://{self.sandbox_host}:{self.sandbox_population_port}/ws/congdan"

    def client_for_key(self, api_key: str) -> ClientSystem | None:
        """Look a client up by API key, comparing digests in constant time."""
        offered = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()  # "\ud800" from JSON: no key
        found = None
        for client in self.clients:
            for key in client.keys:
                if hmac.compare_digest(offered, hashlib.sha256(key.get_secret_value().encode()).digest()):
                    found = client
        return found

    def client_for_oauth(self, client_id: str) -> ClientSystem | None:
        return next((c for c in self.clients if c.oauth_client_id is not None and c.oauth_client_id == client_id), None)

    @property
    def effective_oauth_issuer(self) -> str:
        if self.oauth_issuer:
            return self.oauth_issuer.rstrip("/")
        return f"http://{self.sandbox_host}:{self.sandbox_pki_port}/idp" if self.mode == "dev" else ""


def _dev_secrets(var_dir: Path) -> dict[str, str]:
    """Random secrets for a developer's machine, made once and kept in var/ (never in the code). The file appears
    whole or not at all — written beside it, synced, then linked into place — so a crash while making it leaves
    none (made again at the next start), and processes starting together (`hub serve --workers N`, a worker beside
    it) all take the one that was linked first."""
    path = var_dir / DEV_SECRETS_FILE
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "secret_key": secrets.token_urlsafe(32),
            "client_api_key": secrets.token_urlsafe(24),
            "national_portal_password": secrets.token_urlsafe(16),
            "payment_dvc_secret": secrets.token_urlsafe(32),
            "document_exchange_key": secrets.token_urlsafe(32),
        }
        _write_whole(path, data, replace=False)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("secret_key"), str):
            raise ValueError("not an object with a secret_key")
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is damaged ({exc}): restore it from a backup — its secret_key chains this machine's access log "
            "and finds its citizens' records — or, on a throw-away machine, remove it with the database beside it"
        ) from None
    # a file made by an earlier version: add what is new, derived from its secret key so that processes starting
    # together add the same values
    key = data["secret_key"].encode()
    added = {
        k: hmac.new(key, f"dev-secret/{k}".encode(), hashlib.sha256).hexdigest()
        for k in ("payment_dvc_secret", "document_exchange_key")
        if k not in data
    }
    if added:
        data = {**data, **added}
        _write_whole(path, data, replace=True)
    return data


def _write_whole(path: Path, data: dict[str, str], *, replace: bool) -> None:
    """Write `data` as `path`, whole or not at all (mode 0600). `replace=False`: if `path` exists meanwhile, the one
    there stays (another process made it first)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process linked its own first: that one stays
                os.link(tmp, path)  # atomic
    finally:
        tmp.unlink(missing_ok=True)


def load_settings(**overrides: object) -> Settings:
    """Build the Settings once at start-up. In dev mode, fill unset secrets from var/dev-secrets.json."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.mode == "production":
        return settings
    missing = (
        settings.secret_key is None
        or not settings.clients
        or settings.national_portal_password is None
        or settings.payment_dvc_secret is None
        or settings.document_exchange_api_key is None
    )
    if not missing:
        return settings
    dev = _dev_secrets(settings.var_dir)
    update: dict[str, object] = {}
    if settings.secret_key is None:
        update["secret_key"] = SecretStr(dev["secret_key"])
    if not settings.clients:
        update["clients"] = [
            ClientSystem(
                name=DEV_CLIENT,
                api_key=SecretStr(dev["client_api_key"]),
                oauth_client_id=DEV_CLIENT,  # the sandbox authorization server's client (its secret: the API key)
                agencies=["*"],
                roles=["onestop", "national_portal", "auditor"],
                prefill_procedures=["*"],
                prefill_purposes=["civil_status_registration"],
            )
        ]
    if settings.national_portal_password is None:
        update["national_portal_password"] = SecretStr(dev["national_portal_password"])
    if settings.payment_dvc_secret is None:
        update["payment_dvc_secret"] = SecretStr(dev["payment_dvc_secret"])
    if settings.document_exchange_api_key is None:
        update["document_exchange_api_key"] = SecretStr(dev["document_exchange_key"])
    return settings.model_copy(update=update)
