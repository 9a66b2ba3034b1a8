"""The ingest API as a provincial one-stop system uses it: 202 + event id, idempotent repeats, the dossier's
history with delivery state, and problem+json for every kind of bad input (never a 500)."""

from __future__ import annotations

import json
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from hub.store.models import Dossier, IdempotencyRecord, OutboxMessage, StatusEvent
from tests.api_helpers import assert_problem
from tests.conftest import OTHER_AGENCY, Creds, Hub, HubFactory
from tests.helpers import dossier, step


def rows(hub: Hub) -> dict[str, int]:
    with hub.runtime.sessions() as s:
        return {
            name: int(s.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in [
                ("dossiers", Dossier),
                ("events", StatusEvent),
                ("outbox", OutboxMessage),
                ("keys", IdempotencyRecord),
            ]
        }


@pytest.fixture
def hub(hub_factory: HubFactory) -> Hub:
    return hub_factory(start_worker=False)


def test_create_answers_202_with_event_id_and_writes_state_event_outbox(hub: Hub) -> None:
    d = dossier(1)
    r = hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["MaHoSo"] == d["MaHoSo"] and body["seq"] == 1 and body["TrangThaiHoSo"] == 2
    assert len(body["event_id"]) == 36
    assert rows(hub) == {"dossiers": 1, "events": 1, "outbox": 1, "keys": 1}
    got = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()
    assert got["TrangThaiHoSo"] == 2 and got["status_name"] == "Được tiếp nhận"
    assert [e["event_id"] for e in got["events"]] == [body["event_id"]]
    delivery = got["events"][0]["deliveries"][0]
    assert delivery["destination"] == "national_portal" and delivery["operation"] == "DongBoHoSoMC"
    assert delivery["state"] == "pending"
    # the owner's ID number is never shown back in full
    assert got["dossier"]["SoGiayToChuHoSo"].endswith(d["SoGiayToChuHoSo"][-3:])
    assert d["SoGiayToChuHoSo"] not in r.text + json.dumps(got)


def test_repeated_idempotency_key_returns_same_answer_and_creates_nothing(hub: Hub) -> None:
    d = dossier(2)
    first = hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": "same"})
    before = rows(hub)
    again = hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": "same"})
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert rows(hub) == before
    # a 202 says where to follow the dossier (RFC 9110), and the OpenAPI document says so too
    assert first.headers["Location"] == again.headers["Location"] == f"/v1/dossiers/{d['MaHoSo']}"
    assert hub.http.get(first.headers["Location"]).json()["MaHoSo"] == d["MaHoSo"]
    spec = hub.http.get("/openapi.json").json()["paths"]["/v1/dossiers"]["post"]["responses"]["202"]
    assert {"Location", "Idempotent-Replayed"} <= set(spec["headers"])
    s = step(d["MaHoSo"], 4)
    p1 = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=s, headers={"Idempotency-Key": "p"})
    p2 = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=s, headers={"Idempotency-Key": "p"})
    assert p1.status_code == p2.status_code == 202 and p1.json() == p2.json()
    assert rows(hub)["events"] == 2


def test_idempotency_key_reused_for_another_request_is_refused(hub: Hub) -> None:
    hub.http.post("/v1/dossiers", json=dossier(3), headers={"Idempotency-Key": "k"})
    before = rows(hub)
    r = hub.http.post("/v1/dossiers", json=dossier(4), headers={"Idempotency-Key": "k"})
    assert_problem(r, 409, "idempotency_key_reused")
    assert rows(hub) == before


