"""The request examples of the API documentation (/docs, /openapi.json) are what an integrator copies first: every
one of them, sent as written — in the story they tell, to a hub with its sandbox peers — is accepted, and the
dossier they walk ends where they say (fee paid online, document sent and recalled)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from hub.sandbox import document_exchange
from hub.sandbox.common import ServerThread
from tests.api_helpers import as_documented
from tests.conftest import PAY_PARTNER, PAY_SECRET, Creds, HubFactory
from tests.pki_helpers import Trust

EXCHANGE_KEY = secrets.token_urlsafe(16)

# (method, path, example name, who sends it) in the order of the story; every documented example is in it
STORY = [
    ("post", "/v1/dossiers", "birth_registration", "onestop"),
    ("post", "/v1/dossiers", "certified_extract", "onestop"),
    ("post", "/v1/dossiers/batch", "open_dossiers", "onestop"),
    ("post", "/v1/national/dossiers", "filed_online", "portal"),
    ("post", "/v1/progress/batch", "catching_up", "onestop"),
    ("post", "/v1/dossiers/{code}/progress", "processing", "onestop"),
    ("post", "/v1/dossiers/{code}/progress", "supplement_requested", "onestop"),
    ("post", "/v1/dossiers/{code}/progress", "processing_again", "onestop"),
    ("post", "/v1/dossiers/{code}/progress", "fee_requested", "onestop"),
    ("post", "/v1/payments", "extract_fee", "onestop"),
    ("post", "/v1/prefill", "birth_registration", "onestop"),
    ("post", "/v1/consents", "reuse_documents", "onestop"),
    ("post", "/v1/documents", "marriage_certificate", "onestop"),
    ("post", "/v1/citizens/data-usage", "inquiry", "portal"),
    ("post", "/v1/dossiers/{code}/edocs", "extract_to_police", "onestop"),
    ("post", "/v1/dossiers/{code}/edocs/{document_id}/recall", "sent_by_mistake", "onestop"),
]


@pytest.fixture(scope="module")
def exchange_server(trust: Trust) -> Iterator[ServerThread]:
    roots = [trust.pki.issued["national_root"].cert, trust.pki.issued["gov_root"].cert]
    server = ServerThread(document_exchange.create_app(roots, {EXCHANGE_KEY}, notary=trust.signer("receiver"))).start()
    yield server
    server.stop()


def documented(spec: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
    """(method, path, name) -> the example's value, for every request-body example the served schema has."""
    found = {}
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in content.get("examples", {}).items():
                found[(method, path, name)] = example["value"]
    return found


def path_example(spec: dict[str, Any], method: str, path: str, name: str) -> str:
    [param] = [p for p in spec["paths"][path][method]["parameters"] if p["name"] == name]
    value: str = param["schema"]["examples"][0]
    return value


