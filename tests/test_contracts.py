"""contracts/: golden messages, hub's models and the sandboxes agree with the schemas; the adapter classifies
every kind of answer at its boundary."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from hub.adapters.errors import PeerAuthFailed, PeerError, PeerProtocolError, PeerRejected, PeerTimeout, PeerUnavailable
from hub.adapters.national_portal import NationalPortalClient, codes
from hub.sandbox import contracts
from hub.sandbox.common import ServerThread
from hub.services.schemas import DossierIn, ProgressIn
from tests.conftest import PORTAL_USER, Creds
from tests.helpers import dossier, step
from tests.pki_helpers import Trust

ROOT = contracts.contracts_dir()


def example(name: str) -> Any:
    return json.loads((ROOT / "national_portal" / "examples" / name).read_text(encoding="utf-8"))


def test_golden_messages_satisfy_the_schemas() -> None:
    for name in ("DongBoHoSoMC.request.json", "CapNhatTienDoHoSoMC.request.json"):
        assert contracts.errors("national_portal/service.request.schema.json", example(name)) == []
    assert contracts.errors("national_portal/dossier.schema.json", example("dossier.json")) == []
    assert contracts.errors("national_portal/progress.schema.json", example("progress.json")) == []
    assert contracts.errors("national_portal/auth.request.schema.json", example("auth.request.json")) == []
    for name in ("reply.ok.json", "reply.invalid_transition.json"):
        assert contracts.errors("national_portal/reply.schema.json", example(name)) == []


def test_a_pattern_ends_where_the_string_ends() -> None:
    """JSON Schema's `$` is the end of the string (ECMA-262); Python's also matches before a final newline. The
    sandboxes judge messages as the contract means: a code with a line end after it is not that code."""
    good = example("progress.json")
    assert contracts.errors("national_portal/progress.schema.json", good) == []
    for field in ("MaHoSo", "ThoiDiemXuLy"):
        found = contracts.errors("national_portal/progress.schema.json", {**good, field: good[field] + "\n"})
        assert len(found) == 1 and found[0].startswith(f"{field}: "), found
    # the same through a $ref into another contract: a DongBoHoSoMC whose dossier code ends in a line end
    message = example("DongBoHoSoMC.request.json")
    message["data"][0]["MaHoSo"] += "\n"
    found = contracts.errors("national_portal/service.request.schema.json", message)
    assert len(found) == 1 and found[0].startswith("data/0/MaHoSo: "), found


def test_hub_models_accept_golden_messages_and_emit_contract_shapes() -> None:
    d = DossierIn.model_validate(example("dossier.json")).national()
    assert d == example("dossier.json")
    assert contracts.errors("national_portal/dossier.schema.json", d) == []
    p = ProgressIn.model_validate(example("progress.json")).national()
    assert contracts.errors("national_portal/progress.schema.json", p) == []
    generated = DossierIn.model_validate(dossier(1)).national()
    assert contracts.errors("national_portal/dossier.schema.json", generated) == []


def test_error_code_table_matches_contract() -> None:
    published = contracts.load_json("national_portal/error_codes.json")["codes"]
    assert {int(k) for k in published} == {codes.OK, *codes.MEANING}
    for code, (_, retryable) in codes.MEANING.items():
        assert published[str(code)]["retryable"] is retryable


def _client(url: str, password: str, **kw: Any) -> NationalPortalClient:
    return NationalPortalClient(url, username=PORTAL_USER, password=password, dstcode="000.00.17.H56", **kw)


def test_sandbox_answers_with_the_portal_error_codes(
    portal: httpx.Client, portal_server: ServerThread, creds: Creds
) -> None:
    bad_login = portal.post(
        "/api/auth", json={"username": PORTAL_USER, "password": "wrong"}, headers={"dstcode": "000.00.17.H56"}
    ).json()
    assert bad_login["error_code"] == 1
    accented = portal.post(
        "/api/auth", json={"username": PORTAL_USER, "password": "mật khẩu"}, headers={"dstcode": "000.00.17.H56"}
    )
    assert accented.status_code == 200 and accented.json()["error_code"] == 1  # a wrong password, not a 500
    no_session = portal.post(
        "/api/service", json={"session": "nope", "madonvi": "000.00.17.H56", "service": "TraCuuHoSo", "MaHoSo": "x"}
    ).json()
    assert no_session["error_code"] == 2
    # a body nested deeper than the JSON parser recurses is invalid data like any other, never a 500
    deep = b"[" * 5000 + b"]" * 5000
    for path in ("/api/auth", "/api/service"):
        r = portal.post(path, content=deep, headers={"Content-Type": "application/json", "dstcode": "000.00.17.H56"})
        assert r.status_code == 200 and r.json()["error_code"] == 3, (path, r.text)
    # and so is junk sent to the sandbox's control API: 400, not 500
    r = portal.post("/_sandbox/faults", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    assert portal.post("/_sandbox/faults", json={"latency_ms": "slow"}).status_code == 400
    client = _client(portal_server.url, creds.portal_password)
    with pytest.raises(PeerRejected) as invalid:
        client.call(
            "DongBoHoSoMC", {"isUpdating": False, "data": [{"MaHoSo": "bad"}]}, idempotency_key="a", correlation_id="t"
        )
    assert invalid.value.code == "portal_invalid_data" and invalid.value.reply["error_code"] == 3
    d = dossier(1)
    client.call("DongBoHoSoMC", {"isUpdating": False, "data": [d]}, idempotency_key="b", correlation_id="t")
    with pytest.raises(PeerRejected) as transition:
        client.call("CapNhatTienDoHoSoMC", {"data": [step(d["MaHoSo"], 10)]}, idempotency_key="c", correlation_id="t")
    assert transition.value.code == "portal_invalid_transition"
    with pytest.raises(PeerRejected) as reused:
        client.call("CapNhatTienDoHoSoMC", {"data": [step(d["MaHoSo"], 4)]}, idempotency_key="b", correlation_id="t")
    assert reused.value.code == "portal_idempotency_key_reused"
    # a dossier sent as new that the portal has is 07, one sent as an update that it has not is 05: the adapter
    # sends it once more the other way, under a key of its own (ADR 0041)
    client.call("DongBoHoSoMC", {"isUpdating": False, "data": [d]}, idempotency_key="d", correlation_id="t")
    unseen = dossier(2, status=4)  # a dossier in progress the portal has not seen: taken at its status
    client.call("DongBoHoSoMC", {"isUpdating": True, "data": [unseen]}, idempotency_key="e", correlation_id="t")
    tried = [
        (r["idempotency_key"], r["body"]["isUpdating"], r["reply"]["error_code"])
        for r in portal.get("/_sandbox/received", params={"operation": "DongBoHoSoMC"}).json()["items"]
        if r["idempotency_key"][:1] in ("d", "e")
    ]
    assert tried == [("d", False, 7), ("d:isupdating=true", True, 0), ("e", True, 5), ("e:isupdating=false", False, 0)]
    seen_unseen = client.look_up(unseen["MaHoSo"], correlation_id="t")
    assert seen_unseen is not None and seen_unseen["TrangThaiHoSo"] == 4
    with pytest.raises(PeerRejected) as refused:  # turned round once: what the portal says to that stands
        client.call(
            "DongBoHoSoMC", {"isUpdating": False, "data": [{**d, "TrangThaiHoSo": 10}]}, idempotency_key="f",
            correlation_id="t",
        )  # fmt: skip
    assert refused.value.code == "portal_invalid_transition"
    # a step applied, its answer lost, sent again to a portal that keeps no idempotency keys (here: a key the portal
    # has not seen): it refuses to move the dossier to the status it holds — the adapter asks, and it is done
    stopped = dossier(3)
    client.call("DongBoHoSoMC", {"isUpdating": False, "data": [stopped]}, idempotency_key="g", correlation_id="t")
    for attempt in ("h", "h-again"):
        closed = client.call(
            "CapNhatTienDoHoSoMC", {"data": [step(stopped["MaHoSo"], 8)]}, idempotency_key=attempt, correlation_id="t"
        )
    assert closed["error_code"] == 0 and closed["already_applied"] is True
    history = portal.get(f"/_sandbox/dossiers/{stopped['MaHoSo']}").json()["history"]
    assert [h["status"] for h in history] == [2, 8]  # applied once
    seen = client.look_up(d["MaHoSo"], correlation_id="t")
    assert seen is not None and seen["TrangThaiHoSo"] == 2
    assert client.look_up("000.00.17.H56-241015-9999", correlation_id="t") is None
    # everything the adapter sent that the portal accepted satisfies the contract
    for item in portal.get("/_sandbox/received", params={"outcome": "applied"}).json()["items"]:
        assert contracts.errors("national_portal/service.request.schema.json", item["body"]) == []
    client.close()


def test_wrong_credentials_are_retryable_auth_failures(portal_server: ServerThread, portal: httpx.Client) -> None:
    client = _client(portal_server.url, "not-the-password")
    with pytest.raises(PeerAuthFailed) as exc:
        client.call("TraCuuHoSo", {"MaHoSo": "x"}, idempotency_key=None, correlation_id="t")
    assert exc.value.retryable
    client.close()


@pytest.fixture
def mock_portal() -> Iterator[Callable[..., NationalPortalClient]]:
    """A portal on loopback answering each service call with what the test's handler returns (an
    `httpx.Response` as a description of the answer; an async handler may take its time): the adapter is
    exercised over real HTTP, as in production."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    handlers: list[Any] = []

    async def route(request: Request) -> Response:
        if request.url.path == "/api/auth":
            return Response(b'{"error_code":0,"message":"ok","session":"s"}', media_type="application/json")
        answer = handlers[-1](request)
        if inspect.isawaitable(answer):
            answer = await answer
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))

    server = ServerThread(Starlette(routes=[Route("/{path:path}", route, methods=["POST"])])).start()
    made: list[NationalPortalClient] = []

    def make(handler: Any, **kw: Any) -> NationalPortalClient:
        handlers.append(handler)
        made.append(_client(server.url, "pw", **kw))
        return made[-1]

    yield make
    for client in made:
        client.close()
    server.stop()


