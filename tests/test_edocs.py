"""Documents of a dossier for other agencies: hub signs them as the agency (edXML, XAdES time-stamped) and relays
them to the document exchange platform, which takes signed envelopes only."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from hub.adapters.document_exchange import DocumentExchangeClient
from hub.adapters.errors import PeerError
from hub.sandbox import document_exchange
from hub.sandbox.common import ServerThread
from hub.sync import jobs
from tests.api_helpers import as_documented, assert_problem
from tests.conftest import Hub, HubFactory
from tests.helpers import console_as, dossier, exchanges
from tests.pki_helpers import Token, Trust

EDOC_KEY = "edoc-sandbox-key-0123456789"
PDF = b"%PDF-1.4\n% Trich luc khai sinh\n" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def exchange_server(trust: Trust) -> Iterator[ServerThread]:
    roots = [trust.pki.issued["national_root"].cert, trust.pki.issued["gov_root"].cert]
    app = document_exchange.create_app(roots, {EDOC_KEY}, notary=trust.signer("receiver"))
    server = ServerThread(app).start()
    yield server
    server.stop()


@pytest.fixture
def exchange(exchange_server: ServerThread) -> Iterator[httpx.Client]:
    c = httpx.Client(base_url=exchange_server.url, timeout=10)
    c.post("/_sandbox/reset").raise_for_status()
    yield c
    c.close()


@pytest.fixture
def signing_hub(hub_factory: HubFactory, trust: Trust, exchange_server: ServerThread) -> Hub:
    return hub_factory(
        signing_key=trust.dir / "official.key",
        signing_cert=trust.dir / "official-chain.pem",
        signing_tsa_url=f"{trust.server.url}/pki/tsa",
        document_exchange_url=exchange_server.url,
        document_exchange_api_key=SecretStr(EDOC_KEY),
        signing_trust_anchors=[trust.dir / "national_root.pem", trust.dir / "gov_root.pem"],  # for the notices
        revocation_down_seconds=0.0,  # the tests' CA comes back from its outages at once: ask it every time
    )


def edoc(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sender_name": "UBND phường Bến Nghé",
        "to": [{"id": "000.00.17.H29", "name": "Công an phường Bến Nghé"}],
        "code_number": "57",
        "code_notation": "TLKS-UBND",
        "place": "Thành phố Hồ Chí Minh",
        "type": 3,
        "type_name": "Trích lục",
        "subject": "Trích lục khai sinh để đăng ký thường trú cho trẻ",
        "signer_name": "Trần Thị Bình",
        "signer_position": "Phó Chủ tịch",
        "attachments": [{"name": "trich-luc-khai-sinh.pdf", "data": base64.b64encode(PDF).decode()}],
    }
    body.update(changes)
    return body


def test_a_document_is_signed_time_stamped_and_delivered(signing_hub: Hub, exchange: httpx.Client) -> None:
    hub = signing_hub
    d = dossier(31, status=2)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc(), headers={"Idempotency-Key": "doc-1"})
    assert r.status_code == 202, r.text
    # the time-stamp asked of the TSA is in the exchange record, under the request's correlation id
    assert exchanges(hub, "tsa") == [("timestamp", r.headers["x-correlation-id"], "ok", None, True)]
    again = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc(), headers={"Idempotency-Key": "doc-1"})
    assert again.json() == r.json() and again.headers.get("Idempotent-Replayed") == "true"
    hub.wait_idle()
    [doc] = exchange.get("/_sandbox/documents").json()["items"]
    assert doc["header"]["document_id"] == r.json()["document_id"]
    assert doc["header"]["from"] == {"id": "000.00.17.H56", "name": "UBND phường Bến Nghé"}
    assert doc["signature_format"] == "XAdES-B-T" and doc["timestamp"] and "Trần Thị Bình" in doc["signer"]
    assert doc["header"]["attachments"][0]["name"] == "trich-luc-khai-sinh.pdf"
    from sqlalchemy import select

    from hub.store.models import OutboxMessage

    with hub.runtime.sessions() as s:
        [reply] = s.scalars(
            select(OutboxMessage.peer_reply).where(OutboxMessage.destination == "document_exchange")
        ).all()
    assert reply is not None and reply["status"] == "01"
    [listed] = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["documents"]
    assert listed["document_id"] == r.json()["document_id"] and listed["state"] == "delivered"
    assert listed["platform_status"] == "01" and listed["to"][0]["id"] == "000.00.17.H29"
    assert listed["code"] == "57/TLKS-UBND" and listed["subject"] == edoc()["subject"]  # as filed
    # delivered rows purged (`hub jobs purge`): the document is still the dossier's, as delivered, with its notices
    from hub.sync import jobs

    hub.runtime.poll_edoc_status()  # the receiver's "01 arrived"
    with hub.runtime.sessions.begin() as s:
        assert jobs.purge(s, older_than_days=-1)["purged"] >= 1  # the document's own row among them
    [kept] = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["documents"]
    assert kept["document_id"] == listed["document_id"] and kept["state"] == "delivered" and kept["outbox_id"] is None
    assert [x["status"] for x in kept["receivers"]] == ["01"] and kept["code"] == listed["code"]


def test_a_document_sent_again_without_a_key_goes_once(signing_hub: Hub, exchange: httpx.Client) -> None:
    """A one-stop system that re-sends the same document after a lost answer, with no Idempotency-Key: answered
    as the first (not signed, time-stamped or sent again); a different document, or the first one after it, goes."""
    hub = signing_hub
    d = dossier(32, status=2)
    code = d["MaHoSo"]
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    first = hub.http.post(f"/v1/dossiers/{code}/edocs", json=edoc())
    again = hub.http.post(f"/v1/dossiers/{code}/edocs", json=edoc())
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(exchanges(hub, "tsa")) == 1  # signed and time-stamped once
    other = hub.http.post(f"/v1/dossiers/{code}/edocs", json=edoc(code_number="58"))
    assert other.status_code == 202 and other.json()["document_id"] != first.json()["document_id"]
    hub.wait_idle()
    sent = exchange.get("/_sandbox/documents").json()["items"]
    assert [x["header"]["document_id"] for x in sent] == [first.json()["document_id"], other.json()["document_id"]]
    listed = hub.http.get(f"/v1/dossiers/{code}").json()["documents"]
    assert [x["document_id"] for x in listed] == [first.json()["document_id"], other.json()["document_id"]]


def test_a_scanned_document_of_a_few_megabytes_goes_and_the_limit_is_said(
    signing_hub: Hub, exchange: httpx.Client
) -> None:
    """A decision scanned to PDF is megabytes, past the 1 MiB limit of a JSON message: a dispatch with its files
    has HUB_MAX_DOCUMENT_BYTES (10 MiB) — delivered whole, signed — and past that, 413 saying the limit."""
    import hashlib
    import os

    hub = signing_hub
    d = dossier(34, status=2)
    hub.http.post("/v1/dossiers", json=d)
    scan = b"%PDF-1.7\n" + os.urandom(3 * 1024 * 1024)  # 4 MiB in base64
    body = edoc(attachments=[{"name": "quyet-dinh-scan.pdf", "data": base64.b64encode(scan).decode()}])
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=body, timeout=60)
    assert r.status_code == 202, r.text[:300]
    hub.wait_idle(timeout=60)
    [doc] = exchange.get("/_sandbox/documents").json()["items"]
    assert doc["signature_format"] == "XAdES-B-T"
    [attached] = doc["header"]["attachments"]
    assert attached["name"] == "quyet-dinh-scan.pdf" and attached["sha256"] == hashlib.sha256(scan).hexdigest()
    too_big = edoc(attachments=[{"name": "x.pdf", "data": base64.b64encode(os.urandom(8 * 1024 * 1024)).decode()}])
    problem = assert_problem(hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=too_big, timeout=60), 413,
                             "body_too_large")  # fmt: skip
    assert str(hub.settings.max_document_bytes) in problem["detail"]
    # a JSON message keeps the smaller limit
    huge = dossier(35, status=2, GhiChu="x" * (hub.settings.max_body_bytes + 1))
    assert_problem(hub.http.post("/v1/dossiers", json=huge), 413, "body_too_large")


def test_documents_wait_out_an_outage_and_go_in_order(signing_hub: Hub, exchange: httpx.Client) -> None:
    hub = signing_hub
    d = dossier(32, status=2)
    hub.http.post("/v1/dossiers", json=d)
    exchange.post("/_sandbox/faults", json={"outage_seconds": 1.5})
    for n in ("58", "59"):
        assert hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc(code_number=n)).status_code == 202
    hub.wait_idle(timeout=30)
    numbers = [x["header"]["code"] for x in exchange.get("/_sandbox/documents").json()["items"]]
    assert numbers == ["58/TLKS-UBND", "59/TLKS-UBND"]


def test_bad_requests_are_refused_and_nothing_is_queued(signing_hub: Hub, creds: Any) -> None:
    hub = signing_hub
    d = dossier(33, status=2)
    hub.http.post("/v1/dossiers", json=d)
    url = f"/v1/dossiers/{d['MaHoSo']}/edocs"
    assert_problem(hub.http.post("/v1/dossiers/000.00.17.H56-261201-9999/edocs", json=edoc()), 404, "dossier_not_found")
    bad_attachment = edoc(attachments=[{"name": "x.pdf", "data": "not base64!"}])
    assert hub.http.post(url, json=bad_attachment).status_code == 422
    assert_problem(hub.http.post(url, json=edoc(to=[{"id": "H29", "name": "x"}])), 422, "invalid_agency_code")
    other = httpx.post(f"{hub.url}{url}", json=edoc(), headers={"X-API-Key": creds.other_key})
    assert_problem(other, 403, "agency_not_allowed")
    with hub.runtime.sessions() as s:
        assert [j for j in jobs.list_jobs(s) if j["destination"] == "document_exchange"] == []


def test_no_key_to_sign_with_is_a_503(hub_factory: HubFactory) -> None:
    hub = hub_factory(start_worker=False)
    d = dossier(34, status=2)
    hub.http.post("/v1/dossiers", json=d)
    assert_problem(hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc()), 503, "signing_not_configured")


def send_one(hub: Hub, n: int, exchange: httpx.Client) -> dict[str, Any]:
    """File dossier `n`, send a document for it, and return what the exchange platform received (the only one)."""
    d = dossier(n, status=2)
    hub.http.post("/v1/dossiers", json=d)
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc())
    assert r.status_code == 202, r.text
    hub.wait_idle()
    [doc] = exchange.get("/_sandbox/documents").json()["items"]
    received: dict[str, Any] = doc
    return received


def test_with_long_term_signing_what_goes_carries_its_validation_data(
    hub_factory: HubFactory, trust: Trust, exchange_server: ServerThread, exchange: httpx.Client
) -> None:
    """HUB_SIGNING_LONG_TERM: the envelope is XAdES-B-LT — the receiving archive can validate it without the CA."""
    hub = hub_factory(
        signing_key=trust.dir / "official.key",
        signing_cert=trust.dir / "official-chain.pem",
        signing_tsa_url=f"{trust.server.url}/pki/tsa",
        signing_long_term=True,
        signing_trust_anchors=[trust.dir / "gov_root.pem"],  # its own signature is validated to gather the evidence
        document_exchange_url=exchange_server.url,
        document_exchange_api_key=SecretStr(EDOC_KEY),
    )
    doc = send_one(hub, 38, exchange)
    assert doc["signature_format"] == "XAdES-B-LT" and "Trần Thị Bình" in doc["signer"]


def test_an_agency_key_on_a_token_signs_what_goes_and_a_refused_pin_is_a_503(
    hub_factory: HubFactory, trust: Trust, token: Token, exchange_server: ServerThread, exchange: httpx.Client
) -> None:
    """The agency's key in an HSM or on a USB token (PKCS#11): the envelope the platform receives is signed by
    the token's key, with the certificate read from the token; with a PIN the token refuses, nothing is queued and
    the answer says which (503 token_pin_refused)."""
    from hub.sandbox.token import SOFTHSM

    common = {
        "signing_pkcs11_module": SOFTHSM,
        "signing_pkcs11_token": token.label,
        "signing_tsa_url": f"{trust.server.url}/pki/tsa",
        "document_exchange_url": exchange_server.url,
        "document_exchange_api_key": SecretStr(EDOC_KEY),
    }
    hub = hub_factory(**common, signing_pkcs11_key="hub-rsa", signing_pkcs11_pin=SecretStr(token.pin))
    doc = send_one(hub, 36, exchange)
    assert doc["signature_format"] == "XAdES-B-T" and "khóa trên token" in doc["signer"]
    # the metrics say the key signs and how long its certificate has left (~730 days here)
    metrics = hub.http.get("/metrics").text
    assert "hub_signing_key_usable 1.0" in metrics
    [left] = re.findall(r'hub_signing_certificate_expiry_seconds\{subject="[^"]*token[^"]*"\} (\S+)', metrics)
    assert 728 * 86400 < float(left) < 730 * 86400
    common["signing_pkcs11_token"] = token.spare  # (this process is logged in to the first token)
    refused = hub_factory(**common, signing_pkcs11_key="hub-rsa", signing_pkcs11_pin=SecretStr("x" + token.pin))
    d = dossier(37, status=2)
    refused.http.post("/v1/dossiers", json=d)
    assert_problem(refused.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc()), 503, "token_pin_refused")
    assert "hub_signing_key_usable 0.0" in refused.http.get("/metrics").text  # HubSigningKeyUnusable
    overview = console_as(refused, "tran.van.an", "viewer").get("/ops").text  # and the console's first page says it
    assert 'id="signing-unusable"' in overview and "token_pin_refused" not in overview and "PIN" in overview
    with refused.runtime.sessions() as s:
        assert [j for j in jobs.list_jobs(s, dossier=d["MaHoSo"]) if j["destination"] == "document_exchange"] == []


def test_the_platform_takes_signed_envelopes_only(trust: Trust, exchange: httpx.Client) -> None:
    from datetime import UTC, date, datetime

    from hub.signing import edxml

    header = edxml.Header(
        sender=edxml.Organ("000.00.17.H56", "UBND"), receivers=[edxml.Organ("000.00.17.H29", "Công an")],
        code_number="1", code_notation="CV", place="HCM", promulgation_date=date(2026, 12, 1), type=2,
        type_name="Công văn", subject="Thử",
    )  # fmt: skip
    unsigned = edxml.build(header, [], sent_at=datetime.now(UTC))
    signed = edxml.sign(header, [], trust.signer("official"), sent_at=datetime.now(UTC))
    forged = signed.replace(b"<edXML:Subject>Th", b"<edXML:Subject>Gi")
    untrusted = edxml.sign(header, [], trust.signer("untrusted"), sent_at=datetime.now(UTC))

    def send(body: bytes, key: str = EDOC_KEY) -> dict[str, Any]:
        reply: dict[str, Any] = exchange.post(
            "/api/edoc/send", content=body, headers={"X-API-Key": key, "Content-Type": "application/xml"}
        ).json()
        return reply

    assert send(unsigned)["error_code"] == 1
    assert send(forged)["error_code"] == 2 and "HASH_FAILURE" in send(forged)["message"]
    assert send(untrusted)["error_code"] == 2
    assert send(b"<not xml")["error_code"] == 3
    assert send(signed, key="wrong")["error_code"] == 5
    assert send(signed)["error_code"] == 0
    # the adapter: a refusal is permanent, a platform error retryable, a refused key waits (peer down)
    client = DocumentExchangeClient(exchange.base_url.__str__(), api_key=EDOC_KEY)
    with pytest.raises(PeerError) as exc:
        client.send(forged, idempotency_key="k1", correlation_id="c")
    assert (exc.value.code, exc.value.retryable) == ("edoc_signature_invalid", False)
    wrong = DocumentExchangeClient(exchange.base_url.__str__(), api_key="wrong")
    with pytest.raises(PeerError) as exc:
        wrong.send(signed, idempotency_key="k2", correlation_id="c")
    assert exc.value.peer_down and exc.value.code == "edoc_auth_failed"
    client.close()
    wrong.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_in_production_no_exchange_platform_means_nothing_is_queued(hub_factory: HubFactory, trust: Trust) -> None:
    hub = hub_factory(
        mode="production",
        population_url="http://127.0.0.1:9/ws/congdan",  # never asked here
        signing_key=trust.dir / "official.key",
        signing_cert=trust.dir / "official-chain.pem",
        start_worker=False,
    )
    d = dossier(35, status=2)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc())
    assert_problem(r, 503, "document_exchange_not_configured")
    with hub.runtime.sessions() as s:
        assert [j for j in jobs.list_jobs(s) if j["destination"] == "document_exchange"] == []


# -- what became of a document: the receivers' status notices --------------------------------------------------


def hub_cli(hub: Hub, args: list[str]) -> Any:
    """`hub ARGS` on the test hub's database and document exchange, as an operator runs it on its machine."""
    import os
    import subprocess
    import sys

    s = hub.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {
        "HUB_VAR_DIR": str(s.var_dir), "HUB_DATABASE_URL": s.effective_database_url,
        "HUB_DOCUMENT_EXCHANGE_URL": s.document_exchange_url,
        "HUB_DOCUMENT_EXCHANGE_API_KEY": EDOC_KEY,
        "HUB_SIGNING_TRUST_ANCHORS": json.dumps([str(a) for a in s.signing_trust_anchors]),
    }  # fmt: skip
    hub_bin = str(Path(sys.executable).with_name("hub"))
    return subprocess.run([hub_bin, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def contract_errors(name: str, reply: Any) -> list[str]:
    from jsonschema import Draft202012Validator

    from hub.sandbox.contracts import contracts_dir

    schema = json.loads((contracts_dir() / "document_exchange" / name).read_text(encoding="utf-8"))
    return [e.message for e in Draft202012Validator(schema).iter_errors(reply)]


def statuses_of(hub: Hub, code: str) -> list[tuple[str | None, list[str]]]:
    """Per receiver of the dossier's first document: (latest status, every status reported, in order)."""
    [doc] = hub.http.get(f"/v1/dossiers/{code}").json()["documents"]
    return [(r["status"], [h["status"] for h in r["history"]]) for r in doc["receivers"]]


def test_receivers_say_what_became_of_a_document_and_the_dossier_shows_it(
    signing_hub: Hub, exchange: httpx.Client
) -> None:
    """The receiving agency's system says "01 arrived" when the document reaches it, then accepted, being handled,
    done — each a notice signed by that agency. hub takes them from the platform, verifies and matches each to the
    document it sent, and the dossier (API and console) shows where the document stands; each is taken once."""
    hub = signing_hub
    doc = send_one(hub, 36, exchange)
    code, document_id = dossier(36)["MaHoSo"], doc["header"]["document_id"]
    for status, said in (("03", "Vào sổ văn bản đến số 123"), ("05", "Chuyển cán bộ xử lý"), ("06", "Đã xử lý xong")):
        made = exchange.post(f"/_sandbox/documents/{document_id}/status", json={"status": status, "description": said,
                                                                                "staff": "Lê Văn Thư"})  # fmt: skip
        assert made.status_code == 201, made.text
    assert statuses_of(hub, code) == [(None, [])]  # nothing taken yet
    waiting = exchange.post("/api/edoc/status/list", json={"limit": 10}, headers={"X-API-Key": EDOC_KEY}).json()
    assert contract_errors("status_list.schema.json", waiting) == [] and len(waiting["items"]) == 4
    polled = hub_cli(hub, ["edocs", "poll", "--json"])  # an operator asking now; the workers do it on a schedule
    assert polled.returncode == 0 and json.loads(polled.stdout) == {"applied": 4}, polled.stderr
    assert hub.runtime.poll_edoc_status() == {}  # acknowledged: not offered again
    assert statuses_of(hub, code) == [("06", ["01", "03", "05", "06"])]
    metrics = hub.http.get("/metrics").text
    assert 'hub_edoc_status_notices_total{status="06",verdict="applied"} 1.0' in metrics
    [receiver] = hub.http.get(f"/v1/dossiers/{code}").json()["documents"][0]["receivers"]
    assert receiver["id"] == "000.00.17.H29" and receiver["final"] is True and receiver["meaning_vi"] == "Hoàn thành"
    assert receiver["history"][1]["description"] == "Vào sổ văn bản đến số 123"
    assert "Công an phường Bến Nghé" in receiver["history"][0]["signer"]  # who signed it, as verified
    assert [x[0] for x in exchanges(hub, "document_exchange") if x[0].startswith("edoc_status")] == [
        "edoc_status_list", "edoc_status_ack", "edoc_status_list"
    ]  # fmt: skip
    page = console_as(hub, "viewer36", "viewer").get(f"/ops/dossiers/{code}")
    assert page.status_code == 200 and 'id="documents"' in page.text
    assert "57/TLKS-UBND" in page.text and "Hoàn thành" in page.text and "<code>06</code>" in page.text


def test_notices_that_do_not_hold_are_recorded_refused_and_never_applied(
    signing_hub: Hub, exchange: httpx.Client, trust: Trust
) -> None:
    """What a broken or hostile platform may relay: a notice changed after signing, one signed by a key outside
    the trust anchors, one about a document hub never sent, one from an agency the document did not go to, a
    document instead of a notice, XML with a DTD, bytes that are not base64. Each is recorded with hub's verdict
    (evidence for an operator) and acknowledged; none moves the document's status."""
    from datetime import UTC, date, datetime

    from sqlalchemy import select

    from hub.signing import edxml
    from hub.store.models import EdocNotice

    hub = signing_hub
    doc = send_one(hub, 37, exchange)
    code, header = dossier(37)["MaHoSo"], doc["header"]
    assert hub.runtime.poll_edoc_status() == {"applied": 1}  # its "01 arrived"

    def notice(**changes: Any) -> edxml.StatusNotice:
        base: dict[str, Any] = {
            "sender": header["from"]["id"], "document_code": header["code"], "promulgation_date":
            date.fromisoformat(header["promulgation_date"]), "document_id": header["document_id"],
            "author": edxml.Organ("000.00.17.H29", "Công an phường Bến Nghé"), "status": "03",
            "at": datetime.now(UTC),
        }  # fmt: skip
        return edxml.StatusNotice(**(base | changes))

    receiver = trust.signer("receiver")
    signed = edxml.sign_status(notice(), receiver)
    forged = signed.replace(b"<edXML:StatusCode>03<", b"<edXML:StatusCode>06<")
    assert forged != signed
    outsider = edxml.sign_status(notice(status="06"), trust.signer("untrusted"))
    unknown = edxml.sign_status(notice(document_id="not-a-document-hub-sent"), receiver)
    stranger = edxml.sign_status(notice(author=edxml.Organ("000.00.17.H99", "Ai đó"), status="02"), receiver)
    document = edxml.sign(
        edxml.Header(sender=edxml.Organ("000.00.17.H29", "Công an"), receivers=[edxml.Organ("000.00.17.H56", "UBND")],
                     code_number="9", code_notation="CV", place="HCM", promulgation_date=date(2026, 12, 1), type=2,
                     type_name="Công văn", subject="Không phải thông báo"),
        [], receiver, sent_at=datetime.now(UTC),
    )  # fmt: skip
    dtd = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    for body in (forged, outsider, unknown, stranger, document, dtd):
        queued = exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "envelope": base64.b64encode(body).decode()})
        assert queued.status_code == 201
    exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "envelope": base64.b64encode(b"x").decode()})
    exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "wire": "not base64 at all!"})  # sent as it is
    counts = hub.runtime.poll_edoc_status()
    assert counts == {"rejected": 6, "unknown_document": 1, "not_a_receiver": 1}, counts
    assert hub.runtime.poll_edoc_status() == {}  # every one acknowledged
    assert statuses_of(hub, code) == [("01", ["01"])]  # the forged "06" and the stranger's "02" moved nothing
    with hub.runtime.sessions() as s:
        kept = {n.verdict: n for n in s.scalars(select(EdocNotice).where(EdocNotice.verdict != "applied"))}
        details = [n.detail or "" for n in s.scalars(select(EdocNotice).where(EdocNotice.verdict == "rejected"))]
    assert kept["not_a_receiver"].receiver == "000.00.17.H99" and kept["not_a_receiver"].envelope == stranger
    assert any("HASH_FAILURE" in d for d in details) and any("not base64" in d for d in details)
    assert any("not a status notice" in d for d in details) and any("DTD" in d for d in details)
    page = console_as(hub, "viewer37", "viewer").get("/ops/documents")  # where an operator sees them
    assert page.status_code == 200 and 'id="refused-notices"' in page.text and "HASH_FAILURE" in page.text
    assert "không phải nơi nhận của văn bản" in page.text and 'id="no-refused-documents"' in page.text