def test_every_documented_request_example_is_accepted_as_written(
    hub_factory: HubFactory,
    creds: Creds,
    trust: Trust,
    population_server: ServerThread,
    pay_server: ServerThread,
    exchange_server: ServerThread,
    portal: httpx.Client,
) -> None:
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan",
        payment_dvc_url=pay_server.url,
        payment_dvc_partner=PAY_PARTNER,
        payment_dvc_secret=SecretStr(PAY_SECRET),
        signing_key=trust.dir / "official.key",
        signing_cert=trust.dir / "official-chain.pem",
        document_exchange_url=exchange_server.url,
        document_exchange_api_key=SecretStr(EXCHANGE_KEY),
    )
    spec = httpx.get(f"{hub.url}/openapi.json").json()
    examples = documented(spec)
    assert set(examples) == {(m, p, n) for m, p, n, _ in STORY}  # a new example joins the story, or this fails
    keys = {"onestop": creds.api_key, "portal": creds.portal_key}
    answers: dict[tuple[str, str], Any] = {}
    for method, path, name, who in STORY:
        body = examples[(method, path, name)]
        url = path
        if "{code}" in path:  # the step's own dossier, else the path's documented example
            url = url.replace("{code}", body.get("MaHoSo") or path_example(spec, method, path, "code"))
        if "{document_id}" in path:
            sent = answers[("/v1/dossiers/{code}/edocs", "extract_to_police")]
            url = url.replace("{document_id}", sent["document_id"])
        r = httpx.request(method, f"{hub.url}{url}", json=body, headers={"X-API-Key": keys[who]}, timeout=30)
        assert 200 <= r.status_code < 300, f"{method.upper()} {url} example {name!r}: {r.status_code} {r.text[:500]}"
        as_documented(spec, method, path, r)  # what a client generated from the document reads, field by field
        answers[(path, name)] = r.json()
    hub.wait_idle()
    # then what an integrator reads back, and the same requests again: each answer as documented too
    birth_code = answers[("/v1/dossiers", "birth_registration")]["MaHoSo"]
    reference = answers[("/v1/payments", "extract_fee")]["reference"]
    consent = answers[("/v1/consents", "reuse_documents")]["consent_ref"]
    document = examples[("post", "/v1/documents", "marriage_certificate")]
    reads = [
        ("get", "/v1/dossiers/{code}", f"/v1/dossiers/{birth_code}", None, 200),
        ("get", "/v1/dossiers", "/v1/dossiers?overdue=true", None, 200),
        ("get", "/v1/payments/{reference}", f"/v1/payments/{reference}", None, 200),
        ("post", "/v1/payments", "/v1/payments", examples[("post", "/v1/payments", "extract_fee")], 200),
        ("post", "/v1/documents", "/v1/documents", document, 200),
        ("post", "/v1/consents/{ref}/revoke", f"/v1/consents/{consent}/revoke", None, 200),
        ("get", "/v1/forms", "/v1/forms", None, 200),
        ("get", "/v1/forms/{procedure}", "/v1/forms/1.001193", None, 200),
        ("get", "/healthz", "/healthz", None, 200),
        ("get", "/readyz", "/readyz", None, 200),
    ]
    for method, path, url, body, status in reads:
        r = httpx.request(method, f"{hub.url}{url}", json=body, headers={"X-API-Key": creds.api_key}, timeout=30)
        assert r.status_code == status, f"{method.upper()} {url}: {r.status_code} {r.text[:500]}"
        as_documented(spec, method, path, r)
    birth = hub.http.get(f"/v1/dossiers/{answers[('/v1/dossiers', 'birth_registration')]['MaHoSo']}").json()
    assert [e["TrangThaiHoSo"] for e in birth["events"]] == [2, 4, 5, 4]
    [document] = birth["documents"]
    assert document["state"] == "delivered" and document["recall"] is not None
    payment = answers[("/v1/payments", "extract_fee")]
    assert payment["status"] == "pending" and payment["amount"] == 8000 and payment["pay_url"]
    assert answers[("/v1/dossiers/batch", "open_dossiers")]["accepted"] == 2
    assert answers[("/v1/progress/batch", "catching_up")]["accepted"] == 3
    form = answers[("/v1/prefill", "birth_registration")]
    assert {f["source"]["record"] for f in form["fields"] if f.get("source")} == {"subject", "spouse"}  # the mother too


def test_the_served_openapi_document_is_valid_openapi_3_1(hub_factory: HubFactory) -> None:
    """What a provincial team feeds its client generator (openapi-generator, NSwag…): a valid OpenAPI 3.1 document,
    its examples and problem schema included."""
    from openapi_spec_validator import validate

    hub = hub_factory(start_worker=False)
    spec = httpx.get(f"{hub.url}/openapi.json").json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_api_docs_can_be_turned_off_and_the_api_still_answers(hub_factory: HubFactory) -> None:
    """HUB_API_DOCS=false (a security review that wants no API description on the partners' network): /docs and
    /openapi.json are 404 problems, the API itself answers as before."""
    from tests.helpers import dossier

    hub = hub_factory(api_docs=False, start_worker=False)
    for path in ("/docs", "/openapi.json"):
        r = hub.http.get(path)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), path
    assert hub.http.post("/v1/dossiers", json=dossier(5)).status_code == 202
    # hub's address itself (a load balancer's check, someone trying the URL) answers without a link to the docs
    root = hub.http.get("/")
    assert root.status_code == 200 and root.json()["service"] == "hub" and "docs" not in root.json(), root.text
    assert hub.http.get(root.json()["problems"]).status_code == 200  # what its error codes mean stays published