@pytest.mark.parametrize(
    ("handler", "error", "code", "retryable"),
    [
        (lambda r: httpx.Response(503, text="busy"), PeerUnavailable, "peer_http_unavailable", True),
        (lambda r: httpx.Response(429, text="slow down"), PeerUnavailable, "peer_http_unavailable", True),
        (lambda r: httpx.Response(500, text="oops"), PeerError, "peer_http_5xx", True),
        (lambda r: httpx.Response(404, text="no such path"), PeerRejected, "peer_http_4xx", False),
        (
            lambda r: httpx.Response(200, text="<html>proxy error</html>"),
            PeerProtocolError,
            "peer_malformed_reply",
            True,
        ),
        (lambda r: httpx.Response(200, json={"message": "no code"}), PeerProtocolError, "peer_malformed_reply", True),
        (  # a reply far larger than any answer: refused before it is parsed
            lambda r: httpx.Response(200, content=b'{"error_code": 0, "pad": "' + b"x" * (5 << 20) + b'"}'),
            PeerProtocolError,
            "peer_reply_too_large",
            True,
        ),
        (
            lambda r: httpx.Response(200, json={"error_code": 99, "message": "x"}),
            PeerError,
            "portal_internal_error",
            True,
        ),
        (
            lambda r: httpx.Response(200, json={"error_code": 3, "message": "x"}),
            PeerRejected,
            "portal_invalid_data",
            False,
        ),
        (
            lambda r: httpx.Response(200, json={"error_code": 2, "message": "x"}),
            PeerError,
            "portal_session_invalid",
            True,
        ),
    ],
)
def test_answers_are_classified_at_the_boundary(
    mock_portal: Callable[..., NationalPortalClient], handler: Any, error: type, code: str, retryable: bool
) -> None:
    client = mock_portal(handler)
    with pytest.raises(error) as exc:
        client.call("TraCuuHoSo", {"MaHoSo": "x"}, idempotency_key=None, correlation_id="t")
    assert type(exc.value) is error
    assert exc.value.code == code and exc.value.retryable is retryable


