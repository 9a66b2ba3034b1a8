"""How hub's HTTPS connections to its peers are checked and authenticated: against certifi's bundle (what requests
and httpx trust) and, where a province configures them, the CAs of the networks its peers sit on (the government's
specialised CA, a data-exchange platform's own: HUB_TLS_CA_FILE), presenting hub's client certificate to a peer
that requires mutual TLS (HUB_TLS_CLIENT_CERT / HUB_TLS_CLIENT_KEY). One context, built at start-up, shared by every
adapter — but a peer given its own (HUB_TLS_PEERS__POPULATION__CLIENT_CERT: the population register's gateway
issues its own certificates, the payment platform others) has its own. A file that does not load stops hub at
start-up, saying which setting."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import certifi

if TYPE_CHECKING:
    from hub.settings import Settings


# the peers that take a context of their own, by the names the exchange record, `hub peers` and the metrics use
TLS_PEERS = (
    "national_portal",
    "one_stop",
    "population",
    "payment_dvc",
    "payment_vnpay",
    "document_exchange",
    "sms",
    "email",
    "identity_provider",
    "authorization_server",
)


class TlsSettingError(ValueError):
    """A TLS file hub was told to use does not load (missing, unreadable, not PEM, a key that does not match)."""


def setting_name(peer: str | None, field: str) -> str:
    """The environment variable of a TLS setting: HUB_TLS_CA_FILE, or a peer's HUB_TLS_PEERS__POPULATION__CA_FILE."""
    return f"HUB_TLS_{field.upper()}" if peer is None else f"HUB_TLS_PEERS__{peer.upper()}__{field.upper()}"


def client_context(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    key_password: str | None = None,
    *,
    peer: str | None = None,
) -> ssl.SSLContext | None:
    """The context for hub's outbound HTTPS, or None when nothing is configured (each client's default: certifi's
    bundle, no client certificate). Peers' certificates and host names are always checked; TLS 1.2 at least.
    `peer`: whose settings these are, for the errors' words (None: the ones every peer shares)."""
    if ca_file is None and cert_file is None:
        return None
    context = ssl.create_default_context(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingError(
                f"{setting_name(peer, 'ca_file')} {str(ca_file)!r} does not load as PEM certificates: {exc}"
            ) from exc
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, key_password)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingError(
                f"{setting_name(peer, 'client_cert')} {str(cert_file)!r} (key {str(key_file or cert_file)!r}) does "
                f"not load as a certificate and its private key: {exc}"
            ) from exc
    return context


@functools.cache
def default_context() -> ssl.SSLContext:
    """What hub's HTTPS checks peers against when no TLS setting is given: certifi's bundle (what httpx and
    requests trust), TLS 1.2 at least, no client certificate — one context for the process. Loading the bundle
    costs ~20 ms of CPU: every httpx client made its own, and a urllib3 pool given only the bundle's path loaded it
    again for each new connection."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def context_for(settings: Settings, peer: str) -> ssl.SSLContext:
    """The context the settings built for `peer` when they were read (once per process): its own where
    HUB_TLS_PEERS gives it one, else the one every peer shares, else the process's default."""
    return settings.tls_context_for(peer) or default_context()