def test_a_notice_is_taken_once_though_offered_again_and_kept_when_it_cannot_be_judged_now(
    signing_hub: Hub, exchange: httpx.Client, trust: Trust, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acknowledgement lost: the platform offers the same notices again — hub records each once. The CA's
    revocation services down: a notice whose signature cannot be judged now is left at the platform (not recorded
    as refused, not lost) and taken at the next poll once they answer."""
    from sqlalchemy import func, select

    from hub.adapters.errors import PeerUnavailable
    from hub.store.models import EdocNotice

    hub = signing_hub
    doc = send_one(hub, 38, exchange)  # its "01 arrived" waits at the platform
    trust.state.faults.update({"outage_seconds": 60})  # hub has never asked the CA about the receiver's certificate
    try:
        assert hub.runtime.poll_edoc_status() == {"later": 1}
    finally:
        trust.state.faults.update({"outage_seconds": 0})
    code = dossier(38)["MaHoSo"]
    assert statuses_of(hub, code) == [(None, [])]
    client = hub.runtime.document_exchange
    real_ack = client.acknowledge

    def lost(ids: list[str], **kw: Any) -> int:
        raise PeerUnavailable(
            "document_exchange", "the acknowledgement's answer was lost", code="peer_http_unavailable"
        )

    monkeypatch.setattr(client, "acknowledge", lost)
    with pytest.raises(PeerUnavailable):
        hub.runtime.poll_edoc_status()
    monkeypatch.setattr(client, "acknowledge", real_ack)
    assert hub.runtime.poll_edoc_status() == {"duplicate": 1}  # offered again, taken before: acknowledged now
    assert hub.runtime.poll_edoc_status() == {}
    with hub.runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(EdocNotice)) == 1
    assert statuses_of(hub, code) == [("01", ["01"])]
    assert doc["header"]["document_id"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_documents_sent_before_the_upgrade_get_their_notices_too(tmp_path: Path, trust: Trust, kind: str) -> None:
    """A province that sent documents with the previous version: the upgrade finds them in the outbox (sender,
    receivers, number, subject read from the signed envelope), so their receivers' notices are matched."""
    from tests.conftest import create_pg_database, drop_pg_database

    url = create_pg_database() if kind == "postgresql" else f"sqlite:///{tmp_path / 'old.db'}"
    try:
        sent_then_upgraded(url, trust)
    finally:
        if kind == "postgresql":
            drop_pg_database(url)


def sent_then_upgraded(url: str, trust: Trust) -> None:
    from datetime import UTC, date, datetime

    from alembic import command
    from sqlalchemy import text

    from hub.signing import edxml
    from hub.store import db

    db.upgrade(url, "0012")
    command.downgrade(db.alembic_config(url), "0012")  # a database made at head goes back (the downgrades, too)
    header = edxml.Header(
        sender=edxml.Organ("000.00.17.H56", "UBND phường"), receivers=[edxml.Organ("000.00.17.H29", "Công an")],
        code_number="12", code_notation="CV-UBND", place="HCM", promulgation_date=date(2026, 11, 30), type=2,
        type_name="Công văn", subject="Gửi trước khi nâng cấp",
    )  # fmt: skip
    envelope = edxml.sign(header, [], trust.signer("official"), sent_at=datetime.now(UTC)).decode()
    payload = {"document_id": header.document_id, "to": [{"id": "000.00.17.H29", "name": "Công an"}],
               "envelope": envelope, "client": "c", "request_hash": "h"}  # fmt: skip
    as_json = "CAST(:p AS JSONB)" if url.startswith("postgresql") else ":p"
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO dossiers (id, code, agency, procedure_code, status, last_seq, data, created_at, "
                "updated_at) VALUES (1, '000.00.17.H56-261130-0001', '000.00.17.H56', '1.001193', 2, 1, '{}', "
                "'2026-11-30 01:00:00', '2026-11-30 01:00:00')"
            ))  # fmt: skip
            outbox = (
                "INSERT INTO outbox (event_id, dossier_id, seq, destination, operation, payload, idempotency_key, "
                "correlation_id, state, attempts, next_attempt_at, created_at) VALUES ('e-1', 1, 1, "
                "'document_exchange', 'send_edoc', :p, 'k', 'c', 'delivered', 1, '2026-11-30 01:00:00', "
                "'2026-11-30 01:00:00')"
            )
            conn.execute(text(outbox.replace(":p", as_json)), {"p": json.dumps(payload)})
        db.upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT document_id, event_id, dossier_code, agency, sender_name, code, promulgation_date, subject "
                "FROM edocs_sent"
            )).all()  # fmt: skip
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        (header.document_id, "e-1", "000.00.17.H56-261130-0001", "000.00.17.H56", "UBND phường", "12/CV-UBND",
         "2026-11-30", "Gửi trước khi nâng cấp")
    ]  # fmt: skip


