"""Client systems that authenticate with OAuth 2.0 access tokens (client credentials grant) from the authorization
server the province already runs, instead of an API key: the sandbox server issues them, hub verifies them against
its published keys and maps the client_id to a configured client system, whose agencies and roles apply."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from hub.sandbox import contracts
from hub.settings import ClientSystem
from tests.conftest import Creds, Hub, HubFactory
from tests.helpers import dossier, exchanges
from tests.pki_helpers import Trust

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])  # authentication does not depend on the database


def oauth_client(trust: Trust) -> tuple[str, str]:
    """A client registered at the sandbox authorization server: (client_id, client_secret)."""
    client_id, secret = f"motcua-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    httpx.post(
        f"{trust.server.url}/_sandbox/idp/clients", json={"client_id": client_id, "client_secret": secret}
    ).raise_for_status()
    return client_id, secret


def hub_for(hub_factory: HubFactory, trust: Trust, creds: Creds, client_id: str, **overrides: Any) -> Hub:
    clients = [
        ClientSystem(name="onestop-hcm", api_key=SecretStr(creds.api_key), agencies=["000.00.17.*"]),
        ClientSystem(name="motcua-oauth", oauth_client_id=client_id, agencies=["000.00.17.*"]),  # no API key
    ]
    return hub_factory(clients=clients, oauth_issuer=f"{trust.server.url}/idp", **overrides)


@dataclass
class Motcua:
    """A one-stop system registered at the sandbox authorization server, and a hub that knows it by client_id."""

    hub: Hub
    client_id: str
    secret: str


@pytest.fixture
def motcua(hub_factory: HubFactory, trust: Trust, creds: Creds) -> Motcua:
    client_id, secret = oauth_client(trust)
    return Motcua(hub_for(hub_factory, trust, creds, client_id), client_id, secret)


def grant(trust: Trust, client_id: str, secret: str, *, basic: bool = True, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", **form}
    if basic:
        return httpx.post(f"{trust.server.url}/idp/token", data=data, auth=(client_id, secret))
    return httpx.post(f"{trust.server.url}/idp/token", data={**data, "client_id": client_id, "client_secret": secret})


def with_token(hub: Hub, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """As the client system calls hub: its access token, no API key."""
    return httpx.request(method, f"{hub.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)


@SQLITE
def test_a_client_with_an_access_token_files_for_its_agencies_only(motcua: Motcua, trust: Trust) -> None:
    hub, client_id, secret = motcua.hub, motcua.client_id, motcua.secret
    for basic in (True, False):  # client_secret_basic and client_secret_post
        r = grant(trust, client_id, secret, basic=basic)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
        assert contracts.errors("client_auth/token_response.schema.json", r.json()) == []
    token = r.json()["access_token"]
    d = dossier(31)
    filed = with_token(hub, token, "POST", "/v1/dossiers", json=d)
    assert filed.status_code == 202, filed.text
    # the authorization server's keys, fetched to check the first token, are in the exchange record
    assert exchanges(hub, "authorization_server") == [("jwks", filed.headers["x-correlation-id"], "ok", None, True)]
    shown = with_token(hub, token, "GET", f"/v1/dossiers/{d['MaHoSo']}").json()
    assert shown["events"][0]["client"] == "motcua-oauth"  # recorded as the client system the token maps to
    elsewhere = dossier(32, MaHoSo="000.00.12.H29-241015-0032")
    r = with_token(hub, token, "POST", "/v1/dossiers", json=elsewhere)
    assert r.status_code == 403 and r.json()["code"] == "agency_not_allowed", r.text
    # the API key client is unaffected, and an unknown API key is still just that
    assert hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").status_code == 200
    r = httpx.get(f"{hub.url}/v1/dossiers/{d['MaHoSo']}", headers={"Authorization": "Bearer not-a-key"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"


def test_the_sandbox_authorization_server_refuses_wrong_clients(trust: Trust) -> None:
    client_id, secret = oauth_client(trust)
    r = grant(trust, client_id, "wrong")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = grant(trust, "nobody", secret, basic=False)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = httpx.post(f"{trust.server.url}/idp/token", data={"grant_type": "password"}, auth=(client_id, secret))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    discovery = httpx.get(f"{trust.server.url}/idp/.well-known/openid-configuration").json()
    assert discovery["token_endpoint"] == f"{trust.server.url}/idp/token"
    token = grant(trust, client_id, secret).json()["access_token"]
    keys = jwt.PyJWKClient(discovery["jwks_uri"])
    claims = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["ES256"], audience="hub")
    assert contracts.errors("client_auth/access_token.claims.schema.json", claims) == []
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt" and claims["client_id"] == client_id


@SQLITE
def test_tokens_hub_must_not_take_are_401_invalid_token(motcua: Motcua, trust: Trust) -> None:
    hub, client_id, secret = motcua.hub, motcua.client_id, motcua.secret
    good = grant(trust, client_id, secret).json()["access_token"]
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    key = trust.state.idp_key  # the authorization server's own signing key: only the claims are wrong
    kid = {"kid": header["kid"]}
    now = int(time.time())
    public_jwk = json.dumps(httpx.get(f"{trust.server.url}/idp/jwks.json").json()["keys"][0]).encode()

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def hmac_signed(secret_: bytes) -> str:  # the algorithm-confusion attack
        signing_input = f"{part(json.dumps({'alg': 'HS256', **kid}).encode())}.{part(json.dumps(claims).encode())}"
        return f"{signing_input}.{part(hmac.new(secret_, signing_input.encode(), hashlib.sha256).digest())}"

    def signed(changes: dict[str, Any], *, signer: Any = key, headers: dict[str, Any] | None = None) -> str:
        body = {k: v for k, v in {**claims, **changes}.items() if v is not None}
        return jwt.encode(body, signer, algorithm="ES256", headers={**kid, "typ": "at+jwt", **(headers or {})})

    citizen = httpx.post(f"{trust.server.url}/_sandbox/idp/token", json={"subject_id": "001099000001"})
    cases = {
        "expired": signed({"iat": now - 900, "exp": now - 600}),
        "for another resource server": signed({"aud": "another-api"}),
        "from another issuer": signed({"iss": "https://evil.example/idp"}),
        "without a client_id": signed({"client_id": None}),
        "for a client hub does not know": signed({"client_id": "stranger"}),
        "signed with another key": signed({}, signer=ec.generate_private_key(ec.SECP256R1())),
        "not signed (alg none)": part(json.dumps({"alg": "none", **kid}).encode())
        + f".{part(json.dumps(claims).encode())}.",
        "HMAC keyed with the server's public key": hmac_signed(public_jwk),
        "a citizen's ID token": citizen.json()["id_token"],
        "of another type": signed({}, headers={"typ": "id+jwt"}),
    }
    for name, token in cases.items():
        r = with_token(hub, token, "GET", "/v1/dossiers?overdue=true")
        assert r.status_code == 401, (name, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), name
        assert r.json()["code"] in ("invalid_token", "invalid_api_key"), (name, r.json())
    assert with_token(hub, good, "GET", "/v1/dossiers?overdue=true").status_code == 200
    # and an access token is not a citizen's sign-in
    r = with_token(hub, good, "GET", "/v1/citizens/me/data-usage")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


@SQLITE
def test_an_unreachable_authorization_server_is_503_not_401(
    hub_factory: HubFactory, trust: Trust, creds: Creds
) -> None:
    client_id, secret = oauth_client(trust)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    hub = hub_for(hub_factory, trust, creds, client_id, oauth_jwks_url=f"http://127.0.0.1:{closed}/jwks.json")
    token = grant(trust, client_id, secret).json()["access_token"]
    r = with_token(hub, token, "GET", "/v1/dossiers?overdue=true")
    assert r.status_code == 503 and r.json()["code"] == "authorization_server_unavailable", r.text
    cid = r.headers["x-correlation-id"]
    assert exchanges(hub, "authorization_server") == [("jwks", cid, "retryable", "unreachable", False)]


@SQLITE
def test_an_authorization_server_whose_key_set_is_unusable_is_503_not_500(
    hub_factory: HubFactory, trust: Trust, creds: Creds
) -> None:
    """The key-set URL answers, but not with keys hub can use — a proxy's HTML error page, JSON too deep to parse,
    something that is not a JWK set, a set with no usable key, its real keys padded to megabytes (hub reads a
    key set up to 256 kB, not whatever a URL sends): no token of the server can be checked, which is the server's
    fault (503, retry later), not the client's token (401) and not hub's (500)."""
    from fastapi import FastAPI, Response

    from hub.sandbox.common import ServerThread

    answers = [
        b"<html><body>502 Bad Gateway</body></html>",
        b"[" * 3000 + b"]" * 3000,
        b"[]",
        b'{"keys": "none"}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "EC"}]}',
        httpx.get(f"{trust.server.url}/idp/jwks.json").content + b" " * 4_000_000,
    ]
    served: list[bytes] = []
    app = FastAPI()

    @app.get("/jwks.json")
    def keys() -> Response:
        return Response(served[-1], media_type="application/json")

    server = ServerThread(app).start()
    try:
        client_id, secret = oauth_client(trust)
        hub = hub_for(hub_factory, trust, creds, client_id, oauth_jwks_url=f"{server.url}/jwks.json")
        token = grant(trust, client_id, secret).json()["access_token"]
        for answer in answers:
            served.append(answer)
            r = with_token(hub, token, "GET", "/v1/dossiers?overdue=true")
            assert r.status_code == 503 and r.json()["code"] == "authorization_server_unavailable", (answer, r.text)
            assert exchanges(hub, "authorization_server")[-1][2:4] == ("retryable", "peer_malformed_reply")
    finally:
        server.stop()


@SQLITE
def test_a_remembered_token_is_taken_until_it_expires_and_not_after(motcua: Motcua, trust: Trust) -> None:
    """hub remembers tokens it verified (a client sends the same one for minutes), never past their expiry."""
    hub, client_id, secret = motcua.hub, motcua.client_id, motcua.secret
    good = grant(trust, client_id, secret).json()["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    now = int(time.time())
    # expired 27 s ago: still inside the 30 s allowed for clock skew, for about 3 s more
    short = jwt.encode({**claims, "exp": now - 27}, trust.state.idp_key, algorithm="ES256", headers={"kid": kid})
    for _ in range(3):
        assert with_token(hub, short, "GET", "/v1/dossiers?overdue=true").status_code == 200
    time.sleep(max(0.0, now + 4 - time.time()))
    r = with_token(hub, short, "GET", "/v1/dossiers?overdue=true")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token", r.text
    # a long-lived one is remembered once verified (the next request costs a hash, not a verification)
    tokens = hub.server.server.config.app.state.client_tokens
    assert tokens.remembered(good) is None
    assert with_token(hub, good, "GET", "/v1/dossiers?overdue=true").status_code == 200
    assert tokens.remembered(good).client_id == client_id and tokens.remembered(short) is None


@SQLITE
def test_a_token_naming_hubs_scopes_may_do_only_what_they_cover(
    hub_factory: HubFactory, trust: Trust, creds: Creds
) -> None:
    """The province's API gateway grants a system the scopes of the APIs it subscribed to: a token naming hub's
    scopes is held to them (403 insufficient_scope, RFC 6750's WWW-Authenticate); one naming none of hub's
    ("openid profile", as many servers add) acts with the client system's configured permissions — unless hub
    requires scopes."""
    client_id, secret = oauth_client(trust)
    hub = hub_for(hub_factory, trust, creds, client_id)
    d = dossier(41)
    prefill_only = grant(trust, client_id, secret, scope="openid hub:prefill").json()["access_token"]
    r = with_token(hub, prefill_only, "POST", "/v1/dossiers", json=d)
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope", r.text
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="hub:dossiers"'
    assert with_token(hub, prefill_only, "GET", "/v1/dossiers?overdue=true").status_code == 403
    assert hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").status_code == 404  # nothing was filed
    both = grant(trust, client_id, secret, scope="hub:prefill hub:dossiers").json()["access_token"]
    assert with_token(hub, both, "POST", "/v1/dossiers", json=d).status_code == 202
    unscoped = grant(trust, client_id, secret, scope="openid profile").json()["access_token"]
    assert with_token(hub, unscoped, "GET", f"/v1/dossiers/{d['MaHoSo']}").status_code == 200
    assert hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").status_code == 200  # API keys carry no scopes
    strict = hub_for(hub_factory, trust, creds, client_id, oauth_require_scopes=True)
    r = with_token(strict, unscoped, "GET", "/v1/dossiers?overdue=true")
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    assert with_token(strict, both, "GET", "/v1/dossiers?overdue=true").status_code == 200
    # the OpenAPI document says which scope each operation needs
    spec = hub.http.get("/openapi.json").json()
    assert {"Bearer": ["hub:dossiers"]} in spec["paths"]["/v1/dossiers"]["post"]["security"]
