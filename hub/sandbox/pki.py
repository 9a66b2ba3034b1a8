"""Sandbox trust services: a test PKI made fresh (new keys) each time it starts — a national root CA with a
licensed public CA for citizens, a government specialized root with its CA for officials — leaf certificates
for the cases a verifier must tell apart, and on loopback a CRL endpoint and an OCSP responder per CA and an
RFC 3161 time-stamping authority (POST /pki/tsa). Keys and certificates are built with `cryptography`; the
time-stamp tokens by pyHanko's test TSA (a CMS SignedData over a TSTInfo, signed with the TSA's key).

Leaves: citizen (RSA-2048, public CA), official (EC P-256, government CA), hub (RSA-2048, government CA, the
hub's own signing key), and the bad ones: expired, not yet valid, revoked (listed in the CRL and answered
"revoked" by OCSP), revoked_ocsp_only (only OCSP knows), wrong_usage (no digitalSignature/nonRepudiation),
weak_rsa (RSA-1024), untrusted (a self-made CA nobody configured); and tsa (RSA-2048, government CA, extended
key usage timeStamping only, critical).

Also the citizens' identity provider as hub sees it (VNeID / the national portal's single sign-on, an OpenID
Connect provider): its discovery document and signing keys under /idp, an EC P-256 key made fresh each start,
and POST /_sandbox/idp/token, which issues a citizen's ID token at once — in place of the provider's login pages,
which are not hub's to drive."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from hub.domain.privacy import same_text
from hub.sandbox.common import PeerState, add_control_routes

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Issued:
    name: str
    key: Key
    cert: x509.Certificate
    issuer: str | None  # name of the issuing CA (None for a root)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass
class TestPki:
    """The whole hierarchy; `base_url` is where the CRL and OCSP endpoints are served (put in the certificates)."""

    base_url: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    issued: dict[str, Issued] = field(default_factory=dict)
    revoked: dict[str, dict[int, datetime]] = field(default_factory=dict)  # CA -> serial -> revocation time
    ocsp_only_revoked: dict[str, dict[int, datetime]] = field(default_factory=dict)
    certified: dict[str, dict[int, x509.Certificate]] = field(default_factory=dict)  # CA -> serial -> what it issued

    def __post_init__(self) -> None:
        n = self.now
        self._ca("national_root", "Root CA Quốc gia (sandbox)", "Bộ Khoa học và Công nghệ (sandbox)", None)
        self._ca("public_ca", "CA công cộng (sandbox)", "Nhà cung cấp dịch vụ chứng thực (sandbox)", "national_root")
        self._ca("gov_root", "Root CA chuyên dùng Chính phủ (sandbox)", "Ban Cơ yếu Chính phủ (sandbox)", None)
        self._ca("gov_ca", "CA chuyên dùng Chính phủ (sandbox)", "Ban Cơ yếu Chính phủ (sandbox)", "gov_root")
        self._ca("untrusted_root", "Self-made CA (sandbox)", "Nobody (sandbox)", None)
        self._leaf("citizen", "Nguyễn Văn An", "public_ca", _rsa())
        self._leaf(
            "official", "Trần Thị Bình - UBND Phường Bến Thành", "gov_ca", ec.generate_private_key(ec.SECP256R1())
        )
        self._leaf("hub", "hub — Trung tâm tích hợp dữ liệu (sandbox)", "gov_ca", _rsa())
        # the agency that receives documents hub sends, and signs its status notices about them
        self._leaf("receiver", "Công an phường Bến Nghé (sandbox)", "gov_ca", ec.generate_private_key(ec.SECP256R1()))
        self._leaf("tsa", "Dịch vụ cấp dấu thời gian (sandbox)", "gov_ca", _rsa(), usage="timestamping")
        self._leaf("expired", "Lê Văn Hết Hạn", "public_ca", _rsa(), not_before=n - timedelta(days=400),
                   not_after=n - timedelta(days=30))  # fmt: skip
        self._leaf("not_yet_valid", "Phạm Văn Chưa", "public_ca", _rsa(), not_before=n + timedelta(days=30),
                   not_after=n + timedelta(days=400))  # fmt: skip
        self._leaf("revoked", "Hoàng Văn Thu Hồi", "public_ca", _rsa())
        self._leaf("revoked_ocsp_only", "Đỗ Thị Thu Hồi", "public_ca", _rsa())
        self._leaf("wrong_usage", "Vũ Văn Mã Hóa", "public_ca", _rsa(), usage="encipherment")
        self._leaf("weak_rsa", "Bùi Văn Yếu", "public_ca", _rsa(1024))
        self._leaf("untrusted", "Ngô Văn Lạ", "untrusted_root", _rsa())
        self.revoked = {"public_ca": {self.issued["revoked"].cert.serial_number: n - timedelta(days=1)}}
        ocsp_only = self.issued["revoked_ocsp_only"].cert.serial_number
        self.ocsp_only_revoked = {"public_ca": {ocsp_only: n - timedelta(hours=1)}}

    # -- issuing ---------------------------------------------------------------------------------------------

    def _ca(self, name: str, cn: str, org: str, issuer: str | None) -> None:
        key = _rsa(3072 if issuer is None else 2048)
        subject = _name(cn, org)
        parent = self.issued[issuer] if issuer else None
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(parent.cert.subject if parent else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(days=3650))
            .not_valid_after(self.now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if parent is not None:
            builder = self._pointers(builder, issuer or "", parent)
        signer: CertificateIssuerPrivateKeyTypes = parent.key if parent else key
        self.issued[name] = Issued(name, key, builder.sign(signer, hashes.SHA256()), issuer)

    def _pointers(self, builder: x509.CertificateBuilder, issuer: str, parent: Issued) -> x509.CertificateBuilder:
        return (
            builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(f"{self.base_url}/pki/crl/{issuer}.crl")],
                            None,
                            None,
                            None,
                        )
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(f"{self.base_url}/pki/ocsp/{issuer}"),
                        )
                    ]
                ),
                critical=False,
            )
        )

    def _leaf(
        self,
        name: str,
        cn: str,
        issuer: str,
        key: Key,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        usage: str = "signature",
    ) -> None:
        cert = self.certify(cn, issuer, key.public_key(), not_before=not_before, not_after=not_after, usage=usage)
        self.issued[name] = Issued(name, key, cert, issuer)

    def certify(
        self,
        cn: str,
        issuer: str,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        usage: str = "signature",
    ) -> x509.Certificate:
        """A certificate from CA `issuer` for a public key — also one whose private key this PKI never sees (a key
        made on a token, as an agency's CA is asked for with a request)."""
        parent = self.issued[issuer]
        signing = usage in ("signature", "timestamping")
        purposes = (
            [ExtendedKeyUsageOID.TIME_STAMPING]
            if usage == "timestamping"
            else [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, "Công dân" if issuer == "public_ca" else "Cơ quan nhà nước"))
            .issuer_name(parent.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - timedelta(days=1))
            .not_valid_after(not_after or self.now + timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(signing, signing, not signing, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(purposes), critical=usage == "timestamping")  # RFC 3161 2.3
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        cert = self._pointers(builder, issuer, parent).sign(parent.key, hashes.SHA256())
        self.certified.setdefault(issuer, {})[cert.serial_number] = cert  # its OCSP responder answers for it
        return cert

    # -- what the endpoints answer ---------------------------------------------------------------------------

    def crl(self, ca: str) -> bytes:
        issuer = self.issued[ca]
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(now - timedelta(minutes=1))
            .next_update(now + timedelta(hours=12))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
            .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        )
        for serial, when in self.revoked.get(ca, {}).items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def ocsp(self, ca: str, request_der: bytes) -> bytes:
        from cryptography.x509 import ocsp

        issuer = self.issued[ca]
        try:
            req = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
                serialization.Encoding.DER
            )
        cert = self.certified.get(ca, {}).get(req.serial_number) or next(
            (i.cert for i in self.issued.values() if i.issuer == ca and i.cert.serial_number == req.serial_number), None
        )
        if cert is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
                serialization.Encoding.DER
            )
        revoked_at = {**self.revoked.get(ca, {}), **self.ocsp_only_revoked.get(ca, {})}.get(req.serial_number)
        now = datetime.now(UTC)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert,
            issuer=issuer.cert,
            # the CertID hash the client chose (SHA-1 is what RFC 6960 clients send; it only names the certificate)
            algorithm=hashes.SHA1() if isinstance(req.hash_algorithm, hashes.SHA1) else hashes.SHA256(),  # noqa: S303
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD,
            this_update=now - timedelta(minutes=1),
            next_update=now + timedelta(hours=1),
            revocation_time=revoked_at,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked_at else None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
        nonce = next((e.value for e in req.extensions if isinstance(e.value, x509.OCSPNonce)), None)
        if nonce is not None:
            builder = builder.add_extension(nonce, critical=False)
        return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def timestamp(self, request_der: bytes) -> bytes:
        """An RFC 3161 TimeStampResp for a TimeStampReq: granted with a token, or rejected (badRequest)."""
        from asn1crypto import keys, tsp
        from asn1crypto import x509 as asn1_x509
        from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

        try:
            req = tsp.TimeStampReq.load(request_der)
            req.native  # noqa: B018 - parse it all now: a malformed request is refused, not half-read
        except (ValueError, TypeError):
            from asn1crypto import core

            class Refusal(core.Sequence):  # type: ignore[misc]
                """TimeStampResp without its (absent) token, which asn1crypto's TimeStampResp requires."""

                _fields: ClassVar[list[tuple[str, Any]]] = [("status", tsp.PKIStatusInfo)]

            refused = tsp.PKIStatusInfo({"status": "rejection", "fail_info": tsp.PKIFailureInfo({"bad_request"})})
            return bytes(Refusal({"status": refused}).dump())
        tsa, ca = self.issued["tsa"], self.issued["gov_ca"]
        stamper = DummyTimeStamper(
            tsa_cert=asn1_x509.Certificate.load(tsa.cert.public_bytes(serialization.Encoding.DER)),
            tsa_key=keys.PrivateKeyInfo.load(
                tsa.key.private_bytes(
                    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            ),
            certs_to_embed=[asn1_x509.Certificate.load(ca.cert.public_bytes(serialization.Encoding.DER))],  # type: ignore[arg-type]
            fixed_dt=datetime.now(UTC),
        )
        return bytes(stamper.request_tsa_response(req).dump())

    def signer(self, name: str) -> Any:
        """A `FileSigner` with the key and certificate of `name` (and its CA's certificate, under a root)."""
        from hub.signing.sign import FileSigner

        item = self.issued[name]
        issuer = self.issued[item.issuer or name]
        return FileSigner(item.key, item.cert, [issuer.cert] if issuer.issuer else [])

    def write(self, directory: Path) -> Path:
        """Keys and certificates as PEM files (for `hub sign` and xmlsec1), plus trust-anchor bundles."""
        directory.mkdir(parents=True, exist_ok=True)
        for item in self.issued.values():
            (directory / f"{item.name}.pem").write_bytes(item.cert_pem())
            key = directory / f"{item.name}.key"
            key.touch(mode=0o600)
            key.write_bytes(item.key_pem())
            if item.issuer is not None and self.issued[item.issuer].issuer is not None:
                chain = item.cert_pem() + self.issued[item.issuer].cert_pem()
                (directory / f"{item.name}-chain.pem").write_bytes(chain)
        return directory


@dataclass
class PkiState(PeerState):
    pki: TestPki | None = None
    idp_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    oauth_clients: dict[str, str] = field(default_factory=dict)  # client_id -> client_secret (client credentials)
    lock_: threading.Lock = field(default_factory=threading.Lock)
    crl_requests: int = 0
    ocsp_requests: int = 0
    tsa_requests: int = 0


def create_app(state: PkiState | None = None) -> FastAPI:
    """The CRL and OCSP endpoints. The PKI is attached to the state after the server knows its URL."""
    st = state or PkiState()
    app = FastAPIOffline(
        redoc_url=None, title="Sandbox: trust services (CRL, OCSP, time-stamping)", docs_url="/_sandbox/docs"
    )
    app.state.peer = st
    add_control_routes(app, st)

    def pki() -> TestPki:
        if st.pki is None:
            raise RuntimeError("the sandbox PKI is not set up yet")
        return st.pki

    def unavailable() -> Response | None:
        import time

        if st.faults.outage_until > time.time():
            return Response(b"down", status_code=503)
        return None

    @app.get("/pki/crl/{ca}.crl")
    def crl(ca: str) -> Response:
        down = unavailable()
        if down is not None:
            return down
        if ca not in pki().issued:
            return Response(b"unknown CA", status_code=404)
        st.crl_requests += 1
        return Response(pki().crl(ca), media_type="application/pkix-crl")

    @app.post("/pki/ocsp/{ca}")
    async def ocsp(ca: str, request: Request) -> Response:
        down = unavailable()
        if down is not None:
            return down
        if ca not in pki().issued:
            return Response(b"unknown CA", status_code=404)
        st.ocsp_requests += 1
        body = await request.body()
        return Response(pki().ocsp(ca, body[:65536]), media_type="application/ocsp-response")

    @app.post("/pki/tsa")
    async def tsa(request: Request) -> Response:
        """RFC 3161 over HTTP: application/timestamp-query in, application/timestamp-reply out."""
        down = unavailable()
        if down is not None:
            return down
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/timestamp-query":
            return Response(b"expected application/timestamp-query", status_code=415)
        body = await request.body()
        st.tsa_requests += 1
        return Response(pki().timestamp(body[:65536]), media_type="application/timestamp-reply")

    @app.get("/pki/certs/{name}.pem")
    def cert(name: str) -> Response:
        item = pki().issued.get(name)
        if item is None:
            return Response(b"unknown certificate", status_code=404)
        return Response(item.cert_pem(), media_type="application/x-pem-file")

    idp_kid = uuid.uuid4().hex[:16]

    def issuer(request: Request) -> str:  # fixed, as a real provider's is, whatever host name it was asked by
        base = st.pki.base_url if st.pki is not None else str(request.base_url)
        return f"{base.rstrip('/')}/idp"

    @app.get("/idp/.well-known/openid-configuration")
    def idp_discovery(request: Request) -> dict[str, Any]:
        return {
            "issuer": issuer(request),
            "jwks_uri": f"{issuer(request)}/jwks.json",
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "claims_supported": ["sub", "name", "iss", "aud", "exp", "iat", "client_id", "scope", "jti"],
            "token_endpoint": f"{issuer(request)}/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    @app.post("/idp/token")
    async def oauth_token(request: Request) -> Response:
        """The client credentials grant (RFC 6749 §4.4): form-encoded `grant_type=client_credentials`, the client
        authenticated by HTTP Basic or `client_id`/`client_secret` in the form; optional `audience` (default
        "hub") and `scope`. The access token is a JWT (RFC 9068, typ at+jwt) valid 5 minutes."""
        import base64
        import binascii
        import json
        import time
        from urllib.parse import parse_qsl, unquote

        import jwt

        def error(status: int, code: str, description: str) -> Response:
            body = json.dumps({"error": code, "error_description": description}).encode()
            headers = {"WWW-Authenticate": 'Basic realm="sandbox"'} if status == 401 else None
            return Response(body, status_code=status, media_type="application/json", headers=headers)

        form = dict(parse_qsl((await request.body())[:8192].decode("utf-8", "replace")))
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                pair = base64.b64decode(basic[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return error(401, "invalid_client", "malformed Basic credentials")
            client_id, _, secret = (unquote(x) for x in pair.partition(":"))
        if form.get("grant_type") != "client_credentials":
            return error(400, "unsupported_grant_type", "only client_credentials is offered here")
        known = st.oauth_clients.get(client_id)
        if known is None or not same_text(known, secret):
            return error(401, "invalid_client", "unknown client or wrong secret")
        now = int(time.time())
        claims = {
            "iss": issuer(request),
            "aud": form.get("audience", "hub"),
            "sub": client_id,
            "client_id": client_id,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        if form.get("scope"):  # the scopes asked for (RFC 9068: no claim when none)
            claims["scope"] = form["scope"]
        token = jwt.encode(claims, st.idp_key, algorithm="ES256", headers={"kid": idp_kid, "typ": "at+jwt"})
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": 300}
        return Response(
            json.dumps(payload).encode(), media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    @app.post("/_sandbox/idp/clients")
    async def register_client(request: Request) -> dict[str, str]:
        """Register a client of the client credentials grant: {"client_id": ..., "client_secret": ...}."""
        body = await request.json()
        st.oauth_clients[str(body["client_id"])] = str(body["client_secret"])
        return {"client_id": str(body["client_id"])}

    @app.get("/idp/jwks.json")
    def idp_keys() -> dict[str, Any]:
        import json

        import jwt

        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(st.idp_key.public_key()))
        return {"keys": [{**jwk, "kid": idp_kid, "use": "sig", "alg": "ES256"}]}

    @app.post("/_sandbox/idp/token")
    async def idp_token(request: Request) -> Response:
        """A citizen's ID token: {"subject_id": 12 digits, "name"?, "audience"? (default "hub"), "ttl_seconds"?
        (default 600; negative for an expired one)}."""
        import json
        import time

        import jwt

        try:
            body = await request.json()
            subject = str(body["subject_id"])
        except (ValueError, KeyError, TypeError):
            return Response(b'{"error": "send {"subject_id": ...}"}', status_code=400, media_type="application/json")
        now = int(time.time())
        ttl = int(body.get("ttl_seconds", 600))
        claims = {
            "iss": issuer(request),
            "aud": str(body.get("audience", "hub")),
            "sub": subject,
            "name": str(body.get("name", "")),
            "iat": now if ttl > 0 else now + 2 * ttl,
            "exp": now + ttl,
            "auth_time": now,
        }
        token = jwt.encode(claims, st.idp_key, algorithm="ES256", headers={"kid": idp_kid})
        payload = {"id_token": token, "token_type": "Bearer", "expires_in": ttl}
        return Response(json.dumps(payload).encode(), media_type="application/json")

    @app.get("/_sandbox/pki/stats")
    def stats() -> dict[str, Any]:
        return {"crl_requests": st.crl_requests, "ocsp_requests": st.ocsp_requests, "tsa_requests": st.tsa_requests}

    return app