def test_a_notice_hub_fails_to_judge_is_kept_for_later_and_does_not_hold_up_the_others(
    signing_hub: Hub, exchange: httpx.Client
) -> None:
    """hub's own reader failing on a notice (a case nobody foresaw, or hub's environment) is hub's fault, not the
    notice's: it is neither refused for good nor acknowledged — judged again at the next poll — and the notices
    after it in the same list are taken meanwhile."""
    from hub.services.edocs import EdocStatus

    hub = signing_hub
    send_one(hub, 39, exchange)  # its "01 arrived" is queued behind the poison one below... once re-queued
    poison = b"<edXML:edXML xmlns:edXML='http://www.mic.gov.vn/TBT/QCVN_102_2016'/>"
    waiting = exchange.post("/api/edoc/status/list", json={}, headers={"X-API-Key": EDOC_KEY}).json()["items"]
    exchange.post("/_sandbox/reset")  # the platform forgets; the poison goes first, the real notice after it
    exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "envelope": base64.b64encode(poison).decode()})
    exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "envelope": waiting[0]["envelope"]})

    def verify(data: bytes) -> Any:
        if data == poison:
            raise RuntimeError("a reader's bug")
        return hub.runtime.signatures.verify(data)

    status = EdocStatus(hub.runtime.sessions, hub.runtime.document_exchange, verify)
    assert status.poll(correlation_id="t") == {"later": 1, "applied": 1}
    assert statuses_of(hub, dossier(39)["MaHoSo"]) == [("01", ["01"])]
    assert status.poll(correlation_id="t") == {"later": 1}  # still waiting at the platform, asked again
    assert hub.runtime.poll_edoc_status() == {"rejected": 1}  # a reader that works: judged (not an edXML notice)


