"""Peers on the government's network over HTTPS with certificates of a CA the public bundles do not hold, and
requiring hub's client certificate (mutual TLS): hub trusts the CAs of HUB_TLS_CA_FILE besides certifi's and
presents HUB_TLS_CLIENT_CERT. Without them its deliveries wait, each attempt saying why; with them they go."""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.adapters.tls import TlsSettingError, client_context
from hub.sandbox import national_portal
from hub.sandbox.common import ServerThread
from hub.settings import Settings
from tests.conftest import PORTAL_USER, Creds, HubFactory
from tests.helpers import dossier


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")]
    )


def _issue(
    tmp: Path, stem: str, cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, **kind: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0].subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind.get("server") else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if kind.get("server"):
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{stem}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tls")
    ca = _issue(tmp, "ca", "Test Government Network CA", None)
    _issue(tmp, "server", "127.0.0.1", ca, server=True)
    _issue(tmp, "hub", "hub.tinh.gov.vn", ca)
    other_ca = _issue(tmp, "other-ca", "Someone Else's CA", None)
    _issue(tmp, "stranger", "not-hub", other_ca)
    return tmp


@pytest.fixture(scope="module")
def mtls_portal(pki: Path, creds: Creds) -> Iterator[ServerThread]:
    """The national portal's sandbox behind HTTPS that requires a client certificate of the network's CA."""
    server = ServerThread(
        national_portal.create_app({PORTAL_USER: creds.portal_password}),
        ssl_certfile=str(pki / "server.pem"),
        ssl_keyfile=str(pki / "server.key"),
        ssl_ca_certs=str(pki / "ca.pem"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ).start()
    yield server
    server.stop()


def _received(server: ServerThread, pki: Path) -> int:
    control = client_context(pki / "ca.pem", pki / "hub.pem", pki / "hub.key")
    r = httpx.get(f"{server.url}/_sandbox/received", verify=control or True)
    return int(r.json()["count"])


def _last_error(hub: object, code: str) -> str:
    got = hub.http.get(f"/v1/dossiers/{code}").json()  # type: ignore[attr-defined]
    return str(got["events"][0]["deliveries"][0]["last_error"] or "")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_peer_requiring_mutual_tls_on_a_private_ca(
    hub_factory: HubFactory, mtls_portal: ServerThread, pki: Path, backend: str, tmp_path: Path
) -> None:
    start = _received(mtls_portal, pki)
    # the network's CA unknown to hub: the portal's certificate is not trusted, nothing is sent
    unknown = hub_factory(national_portal_url=mtls_portal.url, relay_backoff_base=60.0, var_dir=tmp_path / "a")
    d = dossier(1)
    assert unknown.http.post("/v1/dossiers", json=d).status_code == 202
    deadline = time.monotonic() + 15
    while "certificate verify failed" not in _last_error(unknown, d["MaHoSo"]):
        assert time.monotonic() < deadline, _last_error(unknown, d["MaHoSo"])
        time.sleep(0.1)

    # the CA trusted, but hub shows no client certificate: the portal refuses the handshake
    anonymous = hub_factory(
        national_portal_url=mtls_portal.url, tls_ca_file=pki / "ca.pem", relay_backoff_base=60.0, var_dir=tmp_path / "b"
    )
    d2 = dossier(2)
    assert anonymous.http.post("/v1/dossiers", json=d2).status_code == 202
    deadline = time.monotonic() + 15
    while not _last_error(anonymous, d2["MaHoSo"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _received(mtls_portal, pki) == start

    # both: the dossier reaches the portal
    trusted = hub_factory(
        national_portal_url=mtls_portal.url,
        tls_ca_file=pki / "ca.pem",
        tls_client_cert=pki / "hub.pem",
        tls_client_key=pki / "hub.key",
        var_dir=tmp_path / "c",
    )
    d3 = dossier(3)
    assert trusted.http.post("/v1/dossiers", json=d3).status_code == 202
    trusted.wait_idle()
    states = [
        x["state"] for e in trusted.http.get(f"/v1/dossiers/{d3['MaHoSo']}").json()["events"] for x in e["deliveries"]
    ]
    assert states == ["delivered"]
    assert _received(mtls_portal, pki) == start + 1
    # `hub check` connects as the adapters do, and says until when hub's certificate holds (1 day here: renew it)
    from hub.services import preflight

    checks = {c.name: c for c in preflight.run(trusted.runtime)}
    assert checks["national_portal"].status == "ok", checks["national_portal"]
    assert (
        checks["tls_client_certificate"].status == "warn"
        and "CN=hub.tinh.gov.vn" in checks["tls_client_certificate"].detail
    )


def test_tls_files_that_do_not_load_stop_hub_saying_which(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HUB_TLS_CA_FILE: no file at"):
        Settings(tls_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="set the certificate too"):
        Settings(tls_client_key=pki / "hub.key")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsSettingError, match="HUB_TLS_CA_FILE"):
        client_context(garbage)
    with pytest.raises(ValueError, match=r"HUB_TLS_CA_FILE .* does not load"):  # every command stops at start-up
        Settings(tls_ca_file=garbage)
    with pytest.raises(TlsSettingError, match="HUB_TLS_CLIENT_CERT"):  # a key that is not the certificate's
        client_context(None, pki / "hub.pem", pki / "stranger.key")
    context = client_context(pki / "ca.pem", pki / "hub.pem", pki / "hub.key")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert client_context() is None  # nothing set: each client's default (certifi's bundle)


def test_hub_check_fails_an_expired_client_certificate(pki: Path) -> None:
    from hub.services.preflight import _client_certificate

    status, detail = _client_certificate(pki / "hub.pem", datetime.now(UTC) + timedelta(days=2))
    assert status == "fail" and "expired" in detail and "refuse hub" in detail