def test_an_empty_or_unprintable_idempotency_key_is_refused_and_spends_nothing(hub: Hub) -> None:
    """A one-stop system whose template sends `Idempotency-Key:` with its variable missing: were the empty key
    taken, the first dossier would use it up and every later one be refused as its reuse. It is refused at once,
    as is a key of non-ASCII bytes (headers are ASCII; its bytes would be read as Latin-1) or of control
    characters, and a key sent right afterwards works."""
    before = rows(hub)
    for key in (b"", "khóa".encode(), b"\xff\xfe", b"a" * 201):
        r = hub.http.post("/v1/dossiers", json=dossier(5), headers={"Idempotency-Key": key})
        assert_problem(r, 422, "invalid_idempotency_key")
        assert r.json()["errors"][0]["loc"] == ["header", "idempotency-key"]
    assert rows(hub) == before
    d = dossier(5)
    ok = [hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": b"a" * 200}) for _ in range(2)]
    assert [r.status_code for r in ok] == [202, 202] and ok[0].json() == ok[1].json()
    assert_problem(
        hub.http.post("/v1/dossiers", json=dossier(6), headers={"Idempotency-Key": b"a" * 200}),
        409,
        "idempotency_key_reused",
    )
    # the OpenAPI document says what a key may be
    spec = hub.http.get("/openapi.json").json()["paths"]["/v1/dossiers"]["post"]["parameters"]
    key = next(p for p in spec if p["name"] == "idempotency-key")
    assert key["schema"]["anyOf"][0]["pattern"] and key["schema"]["anyOf"][0]["maxLength"] == 200


def test_reads_are_sent_compressed_to_clients_that_take_gzip_and_writes_are_not(hub: Hub) -> None:
    """Over a province's links: what readers fetch (the OpenAPI document, /metrics, listings, CSV downloads) comes
    gzip-compressed to a client that says it takes gzip, as it was to one that does not; a write's answer is never
    compressed (small, and on the hot path). A compressed answer's ETag is weak, and still answers If-None-Match."""
    spec = hub.http.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    plain = hub.http.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert spec.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert (
        int(spec.headers["content-length"]) * 3 < int(plain.headers["content-length"]) and spec.json() == plain.json()
    )
    assert hub.http.get("/metrics", headers={"Accept-Encoding": "gzip"}).headers["content-encoding"] == "gzip"
    written = hub.http.post("/v1/dossiers", json=dossier(61), headers={"Accept-Encoding": "gzip"})
    assert written.status_code == 202 and "content-encoding" not in written.headers
    form = hub.http.get("/v1/forms/1.001193", headers={"Accept-Encoding": "gzip"})
    assert form.headers["content-encoding"] == "gzip" and form.headers["etag"].startswith('W/"')
    again = hub.http.get(
        "/v1/forms/1.001193", headers={"Accept-Encoding": "gzip", "If-None-Match": form.headers["etag"]}
    )
    assert again.status_code == 304


def test_a_request_repeated_without_a_key_is_the_latest_change_again(hub: Hub) -> None:
    """A one-stop system that retries after a lost answer but sends no Idempotency-Key: the repeat is answered
    with the change it repeats and nothing is relayed twice — also after the dossier reached a final status,
    where a second change would be refused."""
    d = dossier(40)
    code = d["MaHoSo"]
    first = hub.http.post("/v1/dossiers", json=d)
    again = hub.http.post("/v1/dossiers", json=d)
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert rows(hub)["outbox"] == 1
    steps = [step(code, 4), step(code, 5, "Yêu cầu bổ sung"), step(code, 4)]  # 4, 5, 4: no repeats among them
    answers = [hub.http.post(f"/v1/dossiers/{code}/progress", json=s) for s in steps]
    assert [a.json()["seq"] for a in answers] == [2, 3, 4]
    repeat = hub.http.post(f"/v1/dossiers/{code}/progress", json=steps[2])
    assert repeat.status_code == 202 and repeat.json() == answers[2].json()
    done = step(code, 7, "Công dân rút hồ sơ")
    withdrawn = hub.http.post(f"/v1/dossiers/{code}/progress", json=done)
    assert withdrawn.status_code == 202
    assert hub.http.post(f"/v1/dossiers/{code}/progress", json=done).json() == withdrawn.json()
    history = hub.http.get(f"/v1/dossiers/{code}").json()["events"]
    assert [e["TrangThaiHoSo"] for e in history] == [2, 4, 5, 4, 7]
    assert rows(hub)["outbox"] == 5
    # a changed message is a new change (and judged as one): here refused, the dossier being final
    changed = hub.http.post(f"/v1/dossiers/{code}/progress", json={**done, "NoiDungXuLy": "khác"})
    assert_problem(changed, 409, "invalid_transition")


def test_status_history_in_order(hub: Hub) -> None:
    d = dossier(5)
    hub.http.post("/v1/dossiers", json=d)
    code = d["MaHoSo"]
    for status in (4, 5, 4, 9, 10):
        assert hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status)).status_code == 202
    got = hub.http.get(f"/v1/dossiers/{code}").json()
    assert [e["TrangThaiHoSo"] for e in got["events"]] == [2, 4, 5, 4, 9, 10]
    assert [e["seq"] for e in got["events"]] == [1, 2, 3, 4, 5, 6]
    assert [e["previous_status"] for e in got["events"]] == [None, 2, 4, 5, 4, 9]
    assert got["TrangThaiHoSo"] == 10


def test_invalid_transition_is_409_and_nothing_half_written(hub: Hub) -> None:
    d = dossier(6, status=1)
    hub.http.post("/v1/dossiers", json=d)
    code = d["MaHoSo"]
    refused = hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 3))  # refused: terminal
    assert refused.status_code == 202
    before = rows(hub)
    r = hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 4), headers={"Idempotency-Key": "x"})
    body = assert_problem(r, 409, "invalid_transition")
    assert body["current"] == 3 and body["requested"] == 4
    assert rows(hub) == before
    assert hub.http.get(f"/v1/dossiers/{code}").json()["TrangThaiHoSo"] == 3
    # the same via a dossier sync
    r = hub.http.post("/v1/dossiers", json={**d, "TrangThaiHoSo": 10})
    assert_problem(r, 409, "invalid_transition")
    assert rows(hub) == before


def test_new_dossier_must_start_as_new_or_accepted(hub: Hub) -> None:
    assert_problem(hub.http.post("/v1/dossiers", json=dossier(7, status=9)), 409, "invalid_initial_status")
    assert rows(hub)["dossiers"] == 0


def _day_before(national: str) -> str:
    from hub.domain.dates import format_national, parse_national

    return format_national(parse_national(national) - timedelta(days=1))


def _days_ahead(days: int) -> str:
    from hub.domain.dates import format_national, utcnow

    return format_national(utcnow() + timedelta(days=days))


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda d: d.update(MaHoSo="000.00.17.H56-241399-0001"), "invalid_dossier_code"),
        (lambda d: d.update(MaHoSo="H56-241015-1"), "invalid_dossier_code"),
        (lambda d: d.update(MaHoSo=d["MaHoSo"] + "\n"), "invalid_dossier_code"),  # would be another dossier
        (lambda d: d.update(MaTTHC="1001193"), "invalid_procedure_code"),
        (lambda d: d.update(NgayTiepNhan="2024-10-15"), "invalid_date"),
        (lambda d: d.update(NgayTiepNhan="20241399083000"), "invalid_date"),
        (lambda d: d.update(NgayHenTra="00010101000000"), "invalid_date"),  # at +07:00, before UTC's year 1
        # an appointment (or result, or end of processing) a day before the dossier was received
        (lambda d: d.update(NgayHenTra=_day_before(d["NgayTiepNhan"])), "date_before_receipt"),
        (lambda d: d.update(NgayTra=f"{int(d['NgayTiepNhan'][:4]) - 1}0101080000"), "date_before_receipt"),
        (lambda d: d.update(NgayKetThucXuLy="20000101000000"), "date_before_receipt"),
        # received, or its result returned, in a year to come (2062 typed for 2026)
        (lambda d: d.update(NgayTiepNhan="20620101080000", NgayHenTra="20620105080000"), "date_in_future"),
        (lambda d: d.update(NgayTra=_days_ahead(2)), "date_in_future"),
        (lambda d: d.update(TrangThaiHoSo=11), "invalid_status"),
        (lambda d: d.pop("ChuHoSo"), "missing_field"),
        (lambda d: d.update(KenhThucHien="online"), "validation_error"),
        (lambda d: d.update(DanhSachLePhi=[{"TenPhiLePhi": "x", "Gia": 1.5}]), "validation_error"),
        (lambda d: d.update(ChuHoSo="Nguyễn\x00Văn A"), "validation_error"),  # PostgreSQL cannot store NUL
        (lambda d: d.update(TaiLieuNop=[{"TenTepDinhKem": "a\x00.pdf"}]), "validation_error"),
        (lambda d: d.update(TaiLieuNop=[{"TenTepDinhKem": "a\ud800.pdf"}]), "validation_error"),  # JSON allows it
        (lambda d: d.update(TaiLieuNop=[{"Ten\udc80": "a.pdf"}]), "validation_error"),
        (lambda d: d.update(TrangThaiHoSo=True), "invalid_status"),
        # digits in a string are the number (what one-stop systems send): anything else written as text is not
        (lambda d: d.update(TrangThaiHoSo="2.0"), "invalid_status"),
        (lambda d: d.update(TrangThaiHoSo=" 2"), "invalid_status"),
        (lambda d: d.update(TrangThaiHoSo=""), "invalid_status"),  # required: empty is not absent here
        (lambda d: d.update(NgayTiepNhan=""), "invalid_date"),
    ],
)
def test_bad_dossier_fields_are_422_with_stable_code(hub: Hub, mutate: Any, code: str) -> None:
    d = dossier(8)
    mutate(d)
    raw = json.dumps(d).encode()  # \u-escaped: as a client's JSON library sends a lone surrogate
    assert_problem(hub.http.post("/v1/dossiers", content=raw, headers={"Content-Type": "application/json"}), 422, code)
    assert rows(hub)["dossiers"] == 0


