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


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_peer_on_a_network_of_its_own_gets_its_own_client_certificate(
    hub_factory: HubFactory, mtls_portal: ServerThread, pki: Path, backend: str, tmp_path: Path
) -> None:
    """The shared client certificate is one the portal's network does not know (another platform's); the portal's
    own (HUB_TLS_PEERS__NATIONAL_PORTAL__…) is the network's: the dossier goes, and `hub check` watches both."""
    start = _received(mtls_portal, pki)
    hub = hub_factory(
        national_portal_url=mtls_portal.url,
        tls_ca_file=pki / "ca.pem",
        tls_client_cert=pki / "stranger.pem",
        tls_client_key=pki / "stranger.key",
        tls_peers={"national_portal": {"client_cert": pki / "hub.pem", "client_key": pki / "hub.key"}},
        var_dir=tmp_path,
    )
    d = dossier(4)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    hub.wait_idle()
    events = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["events"]
    assert [x["state"] for e in events for x in e["deliveries"]] == ["delivered"]
    assert _received(mtls_portal, pki) == start + 1
    from hub.services import preflight

    checks = {c.name: c for c in preflight.run(hub.runtime)}
    assert "CN=not-hub" in checks["tls_client_certificate"].detail
    assert "CN=hub.tinh.gov.vn" in checks["tls_client_certificate:national_portal"].detail


def test_a_peers_own_tls_settings_come_from_the_environment_and_fall_back_to_the_shared_ones(
    pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_TLS_CA_FILE", str(pki / "ca.pem"))
    monkeypatch.setenv("HUB_TLS_PEERS__POPULATION__CLIENT_CERT", str(pki / "hub.pem"))
    monkeypatch.setenv("HUB_TLS_PEERS__POPULATION__CLIENT_KEY", str(pki / "hub.key"))
    monkeypatch.setenv("HUB_TLS_PEERS__PAYMENT_DVC__CA_FILE", str(pki / "other-ca.pem"))
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.tls_client_cert_for("population") == pki / "hub.pem" and s.tls_client_cert_for("payment_dvc") is None
    shared, population, payment = (s.tls_context_for(p) for p in ("national_portal", "population", "payment_dvc"))
    assert shared is s.tls_context and population is not shared and payment is not shared
    # the population register's gateway: the shared CA (its own left out) and its own client certificate
    issuers = lambda ctx: {dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()}  # noqa: E731
    assert "Test Government Network CA" in issuers(population)
    assert "Someone Else's CA" in issuers(payment) and "Test Government Network CA" not in issuers(payment)
    monkeypatch.setenv("HUB_TLS_PEERS__POPULATON__CA_FILE", str(pki / "ca.pem"))  # a typo is not ignored
    with pytest.raises(ValueError, match="no peer populaton; the peers are national_portal"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.delenv("HUB_TLS_PEERS__POPULATON__CA_FILE")
    monkeypatch.delenv("HUB_TLS_PEERS__POPULATION__CLIENT_CERT")
    with pytest.raises(ValueError, match="HUB_TLS_PEERS__POPULATION__CLIENT_KEY is the key of"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    monkeypatch.delenv("HUB_TLS_PEERS__POPULATION__CLIENT_KEY")
    monkeypatch.setenv("HUB_TLS_PEERS__SMS__CA_FILE", str(garbage))
    with pytest.raises(ValueError, match=r"HUB_TLS_PEERS__SMS__CA_FILE .* does not load"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_hub_check_says_a_peer_that_hangs_up_may_want_a_client_certificate(
    mtls_portal: ServerThread, pki: Path
) -> None:
    from hub.services.preflight import _reachable

    trusting = client_context(pki / "ca.pem")
    status, detail = _reachable(mtls_portal.url, 3.0, trusting, with_cert=False)
    assert status == "fail" and "require hub's client certificate (HUB_TLS_CLIENT_CERT)" in detail
    with_cert = client_context(pki / "ca.pem", pki / "hub.pem", pki / "hub.key")
    assert _reachable(mtls_portal.url, 3.0, with_cert) == ("ok", f"{mtls_portal.url}: HTTP 404")