def test_transport_failures_are_retryable(mock_portal: Callable[..., NationalPortalClient]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}", "pw", connect_timeout=0.5)
    with pytest.raises(PeerUnavailable):
        client.call("TraCuuHoSo", {"MaHoSo": "x"}, idempotency_key=None, correlation_id="t")

    async def slow(request: Any) -> httpx.Response:
        await asyncio.sleep(2)
        return httpx.Response(200, json={"error_code": 0, "message": "late"})

    late = mock_portal(slow, read_timeout=0.3)
    with pytest.raises(PeerTimeout) as exc:
        late.call("TraCuuHoSo", {"MaHoSo": "x"}, idempotency_key=None, correlation_id="t")
    assert exc.value.retryable


def test_every_exchange_is_reported_with_digests(mock_portal: Callable[..., NationalPortalClient]) -> None:
    seen: list[Any] = []
    client = mock_portal(lambda r: httpx.Response(200, json={"error_code": 0, "message": "ok"}))
    client.call("TraCuuHoSo", {"MaHoSo": "x"}, idempotency_key="k", correlation_id="corr-1", on_exchange=seen.append)
    ops = [(r.operation, r.outcome, r.correlation_id) for r in seen]
    assert ops == [("auth", "ok", "corr-1"), ("TraCuuHoSo", "ok", "corr-1")]
    assert all(len(r.request_digest) == 64 and r.response_digest for r in seen)


def test_the_sandbox_identity_provider_issues_what_hub_requires(trust: Trust) -> None:
    """The sandbox IdP's discovery document points at its keys, and its ID tokens carry the claims the contract
    (contracts/citizen_identity) says hub requires, signed with a published key."""
    import jwt

    discovery = httpx.get(f"{trust.server.url}/idp/.well-known/openid-configuration").json()
    assert discovery["issuer"] == f"{trust.server.url}/idp"
    keys = jwt.PyJWKClient(discovery["jwks_uri"])
    token = httpx.post(f"{trust.server.url}/_sandbox/idp/token", json={"subject_id": "001099000001"}).json()["id_token"]
    signing = keys.get_signing_key_from_jwt(token)
    algorithms = discovery["id_token_signing_alg_values_supported"]
    claims = jwt.decode(token, signing.key, algorithms=algorithms, audience="hub")
    assert contracts.errors("citizen_identity/id_token.claims.schema.json", claims) == []
    assert claims["iss"] == discovery["issuer"]