def test_a_message_as_one_stop_systems_in_service_write_it_is_taken_and_relayed_as_the_contract_says(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """One-stop systems in service (OpenCPS, for one) write the portal's codes as strings ("2"), every optional
    field they have no value for as "" (a return date not yet set), and fields of their own (Fax): hub takes the
    dossier and its steps as the portal would, and relays them as the contract writes them — numbers as numbers,
    no empty fields — which the portal's sandbox checks against the contract."""
    hub = hub_factory()
    d = dossier(9)
    sent = {
        **d,
        "TrangThaiHoSo": "2",
        "KenhThucHien": str(d["KenhThucHien"]),
        "LoaiDoiTuong": "1",
        "HinhThuc": "0",
        "NgayTra": "",
        "NgayKetThucXuLy": "",
        "ThongTinTra": "",
        "MaDoiTuong": "",
        "GhiChu": "",
        "Email": "",
        "Fax": "",
        "ThongTinKhac": "",
        "TaiLieuNop": [],
        "DanhSachLePhi": [{"TenPhiLePhi": "Lệ phí đăng ký", "Gia": "8000", "HinhThucThu": "", "LoaiPhiLePhi": "1"}],
        "DanhSachTepDinhKemKhac": [],
    }
    r = hub.http.post("/v1/dossiers", json=sent)
    assert r.status_code == 202, r.text
    code = d["MaHoSo"]
    blank = {"ChucDanh": "", "PhongBanXuLy": "", "NgayBatDau": "", "NgayKetThucTheoQuyDinh": "", "NoiDungXuLy": ""}
    r = hub.http.post(f"/v1/dossiers/{code}/progress", json={**step(code, 4), "TrangThai": "4", **blank})
    assert r.status_code == 202, r.text
    got = hub.http.get(f"/v1/dossiers/{code}").json()
    assert got["TrangThaiHoSo"] == 4 and [e["TrangThaiHoSo"] for e in got["events"]] == [2, 4]
    assert hub.wait_idle() == {"delivered": 2}
    assert portal.get("/_sandbox/received", params={"outcome": "rejected"}).json()["count"] == 0
    items = portal.get("/_sandbox/received").json()["items"]
    [filed, stepped] = [x["body"]["data"][0] for x in items]
    assert filed["TrangThaiHoSo"] == 2 and filed["LoaiDoiTuong"] == 1 and filed["HinhThuc"] == 0
    assert filed["DanhSachLePhi"] == [{"TenPhiLePhi": "Lệ phí đăng ký", "Gia": 8000, "LoaiPhiLePhi": 1}]
    assert not {"NgayTra", "NgayKetThucXuLy", "ThongTinTra", "GhiChu", "Email", "Fax", "ThongTinKhac"} & set(filed)
    assert stepped["TrangThai"] == 4 and not (set(blank) - {"NoiDungXuLy"}) & set(stepped)
    assert stepped["NoiDungXuLy"] == "Đang xử lý"  # a step with no note is described by its status's name


def test_a_one_stop_clock_some_hours_ahead_is_not_refused(hub: Hub) -> None:
    """Received "in the future" by hours is a clock ahead (or local time written as UTC): taken; a day and more is
    not a clock."""
    d = dossier(42, NgayTiepNhan=_days_ahead(0)[:8] + "235959", NgayHenTra=_days_ahead(5))
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202


def test_the_owners_id_is_kept_without_the_spaces_around_it(hub: Hub) -> None:
    """The owner's ID number is a key (its HMAC finds the citizen's dossiers): a line end left by a form is no
    part of it, nor of the phone the citizen's notices go to."""
    d = dossier(41, SoGiayToChuHoSo=" 079195001234\n", SoDienThoai="0912345678 ")
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    with hub.runtime.sessions() as s:
        stored = s.scalars(select(Dossier)).one()
    assert stored.data["SoGiayToChuHoSo"] == "079195001234" and stored.data["SoDienThoai"] == "0912345678"
    assert stored.subject_hmac == hub.runtime.dossiers.subject_hmac("079195001234")


def test_vietnamese_text_is_relayed_precomposed(hub: Hub) -> None:
    """Text typed decomposed ("Nguyễn" as "Nguyê" + a combining tilde) is the same name in other bytes: hub keeps
    and relays it precomposed (NFC, TCVN 6909:2001), so a retry of the same request in either form is one request."""
    import unicodedata

    name, doc = "Nguyễn Thị Hồng Nhung", "Giấy chứng sinh"
    nfd = unicodedata.normalize("NFD", name)
    assert nfd != name
    d = dossier(42, ChuHoSo=nfd, TaiLieuNop=[{"TenTepDinhKem": unicodedata.normalize("NFD", doc)}])
    first = hub.http.post("/v1/dossiers", json=d, headers={"Idempotency-Key": "nfd"})
    assert first.status_code == 202
    again = hub.http.post("/v1/dossiers", json={**d, "ChuHoSo": name}, headers={"Idempotency-Key": "nfd"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    with hub.runtime.sessions() as s:
        payload = s.scalars(select(OutboxMessage)).one().payload["data"][0]
    assert payload["ChuHoSo"] == name and payload["TaiLieuNop"][0]["TenTepDinhKem"] == doc


def test_malformed_json_and_wrong_shapes(hub: Hub) -> None:
    headers = {"Content-Type": "application/json"}
    assert_problem(hub.http.post("/v1/dossiers", content=b'{"MaHoSo": ', headers=headers), 400, "malformed_json")
    assert_problem(hub.http.post("/v1/dossiers", content=b"\xff\xfe", headers=headers), 400, "malformed_json")
    assert_problem(hub.http.post("/v1/dossiers", json=[1, 2]), 422, "validation_error")
    assert_problem(hub.http.post("/v1/dossiers", content=b"null", headers=headers), 422, "validation_error")
    too_deep = b"[" * 100_000 + b"]" * 100_000
    assert_problem(hub.http.post("/v1/dossiers", content=too_deep, headers=headers), 400, "malformed_json")
    huge_number = b'{"TrangThaiHoSo": ' + b"9" * 5000 + b"}"
    assert_problem(hub.http.post("/v1/dossiers", content=huge_number, headers=headers), 400, "malformed_json")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_json_does_not_have_are_refused_not_relayed_as_null(hub: Hub, token: str) -> None:
    """Python's parser takes NaN and Infinity (and reads 1e400 as infinity); RFC 8259 has no such numbers. In a
    field hub keeps as sent (a submitted file's entry) one was stored and relayed to the portal as null, and the
    client told 202: now the body is refused as not JSON, and nothing of it is kept."""
    d = dossier(14, status=2, TaiLieuNop=[{"TepDinhKemId": "1", "TenTepDinhKem": "giay-chung-sinh.pdf", "Trang": 0}])
    body = json.dumps(d).replace('"Trang": 0', f'"Trang": {token}').encode()
    headers = {"Content-Type": "application/json"}
    r = hub.http.post("/v1/dossiers", content=body, headers=headers)
    assert_problem(r, 400, "malformed_json")
    assert token.lstrip("-") in r.json()["detail"]
    assert_problem(hub.http.get(f"/v1/dossiers/{d['MaHoSo']}"), 404, "dossier_not_found")
    fixed = body.replace(token.encode(), b"3")
    assert hub.http.post("/v1/dossiers", content=fixed, headers=headers).status_code == 202  # a number JSON has


def test_a_nul_in_the_url_is_400_not_a_database_error(hub: Hub) -> None:
    """PostgreSQL takes no NUL in a string: a path parameter or query value holding one (`%00`) reached the query
    and came back 500 (a payment's reference, a consent's). Now it is refused before anything runs."""
    code = dossier(13)["MaHoSo"]
    for method, path in (
        ("GET", "/v1/payments/PAY%00X"),
        ("GET", "/v1/payments/PAY%00X/receipt"),
        ("POST", "/v1/consents/cs-%00/revoke"),
        ("GET", f"/v1/dossiers/{code}%00"),
        ("GET", "/v1/dossiers?overdue=true&limit=%00"),
        ("GET", "/v1/forms?x=%00"),
    ):
        r = hub.http.request(method, path)
        assert_problem(r, 400, "nul_in_url")
        assert "%00" in r.json()["detail"]
    assert hub.http.get("/v1/payments/PAY-none").json()["code"] == "payment_not_found"  # without one: as before


def test_a_body_not_sent_as_json_is_415_saying_so(hub: Hub) -> None:
    """`curl -d` sends a form unless told otherwise: the client learns what to send, and nothing is written."""
    body = json.dumps(step(dossier(12)["MaHoSo"], 4)).encode()
    for media in ("application/x-www-form-urlencoded", "text/plain; charset=utf-8", "application/xml"):
        r = hub.http.post("/v1/dossiers", content=json.dumps(dossier(12)).encode(), headers={"Content-Type": media})
        assert_problem(r, 415, "unsupported_media_type")
        assert "application/json" in r.json()["detail"] and media.split(";")[0] in r.json()["detail"]
    r = hub.http.post(
        f"/v1/dossiers/{dossier(12)['MaHoSo']}/progress", content=body, headers={"Content-Type": "text/plain"}
    )
    assert_problem(r, 415, "unsupported_media_type")
    assert hub.http.get(f"/v1/dossiers/{dossier(12)['MaHoSo']}").status_code == 404
    # a compressed body is said to be one (it was "malformed JSON"), with what hub takes
    import gzip

    packed = gzip.compress(json.dumps(dossier(12)).encode())
    r = hub.http.post(
        "/v1/dossiers", content=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert_problem(r, 415, "unsupported_content_encoding")
    assert r.headers["accept-encoding"] == "identity" and "gzip" in r.json()["detail"]
    misused = {"Content-Type": "application/json", "Content-Encoding": "UTF-8"}  # no compression: taken as before
    assert hub.http.post("/v1/dossiers", content=json.dumps(dossier(13)).encode(), headers=misused).status_code == 202
    # JSON under its structured-syntax suffix is JSON
    r = hub.http.post("/v1/dossiers", json=dossier(12), headers={"Content-Type": "application/vnd.dvc+json"})
    assert r.status_code == 202, r.text


def test_a_json_body_with_a_byte_order_mark_is_taken(hub: Hub) -> None:
    """.NET's default UTF-8 writers put a BOM before the JSON; one-stop systems built on it are served all the same."""
    d = dossier(15)
    body = b"\xef\xbb\xbf" + json.dumps(d, ensure_ascii=False).encode()
    r = hub.http.post("/v1/dossiers", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 202, r.text
    assert hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["dossier"]["ChuHoSo"] == d["ChuHoSo"]


def test_oversized_body_is_413(hub: Hub) -> None:
    d = dossier(9, GhiChu="x" * (hub.settings.max_body_bytes + 10))
    problem = assert_problem(hub.http.post("/v1/dossiers", json=d), 413, "body_too_large")
    assert problem["title"] == HTTPStatus.REQUEST_ENTITY_TOO_LARGE.phrase  # the kind of problem; the limit is in detail
    assert str(hub.settings.max_body_bytes) in problem["detail"]
    # also when the client streams without Content-Length
    big = json.dumps(d).encode()
    r = hub.http.post(
        "/v1/dossiers",
        content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(r, 413, "body_too_large")
    assert rows(hub)["dossiers"] == 0


def test_authentication_and_agency_authorization(hub: Hub, creds: Creds) -> None:
    d = dossier(10)
    anon = httpx.post(f"{hub.url}/v1/dossiers", json=d)
    assert_problem(anon, 401, "unauthenticated")
    wrong = httpx.post(f"{hub.url}/v1/dossiers", json=d, headers={"X-API-Key": "nope"})
    assert_problem(wrong, 401, "invalid_api_key")
    bearer = httpx.post(f"{hub.url}/v1/dossiers", json=d, headers={"Authorization": f"Bearer {creds.api_key}"})
    assert bearer.status_code == 202
    basic = httpx.post(f"{hub.url}/v1/dossiers", json=dossier(13), headers={"Authorization": "Basic eDp5"})
    assert_problem(basic, 401, "unauthenticated")  # not a scheme hub knows: no key sent
    # the docs (and generated clients) know both ways in: either scheme, not both
    spec = httpx.get(f"{hub.url}/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer", "CitizenIdToken"}
    assert spec["paths"]["/v1/dossiers"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": ["hub:dossiers"]}]
    # and what errors are: a Problem as application/problem+json, not FastAPI's default HTTPValidationError
    refused = spec["paths"]["/v1/dossiers"]["post"]["responses"]
    assert "422" not in refused and "HTTPValidationError" not in spec["components"]["schemas"]
    assert refused["4XX"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert spec["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "code"]
    # a citizen's own data: their ID token from the identity provider, never a client system's key
    assert spec["paths"]["/v1/citizens/me/data-usage"]["get"]["security"] == [{"CitizenIdToken": []}]
    mine = [op for path, ops in spec["paths"].items() if path.startswith("/v1/citizens/me/") for op in ops.values()]
    assert len(mine) == 7  # data usage, consents (list, give, withdraw), dossiers (list, one), documents
    assert all(op["security"] == [{"CitizenIdToken": []}] and op["tags"] == ["citizens"] for op in mine)
    other = httpx.Client(base_url=hub.url, headers={"X-API-Key": creds.other_key})
    assert_problem(other.post("/v1/dossiers", json=dossier(11)), 403, "agency_not_allowed")
    assert_problem(other.get(f"/v1/dossiers/{d['MaHoSo']}"), 403, "agency_not_allowed")
    code = d["MaHoSo"]
    assert_problem(other.post(f"/v1/dossiers/{code}/progress", json=step(code, 4)), 403, "agency_not_allowed")
    ok_other = other.post("/v1/dossiers", json=dossier(12, agency=OTHER_AGENCY))
    assert ok_other.status_code == 202
    assert rows(hub)["dossiers"] == 2


def test_answers_are_what_the_openapi_document_says(hub: Hub) -> None:
    """A client generated from /openapi.json parses hub's answers: 202s as `Accepted`, errors as `Problem`."""
    from jsonschema import Draft202012Validator

    spec = hub.http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    accepted, problem = Draft202012Validator(schemas["Accepted"]), Draft202012Validator(schemas["Problem"])
    assert schemas["Accepted"]["additionalProperties"] is False
    d = dossier(16)
    answers = [
        hub.http.post("/v1/dossiers", json=d),
        hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 4)),
    ]
    for r in answers:
        assert r.status_code == 202 and list(accepted.iter_errors(r.json())) == [], r.text
    refused = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 1))
    assert refused.status_code == 409 and list(problem.iter_errors(refused.json())) == [], refused.text


def test_a_key_is_rotated_without_a_moment_refused(hub_factory: HubFactory, creds: Creds) -> None:
    """During a rotation hub takes the client's key and its next one, as the same client; after it, the old one
    is refused."""
    import secrets

    from tests.conftest import client_systems

    new_key = secrets.token_urlsafe(24)
    first, *others = client_systems(creds)
    during = hub_factory(clients=[first.model_copy(update={"next_api_key": SecretStr(new_key)}), *others])
    d = dossier(14)
    for n, key in enumerate((creds.api_key, new_key)):
        r = httpx.post(f"{during.url}/v1/dossiers", json=d, headers={"X-API-Key": key, "Idempotency-Key": f"k{n}"})
        assert r.status_code == 202, r.text
    events = httpx.get(f"{during.url}/v1/dossiers/{d['MaHoSo']}", headers={"X-API-Key": new_key}).json()["events"]
    assert [e["client"] for e in events] == ["onestop-hcm", "onestop-hcm"]  # one client, whichever key
    after = hub_factory(clients=[first.model_copy(update={"api_key": SecretStr(new_key)}), *others])
    overdue = f"{after.url}/v1/dossiers?overdue=true"
    assert httpx.get(overdue, headers={"X-API-Key": new_key}).status_code == 200
    assert_problem(httpx.get(overdue, headers={"X-API-Key": creds.api_key}), 401, "invalid_api_key")


def test_unknown_dossier_is_404(hub: Hub) -> None:
    code = "000.00.17.H56-241015-9999"
    assert assert_problem(hub.http.get(f"/v1/dossiers/{code}"), 404, "dossier_not_found")["title"] == "Not found"
    assert_problem(hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, 4)), 404, "dossier_not_found")
    bad = assert_problem(hub.http.get("/v1/dossiers/not-a-code"), 422, "invalid_dossier_code")
    assert bad["title"] == "Invalid identifier"
    assert_problem(hub.http.get("/v1/nothing-here"), 404, "not_found")


def test_progress_for_another_dossier_in_body_is_refused(hub: Hub) -> None:
    d = dossier(13)
    hub.http.post("/v1/dossiers", json=d)
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step("000.00.17.H56-241015-0001", 4))
    assert_problem(r, 409, "dossier_code_mismatch")


def test_openapi_and_health(hub: Hub) -> None:
    spec = hub.http.get("/openapi.json").json()
    # one operationId per operation: generated clients (openapi-generator, NSwag) fail on duplicates
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert "/v1/dossiers" in spec["paths"] and "/v1/dossiers/{code}/progress" in spec["paths"]
    assert hub.http.get("/healthz").json()["status"] == "ok"
    ready = hub.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    assert ready.json()["workers"] == []  # this hub runs no worker: ready to take requests, and operators see it
    # each peer's latest exchange by outcome (informative), read by index seeks, not a scan of the whole record
    from hub.domain.dates import utcnow
    from hub.store.models import Exchange

    with hub.runtime.sessions.begin() as s:
        for peer, outcome in (("national_portal", "ok"), ("pki", "retryable"), ("national_portal", "permanent")):
            s.add(Exchange(at=utcnow(), peer=peer, operation="x", correlation_id="c", request_digest="d",
                           duration_ms=1.0, outcome=outcome))  # fmt: skip
    peers = hub.http.get("/readyz").json()["peers"]
    assert set(peers) == {"national_portal", "pki"}
    assert set(peers["national_portal"]) == {"last_ok", "last_permanent"} and set(peers["pki"]) == {"last_retryable"}
    assert hub.http.get("/healthz").headers["x-correlation-id"]
    # load balancers' and uptime monitors' probes may send HEAD: the status without the body
    for path in ("/healthz", "/readyz"):
        head = hub.http.head(path)
        assert head.status_code == 200 and head.content == b"", path


def test_head_answers_what_get_would_without_the_content(hub: Hub) -> None:
    """RFC 9110 §9.3.2 for every resource, not only the probes: `curl -I`, link checkers and monitors ask with
    HEAD; what they learn is what GET would say (status, type, length), the content left out."""
    hub.http.post("/v1/dossiers", json=dossier(78))
    code = dossier(78)["MaHoSo"]
    for path in ("/metrics", "/docs", "/openapi.json", "/v1/forms", f"/v1/dossiers/{code}", "/ops/login", "/"):
        got, head = hub.http.get(path), hub.http.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if path != "/metrics":  # the metrics change between the two requests (the GET itself is counted)
            assert head.headers["content-length"] == got.headers["content-length"], path
    # what GET refuses HEAD refuses alike: an unknown dossier, a POST-only path
    assert hub.http.head(f"/v1/dossiers/{dossier(79)['MaHoSo']}").status_code == 404
    assert hub.http.head("/v1/prefill").status_code == 405
    # and a 405 says which methods the resource takes (RFC 9110 §15.5.6), all of them
    assert hub.http.delete("/v1/dossiers").headers["allow"] == "GET, HEAD, POST"
    assert hub.http.get("/v1/prefill").headers["allow"] == "POST"
    # how long hub itself took, for browsers' developer tools and for clients telling hub's time from the network's
    took = hub.http.post("/v1/dossiers", json=dossier(77)).headers["server-timing"]
    assert took.startswith("app;dur=") and float(took.split("=")[1]) > 0


def test_metrics_report_outbox_exchanges_and_requests(hub: Hub) -> None:
    hub.http.post("/v1/dossiers", json=dossier(20))
    text = hub.http.get("/metrics").text
    assert 'hub_outbox_messages{destination="national_portal",state="pending"} 1.0' in text
    assert 'hub_outbox_oldest_pending_age_seconds{destination="national_portal"}' in text
    assert 'hub_http_request_duration_seconds_count{method="POST",route="/v1/dossiers",status="202"} 1.0' in text
    for line in text.splitlines():
        assert "SoGiayTo" not in line and "MaHoSo" not in line
        assert not line.split("{")[0].split(" ")[0].endswith("_created")  # no second series beside each counter


def test_metrics_say_how_long_ago_each_scheduled_job_last_succeeded(hub: Hub) -> None:
    """A job failing at every run, or no longer run by any worker, is seen from outside (alert
    HubScheduledJobStale): the age of its last success beside its interval; one that never succeeded is as old as
    its first run, and one never run at all as the schedule (the first run of any job)."""
    import re
    from datetime import timedelta

    from hub.domain.dates import utcnow
    from hub.store.models import JobRun

    assert hub.runtime.anchor_audit_log() is not None  # a job that succeeds
    failed_at = utcnow() - timedelta(hours=2)
    with hub.runtime.sessions.begin() as s:  # as hub records a run whose work raised
        s.add(JobRun(name="reconcile", started_at=failed_at, finished_at=failed_at, outcome="error", detail={}))
    text = hub.http.get("/metrics").text

    def sample(name: str, task: str) -> float | None:
        found = re.search(rf'^{name}{{task="{task}"}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else None

    assert sample("hub_scheduled_job_interval_seconds", "reconcile") == hub.settings.reconcile_interval
    assert sample("hub_scheduled_job_interval_seconds", "poll_portal") == hub.settings.portal_poll_interval
    assert (sample("hub_scheduled_job_last_success_age_seconds", "anchor_audit_log") or 99) < 60
    assert 7190 < (sample("hub_scheduled_job_last_success_age_seconds", "reconcile") or 0) < 7300
    never = sample("hub_scheduled_job_last_success_age_seconds", "poll_edoc_status")  # never run, while reconcile was
    assert never is not None and 7190 < never < 7300


def test_one_batch_files_walks_and_repeats_in_order(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    """Requests committed in one transaction (group commit) see each other as if they came one by one: a dossier
    filed and moved twice in the same batch ends in the last state with its events in order, each of its outbox
    rows points at it, a key repeated in the batch is answered from its first use, and a dossier filed earlier
    moves too. (The batch is made by holding the commit leader while the requests queue, in a known order.)"""
    import threading
    import time

    from hub.services.schemas import DossierIn, ProgressIn

    service = hub.runtime.dossiers
    client = hub.settings.clients[0]
    assert hub.http.post("/v1/dossiers", json=dossier(300)).status_code == 202
    old, new = dossier(300)["MaHoSo"], dossier(301)["MaHoSo"]
    third = step(new, 5)  # one body (a step carries its time): sent twice in the batch, once more after it
    calls: list[tuple[str, Any, str]] = [
        ("sync", DossierIn.model_validate(dossier(301)), "b-1"),
        ("progress", ProgressIn.model_validate(step(new, 4)), "b-2"),
        ("progress", ProgressIn.model_validate(third), "b-3"),
        ("progress", ProgressIn.model_validate(third), "b-3"),  # a repeat of the one before
        ("progress", ProgressIn.model_validate(step(old, 4)), "b-4"),
    ]
    answers: list[Any] = [None] * len(calls)
    caplog.set_level("INFO", logger="hub.store.group_commit")
    group = service._commands
    threads = []
    with group._leader:  # no batch is written until every request has queued
        for i, (kind, body, key) in enumerate(calls):

            def run(i: int = i, kind: str = kind, body: Any = body, key: str = key) -> None:
                if kind == "sync":
                    answers[i] = service.sync_dossier(client, body, idempotency_key=key, correlation_id="t")
                else:
                    answers[i] = service.add_progress(
                        client, body.MaHoSo, body, idempotency_key=key, correlation_id="t"
                    )

            threads.append(threading.Thread(target=run))
            threads[-1].start()
            while len(group._queue) < i + 1:  # queued in this order
                time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert "writing them one by one" not in caplog.text  # the batch was not refused and redone alone
    assert [a.status_code for a in answers] == [202] * 5
    assert [a.body["seq"] for a in answers] == [1, 2, 3, 3, 2]
    assert answers[3].replayed and answers[3].body == answers[2].body
    got = hub.http.get(f"/v1/dossiers/{new}").json()
    assert got["TrangThaiHoSo"] == 5
    assert [(e["seq"], e["TrangThaiHoSo"]) for e in got["events"]] == [(1, 2), (2, 4), (3, 5)]
    assert all(len(e["deliveries"]) == 1 for e in got["events"])  # each outbox row found by its dossier's id
    assert hub.http.get(f"/v1/dossiers/{old}").json()["TrangThaiHoSo"] == 4
    replay = hub.http.post(f"/v1/dossiers/{new}/progress", json=third, headers={"Idempotency-Key": "b-3"})
    assert replay.json()["event_id"] == answers[2].body["event_id"]  # the key was stored with the batch


def test_the_same_step_sent_at_once_without_a_key_is_one_change(hub: Hub) -> None:
    """A one-stop system that fires the same step on several connections at once (no key): whether the copies share
    a commit or not, the dossier gets one event and the portal one message."""
    from concurrent.futures import ThreadPoolExecutor

    d = dossier(43)
    code = d["MaHoSo"]
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    same = step(code, 4)
    key = hub.http.headers["X-API-Key"]

    def post(_: int) -> tuple[int, Any]:
        with httpx.Client(base_url=str(hub.http.base_url), headers={"X-API-Key": key}) as c:
            r = c.post(f"/v1/dossiers/{code}/progress", json=same)
            return r.status_code, r.json().get("event_id")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(12)))
    assert {a[0] for a in answers} == {202} and len({a[1] for a in answers}) == 1
    assert [e["TrangThaiHoSo"] for e in hub.http.get(f"/v1/dossiers/{code}").json()["events"]] == [2, 4]
    assert rows(hub)["outbox"] == 2


def test_concurrent_requests_share_commits_but_each_is_judged_alone(hub: Hub) -> None:
    """A burst from many connections: requests are committed together (group commit), yet a refused one leaves
    nothing behind, the accepted ones all land, each dossier's events keep their order, and the same key sent
    on several connections at once is done once."""
    from concurrent.futures import ThreadPoolExecutor

    codes = [dossier(100 + i)["MaHoSo"] for i in range(8)]
    for i in range(8):
        assert hub.http.post("/v1/dossiers", json=dossier(100 + i)).status_code == 202
    key = hub.http.headers["X-API-Key"]
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
    for code in codes:
        requests.append((f"/v1/dossiers/{code}/progress", step(code, 4), {}))
        requests.append((f"/v1/dossiers/{code}/progress", step(code, 10), {}))  # 2 → 10: refused (409)
    for _ in range(6):  # one step sent six times at once under one key
        requests.append((f"/v1/dossiers/{codes[0]}/progress", step(codes[0], 5), {"Idempotency-Key": "burst"}))
    before = rows(hub)

    def post(req: tuple[str, dict[str, Any], dict[str, str]]) -> tuple[int, dict[str, Any]]:
        with httpx.Client(base_url=str(hub.http.base_url), headers={"X-API-Key": key, **req[2]}) as c:
            r = c.post(req[0], json=req[1])
            return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, requests))
    statuses = [a[0] for a in answers]
    # a refused 2 → 10 is 409 unless the dossier's 2 → 4 committed first (then 4 → 10 is refused too): never 202
    assert all(answers[2 * i][0] == 202 for i in range(8))
    assert all(answers[2 * i + 1][0] == 409 for i in range(8)), statuses
    burst = answers[16:]
    assert {a[0] for a in burst} <= {202, 409} and len({a[1].get("event_id") for a in burst if a[0] == 202}) <= 1
    after = rows(hub)
    accepted = 8 + (1 if any(a[0] == 202 for a in burst) else 0)
    assert after["events"] - before["events"] == accepted  # nothing of a refused request was written
    assert after["outbox"] - before["outbox"] == accepted
    for code in codes:
        got = hub.http.get(f"/v1/dossiers/{code}").json()
        assert [e["seq"] for e in got["events"]] == list(range(1, len(got["events"]) + 1))