def test_a_document_sent_by_mistake_is_recalled_and_each_receiver_answers(
    signing_hub: Hub, exchange: httpx.Client
) -> None:
    """An officer recalls a document (edXML 13, "Lấy lại"): hub signs the recall as the agency and sends it after
    the document itself; a receiver still handling it agrees (15), one that has finished (06) refuses (16); the
    dossier shows the recall and both answers. A second recall is refused; a document the dossier did not send is
    not found."""
    hub = signing_hub
    d = dossier(40, status=2)
    code = d["MaHoSo"]
    hub.http.post("/v1/dossiers", json=d)
    two = [{"id": "000.00.17.H29", "name": "Công an phường Bến Nghé"}, {"id": "000.00.17.H30", "name": "UBND quận"}]
    sent = hub.http.post(f"/v1/dossiers/{code}/edocs", json=edoc(to=two))
    assert sent.status_code == 202, sent.text
    document_id = sent.json()["document_id"]
    hub.wait_idle()
    done = exchange.post(
        f"/_sandbox/documents/{document_id}/status", json={"status": "06", "receiver": "000.00.17.H30"}
    )
    assert done.status_code == 201
    reason = {"reason": "Gửi nhầm nơi nhận"}
    r = hub.http.post(f"/v1/dossiers/{code}/edocs/{document_id}/recall", json=reason, headers={"Idempotency-Key": "r1"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "13" and r.json()["seq"] == 2  # after the document
    again = hub.http.post(
        f"/v1/dossiers/{code}/edocs/{document_id}/recall", json=reason, headers={"Idempotency-Key": "r1"}
    )
    assert again.json() == r.json() and again.headers.get("Idempotent-Replayed") == "true"
    assert_problem(hub.http.post(f"/v1/dossiers/{code}/edocs/{document_id}/recall", json=reason), 409,
                   "recall_already_requested")  # fmt: skip
    assert_problem(hub.http.post(f"/v1/dossiers/{code}/edocs/not-sent/recall", json=reason), 404, "document_not_found")
    assert_problem(hub.http.post(f"/v1/dossiers/{code}/edocs/{document_id}/recall", json={}), 422, "missing_field")
    hub.wait_idle()
    assert hub.runtime.poll_edoc_status() == {"applied": 5}  # 01 ×2, 06, then 15 and 16
    view = hub.http.get(f"/v1/dossiers/{code}")
    as_documented(hub.http.get("/openapi.json").json(), "get", "/v1/dossiers/{code}", view)  # receivers, recall
    [doc] = view.json()["documents"]
    assert doc["recall"]["reason"] == "Gửi nhầm nơi nhận" and doc["recall"]["delivery"]["state"] == "delivered"
    assert [(x["id"], x["status"]) for x in doc["receivers"]] == [("000.00.17.H29", "15"), ("000.00.17.H30", "16")]
    assert doc["receivers"][0]["meaning"] == "recall or update agreed"
    page = console_as(hub, "viewer40", "viewer").get(f"/ops/dossiers/{code}")
    assert "Đã yêu cầu lấy lại" in page.text and "Gửi nhầm nơi nhận" in page.text
    refused = console_as(hub, "operator40", "operator").get("/ops/documents?lang=en")
    assert 'id="refused-documents"' in refused.text and f"/ops/dossiers/{code}" in refused.text
    assert "recall or update refused" in refused.text and "UBND quận" in refused.text
    assert exchange.get("/_sandbox/recalls").json()["items"] == [
        {"document_id": document_id, "reason": reason["reason"]}
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_operator_goes_from_a_refused_document_to_its_dossier_in_a_browser(
    signing_hub: Hub, exchange: httpx.Client, backend: str
) -> None:
    """The alert says a receiver refused a document: in the console (a real browser), the Documents page lists it,
    its dossier's page shows who refused it and why; in English on request."""
    from hub.console.auth import Operators
    from tests.test_console import PASSWORD

    hub = signing_hub
    doc = send_one(hub, 41, exchange)
    code = dossier(41)["MaHoSo"]
    refused = {"status": "02", "description": "Không đúng thẩm quyền tiếp nhận"}
    assert exchange.post(f"/_sandbox/documents/{doc['header']['document_id']}/status", json=refused).status_code == 201
    assert hub.runtime.poll_edoc_status() == {"applied": 2}
    Operators(hub.runtime.sessions).add("pham.thi.doc", PASSWORD, "viewer")
    from tests.conftest import chromium

    with chromium() as b:
        look_around(b.new_page(), hub, code)


def look_around(page: Any, hub: Hub, code: str) -> None:
    from tests.test_console import login, shot

    try:
        base = str(hub.http.base_url).rstrip("/")
        login(page, base, "pham.thi.doc")
        page.click("header >> text=Văn bản")
        row = page.locator("#refused-documents tr", has_text=code)
        assert "Từ chối tiếp nhận" in row.inner_text() and "Không đúng thẩm quyền" in row.inner_text()
        shot(page, "documents-refused")
        row.locator("a").click()
        documents = page.locator("#documents")
        assert "57/TLKS-UBND" in documents.inner_text() and "02 Từ chối tiếp nhận" in documents.inner_text()
        page.click("#lang")
        assert "02 refused by the receiver" in page.locator("#documents").inner_text()
    finally:
        page.close()


def test_a_list_of_notices_too_large_to_read_is_asked_again_for_fewer(signing_hub: Hub, exchange: httpx.Client) -> None:
    """hub reads a peer's reply up to 4 MiB. Notices can be large (B-LT ones carry certificates and revocation
    evidence): a list past the cap is asked again for half as many until it fits, and every notice is taken."""
    hub = signing_hub
    big = "A" * 100_000  # 100 kB of base64 each, 60 of them: 6 MB in one list of 100
    for _ in range(60):
        assert exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "wire": big}).status_code == 201
    assert hub.runtime.poll_edoc_status() == {"rejected": 60}  # (zeros, not an edXML notice: judged and refused)
    assert hub.runtime.poll_edoc_status() == {}  # all acknowledged
    lists = [x for x in exchanges(hub, "document_exchange") if x[0] == "edoc_status_list"]
    assert [x[3] for x in lists[:3]] == ["peer_reply_too_large", "peer_reply_too_large", None], lists


def test_a_notice_left_for_later_is_judged_once_per_poll(signing_hub: Hub, exchange: httpx.Client) -> None:
    """A notice that cannot be judged now stays at the head of the platform's list: the rounds of one poll take
    the notices behind it without judging it again each time (each try may wait on a CA that does not answer)."""
    from hub.services.edocs import EdocStatus

    hub = signing_hub
    doc = send_one(hub, 42, exchange)
    for status in ("03", "05"):
        exchange.post(f"/_sandbox/documents/{doc['header']['document_id']}/status", json={"status": status})
    waiting = exchange.post("/api/edoc/status/list", json={}, headers={"X-API-Key": EDOC_KEY}).json()["items"]
    exchange.post("/_sandbox/reset")
    stuck = b"<not-yet/>"
    for envelope in [base64.b64encode(stuck).decode()] + [w["envelope"] for w in waiting]:
        exchange.post("/_sandbox/notices", json={"key": EDOC_KEY, "envelope": envelope})
    tried: list[bytes] = []

    def verify(data: bytes) -> Any:
        tried.append(data)
        if data == stuck:
            raise RuntimeError("cannot be judged now")
        return hub.runtime.signatures.verify(data)

    status = EdocStatus(hub.runtime.sessions, hub.runtime.document_exchange, verify)
    assert status.poll(correlation_id="t", limit=2) == {"later": 1, "applied": 3}  # three rounds of two
    assert tried.count(stuck) == 1 and len(tried) == 4
    assert statuses_of(hub, dossier(42)["MaHoSo"]) == [("05", ["01", "03", "05"])]


def test_a_key_file_that_cannot_sign_is_a_503_that_names_the_file(
    hub_factory: HubFactory, exchange_server: ServerThread, tmp_path: Path
) -> None:
    """HUB_SIGNING_KEY names a file that is not a key (a certificate put in its place, a broken copy) or is not
    there at all: the document is refused with 503 `signing_key_unusable`, which names the file — not a 500 —,
    nothing is queued, and the metric operators watch says the key cannot sign."""
    garbage = tmp_path / "hub-key.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", encoding="utf-8")
    for n, key in enumerate((garbage, tmp_path / "no-such-key.pem")):
        hub = hub_factory(
            start_worker=False, signing_key=key, signing_cert=garbage,
            document_exchange_url=exchange_server.url, document_exchange_api_key=SecretStr(EDOC_KEY),
        )  # fmt: skip
        d = dossier(40 + n, status=2)
        hub.http.post("/v1/dossiers", json=d)
        body = assert_problem(
            hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/edocs", json=edoc()), 503, "signing_key_unusable"
        )
        assert str(key) in body["detail"], body
        assert "hub_signing_key_usable 0.0" in hub.http.get("/metrics").text
        with hub.runtime.sessions() as s:
            assert [j for j in jobs.list_jobs(s, dossier=d["MaHoSo"]) if j["destination"] == "document_exchange"] == []