def test_a_batch_takes_each_dossier_or_refuses_it_alone(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """A one-stop system connects with its open dossiers in DongBoHoSoMC's `data` array: a malformed item, one of an
    agency it may not act for and a refused transition are each answered with their own problem, at their place,
    and change nothing; the rest are taken, a dossier's later change after its earlier one, and reach the portal."""
    hub = hub_factory()
    known = dossier(60, status=2)
    assert hub.http.post("/v1/dossiers", json=known).status_code == 202
    a, b = dossier(61, status=2), dossier(62, status=1)
    items = [
        a,
        {**dossier(63), "MaHoSo": "not-a-code"},
        dossier(64, agency=OTHER_AGENCY),
        b,
        {**a, "TrangThaiHoSo": 4},  # a's next change, in the same batch
        {**known, "TrangThaiHoSo": 10},  # 2 -> 10 is not a transition
        {**dossier(65), "NgayHenTra": "20000101080000"},  # an appointment before it was received
    ]
    r = hub.http.post("/v1/dossiers/batch", json={"isUpdating": False, "data": items})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["status"] for x in answer["results"]] == [202, 422, 403, 202, 202, 409, 422]
    assert [x["index"] for x in answer["results"]] == list(range(7))
    assert (answer["accepted"], answer["refused"]) == (3, 4)
    codes = [x["problem"]["code"] for x in answer["results"] if x["status"] != 202]
    assert codes == ["invalid_dossier_code", "agency_not_allowed", "invalid_transition", "date_before_receipt"]
    assert answer["results"][2]["MaHoSo"] == items[2]["MaHoSo"] and answer["results"][4]["TrangThaiHoSo"] == 4
    got = hub.http.get(f"/v1/dossiers/{a['MaHoSo']}").json()
    assert [e["TrangThaiHoSo"] for e in got["events"]] == [2, 4]
    assert hub.http.get(f"/v1/dossiers/{known['MaHoSo']}").json()["TrangThaiHoSo"] == 2  # the refusal changed nothing
    assert hub.wait_idle() == {"delivered": 4}
    sent = [x["body"]["data"][0]["MaHoSo"] for x in portal.get("/_sandbox/received").json()["items"]]
    assert sent.count(a["MaHoSo"]) == 2 and sent.count(b["MaHoSo"]) == 1


def test_a_batch_sent_again_with_its_key_creates_nothing(hub: Hub) -> None:
    items = [dossier(70 + i, status=2) for i in range(5)]
    first = hub.http.post("/v1/dossiers/batch", json={"data": items}, headers={"Idempotency-Key": "open-1"})
    again = hub.http.post("/v1/dossiers/batch", json={"data": items}, headers={"Idempotency-Key": "open-1"})
    assert first.json()["accepted"] == again.json()["accepted"] == 5
    assert [x["event_id"] for x in again.json()["results"]] == [x["event_id"] for x in first.json()["results"]]
    assert all(x["replayed"] for x in again.json()["results"])
    assert not any(x["replayed"] for x in first.json()["results"])
    with hub.runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(StatusEvent)) == 5
    # the same key with other dossiers: each changed item is refused as a reused key, the same ones replayed
    changed = [items[0], {**items[1], "TrangThaiHoSo": 4}]
    mixed = hub.http.post("/v1/dossiers/batch", json={"data": changed}, headers={"Idempotency-Key": "open-1"})
    assert [x["status"] for x in mixed.json()["results"]] == [202, 409]
    assert mixed.json()["results"][1]["problem"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("data", [[], [{}] * 201, "not a list"])
def test_a_batch_that_is_not_one_is_refused_whole(hub: Hub, data: Any) -> None:
    r = hub.http.post("/v1/dossiers/batch", json={"data": data})
    assert_problem(r, 422, r.json()["code"])
    with hub.runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Dossier)) == 0


def test_a_batch_of_steps_applies_each_dossiers_steps_in_order_and_refuses_alone(hub: Hub) -> None:
    """A one-stop system catching up after its own outage: steps of several dossiers, each dossier's in order; a
    step of an unknown dossier, a malformed one and a refused transition are refused each at its place."""
    a, b = dossier(80, status=2), dossier(81, status=2)
    for d in (a, b):
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    items = [
        step(a["MaHoSo"], 4),
        step(b["MaHoSo"], 5, "Bổ sung tờ khai"),
        step(dossier(82)["MaHoSo"], 4),  # never synced
        {**step(a["MaHoSo"], 9), "TrangThai": "nine"},
        step(a["MaHoSo"], 9),
        step(b["MaHoSo"], 10),  # 5 -> 10 is not a transition
    ]
    r = hub.http.post("/v1/progress/batch", json={"data": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [202, 202, 404, 422, 202, 409]
    assert [x["problem"]["code"] for x in results if x["status"] != 202] == [
        "dossier_not_found", "invalid_status", "invalid_transition"
    ]  # fmt: skip
    assert [e["TrangThaiHoSo"] for e in hub.http.get(f"/v1/dossiers/{a['MaHoSo']}").json()["events"]] == [2, 4, 9]
    assert hub.http.get(f"/v1/dossiers/{b['MaHoSo']}").json()["TrangThaiHoSo"] == 5


def test_a_batch_sent_again_without_a_key_creates_nothing_either(hub: Hub) -> None:
    """A client that lost the answer to its batch (a timeout, hub killed mid-way) sends it again with no key: each
    item that is its dossier's latest change over again is answered as before (ADR 0021), nothing is created."""
    items = [dossier(90 + i, status=2) for i in range(4)]
    items.append({**items[0], "TrangThaiHoSo": 4})
    first = hub.http.post("/v1/dossiers/batch", json={"data": items}).json()
    again = hub.http.post("/v1/dossiers/batch", json={"data": items[1:]}).json()  # the first item is no longer latest
    assert first["accepted"] == 5 and again["accepted"] == 4
    assert all(x["replayed"] for x in again["results"])
    assert [x["event_id"] for x in again["results"]] == [x["event_id"] for x in first["results"][1:]]
    with hub.runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(StatusEvent)) == 5
