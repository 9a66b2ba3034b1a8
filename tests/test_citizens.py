"""A citizen, signed in with their ID token, looks up their own dossiers (tra cứu hồ sơ): which ones, where each
stands, what it waits for from them (a fee, with its pay link), its steps and results — and nobody else's."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hub.sandbox.common import ServerThread
from hub.sandbox.one_stop import _national
from tests.conftest import PAY_PARTNER, PAY_SECRET, Hub, HubFactory
from tests.helpers import console_as, console_search, dossier, step
from tests.pki_helpers import Trust
from tests.test_prefill import citizen_token

ME, SOMEONE, CORRECTED = "079190000123", "079190000456", "079190000789"
FEES = [{"TenPhiLePhi": "Lệ phí cấp bản sao trích lục", "MaPhiLePhi": "LPTL", "HinhThucThu": 1, "Gia": 8000}]


@pytest.fixture
def hub(hub_factory: HubFactory, pay_server: ServerThread, platform: httpx.Client, trust: Trust) -> Hub:
    # `platform`: the payment sandbox reset first — a test run before in this process (the console's lost
    # callback) may have left it dropping its callbacks: this test then waited for a payment that never came back
    h = hub_factory(
        payment_dvc_url=pay_server.url,
        payment_dvc_partner=PAY_PARTNER,
        payment_dvc_secret=PAY_SECRET,
        citizen_idp_issuer=f"{trust.server.url}/idp",
    )
    h.runtime.payments.callback_url = lambda name: f"{h.server.url}/v1/payments/callbacks/{name}"
    return h


def as_citizen(hub: Hub, token: str | None, path: str = "") -> httpx.Response:
    """As the citizen's browser or app calls it: no client system's key, only the citizen's sign-in."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{hub.server.url}/v1/citizens/me/dossiers{path}", headers=headers, timeout=10)


def documented(hub: Hub, model: str, answer: dict[str, Any]) -> None:
    """The answer is what the OpenAPI document says it is, for portals' clients generated from it."""
    from jsonschema import Draft202012Validator

    spec = hub.http.get("/openapi.json").json()
    schema = Draft202012Validator({"$ref": f"#/components/schemas/{model}", "components": spec["components"]})
    assert list(schema.iter_errors(answer)) == []


def progress(hub: Hub, code: str, *statuses: int) -> None:
    for status in statuses:
        r = hub.http.post(f"/v1/dossiers/{code}/progress", json=step(code, status, f"Chuyển sang bước {status}"))
        assert r.status_code == 202, r.text


def test_a_signed_in_citizen_follows_their_dossiers_and_pays_the_fee_asked(hub: Hub, trust: Trust) -> None:
    extract = dossier(1, MaTTHC="2.000635", TenTTHC="Cấp bản sao trích lục khai sinh", DanhSachLePhi=FEES,
                      SoGiayToChuHoSo=ME)  # fmt: skip
    birth = dossier(2, SoGiayToChuHoSo=ME)
    theirs = dossier(3, SoGiayToChuHoSo=SOMEONE)
    for d in (extract, birth, theirs):
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    progress(hub, extract["MaHoSo"], 4, 6)
    mine, other = citizen_token(trust, ME), citizen_token(trust, SOMEONE)

    listed = as_citizen(hub, mine).json()
    assert listed["total"] == 2 and [i["MaHoSo"] for i in listed["items"]] == [extract["MaHoSo"], birth["MaHoSo"]]
    assert [i["MaHoSo"] for i in as_citizen(hub, other).json()["items"]] == [theirs["MaHoSo"]]
    first = listed["items"][0]
    assert (first["TrangThaiHoSo"], first["status_key"], first["status_name"]) == (
        6, "payment_requested", "Yêu cầu thực hiện nghĩa vụ tài chính"
    )  # fmt: skip
    assert first["waiting_for"] == "payment" and first["payment"] is None  # asked, no pay link made yet
    assert first["NgayHenTra"].endswith("+07:00") and first["overdue_working_days"] == 0

    payment = hub.http.post("/v1/payments", json={"MaHoSo": extract["MaHoSo"]}).json()
    shown = as_citizen(hub, mine).json()["items"][0]["payment"]
    assert (shown["amount"], shown["state"], shown["pay_url"]) == (8000, "pending", payment["pay_url"])

    detail = as_citizen(hub, mine, f"/{extract['MaHoSo']}")
    assert detail.status_code == 200
    body = detail.json()
    documented(hub, "CitizenDossier", body)
    documented(hub, "CitizenDossierList", as_citizen(hub, mine).json())
    assert [(h["kind"], h["TrangThaiHoSo"]) for h in body["history"]] == [("status", 2), ("step", 4), ("step", 6)]
    assert (
        body["history"][2]["unit"] == "Bộ phận Tư pháp - Hộ tịch" and body["history"][2]["note"] == "Chuyển sang bước 6"
    )
    assert body["fees"] == [{"name": "Lệ phí cấp bản sao trích lục", "amount": 8000}]
    text = json.dumps(body, ensure_ascii=False)
    for private in ("Lê Văn Tâm", extract["SoDienThoai"], "outbox", "onestop-hcm"):  # officer, contact, internals
        assert private not in text

    assert "Thanh toán thành công" in httpx.post(payment["pay_url"]).text
    deadline = time.monotonic() + 15  # waited for through the client system's view: the citizen's is rate-limited
    while (seen := hub.http.get(f"/v1/dossiers/{extract['MaHoSo']}").json())["TrangThaiHoSo"] != 4:
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    now = as_citizen(hub, mine, f"/{extract['MaHoSo']}").json()
    assert now["TrangThaiHoSo"] == 4, now
    assert now["waiting_for"] is None and now["payment"] is None
    assert [(p["state"], p["pay_url"]) for p in now["payments"]] == [("paid", None)]
    assert now["payments"][0]["paid_at"].endswith("+07:00") and now["updated_at"].endswith("+07:00")

    # another's dossier and one that does not exist are answered alike; nobody signed in: 401
    for code in (theirs["MaHoSo"], "000.00.17.H56-991231-9999"):
        refused = as_citizen(hub, mine, f"/{code}")
        assert refused.status_code == 404 and refused.json()["code"] == "dossier_not_found"
    assert as_citizen(hub, None).status_code == 401


def test_a_corrected_owner_id_moves_the_dossier_to_its_owner(hub: Hub, trust: Trust) -> None:
    """The one-stop officer typed the wrong ID number and corrects it (DongBoHoSoMC, isUpdating): the dossier
    leaves the first person's list and reaches its owner's, and the console finds it under the new number."""
    d = dossier(4, SoGiayToChuHoSo=ME)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    corrected = {**d, "SoGiayToChuHoSo": CORRECTED}
    assert hub.http.post("/v1/dossiers", json=corrected).status_code == 202
    assert as_citizen(hub, citizen_token(trust, ME)).json() == {"total": 0, "count": 0, "items": []}
    owner = as_citizen(hub, citizen_token(trust, CORRECTED)).json()
    assert [i["MaHoSo"] for i in owner["items"]] == [d["MaHoSo"]]
    operator = console_as(hub, "tran.van.an", "viewer")
    assert d["MaHoSo"] in console_search(operator, CORRECTED).text
    assert d["MaHoSo"] not in console_search(operator, ME).text


def test_late_dossiers_and_results_as_the_citizen_sees_them(hub: Hub, trust: Trust) -> None:
    """Past its appointment date an open dossier says by how many working days; a result is shown with its link
    only when the link is a safe one (a `javascript:` reference from a client system is not handed on)."""
    long_ago = datetime.now(UTC) - timedelta(days=30)
    late = dossier(5, SoGiayToChuHoSo=ME, NgayTiepNhan=_national(long_ago),
                   NgayHenTra=_national(long_ago + timedelta(days=3)))  # fmt: skip
    done = dossier(6, SoGiayToChuHoSo=ME)
    for d in (late, done):
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    issued = _national(datetime.now(UTC))
    results: list[dict[str, Any]] = [
        {"LoaiGiayTo": "trich_luc_khai_sinh", "TenGiayTo": "Trích lục khai sinh", "SoHieu": "TL-01", "NgayCap": issued,
         "DuongDanTaiLieu": "https://motcua.example.gov.vn/kq/TL-01.pdf"},
        {"LoaiGiayTo": "trich_luc_khai_sinh", "TenGiayTo": "Bản sao", "SoHieu": "TL-02", "NgayCap": issued,
         "DuongDanTaiLieu": "javascript:alert(document.cookie)"},
    ]  # fmt: skip
    progress(hub, done["MaHoSo"], 4)
    r = hub.http.post("/v1/dossiers", json={**done, "TrangThaiHoSo": 9, "DanhSachGiayToKetQua": results})
    assert r.status_code == 202, r.text
    mine = citizen_token(trust, ME)
    items = {i["MaHoSo"]: i for i in as_citizen(hub, mine).json()["items"]}
    assert items[late["MaHoSo"]]["overdue_working_days"] >= 15
    assert (
        items[done["MaHoSo"]]["waiting_for"] == "collection" and items[done["MaHoSo"]]["overdue_working_days"] is None
    )
    ready_detail = as_citizen(hub, mine, f"/{done['MaHoSo']}").json()
    documented(hub, "CitizenDossier", ready_detail)
    shown = ready_detail["results"]
    assert [(x["number"], x["link"]) for x in shown] == [
        ("TL-01", "https://motcua.example.gov.vn/kq/TL-01.pdf"), ("TL-02", None)
    ]  # fmt: skip
    assert shown[0]["issued_at"].endswith("+07:00")


def test_a_dossier_waiting_for_a_supplement_says_what_was_asked(hub: Hub, trust: Trust) -> None:
    """The citizen sees what to add in the agency's words (the step that asked), in the list and the dossier; once
    the supplement is in and processing goes on, nothing is asked any more."""
    d = dossier(7, SoGiayToChuHoSo=ME)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    wanted = "Yêu cầu bổ sung bản sao giấy chứng sinh có chứng thực"
    r = hub.http.post(f"/v1/dossiers/{d['MaHoSo']}/progress", json=step(d["MaHoSo"], 5, wanted))
    assert r.status_code == 202
    mine = citizen_token(trust, ME)
    [listed] = as_citizen(hub, mine).json()["items"]
    assert (listed["waiting_for"], listed["asked"]) == ("supplement", wanted)
    assert as_citizen(hub, mine, f"/{d['MaHoSo']}").json()["asked"] == wanted
    progress(hub, d["MaHoSo"], 4)
    [now] = as_citizen(hub, mine).json()["items"]
    assert (now["waiting_for"], now["asked"]) == (None, None)


def test_a_signed_in_citizen_sees_the_documents_issued_to_them(hub: Hub, trust: Trust) -> None:
    """The citizen's own store of results (once-only): those issued with their dossiers and those an agency
    indexed, each saying whether it is still valid; nobody else's."""
    d = dossier(8, SoGiayToChuHoSo=ME)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    progress(hub, d["MaHoSo"], 4)
    issued = _national(datetime.now(UTC) - timedelta(days=1))
    result = {"LoaiGiayTo": "trich_luc_khai_sinh", "TenGiayTo": "Trích lục khai sinh", "SoHieu": "TL-77",
              "NgayCap": issued, "DuongDanTaiLieu": "javascript:alert(1)"}  # fmt: skip
    assert hub.http.post("/v1/dossiers", json={**d, "TrangThaiHoSo": 9, "DanhSachGiayToKetQua": [result]}).is_success
    expired = {
        "holder_id": ME, "kind": "giay_xac_nhan_tinh_trang_hon_nhan", "title": "Giấy xác nhận tình trạng hôn nhân",
        "number": "XN-01", "issuer": d["MaHoSo"].split("-")[0], "issued_at": "2025-01-02T09:00:00+07:00",
        "valid_until": "2025-07-02T09:00:00+07:00", "reference": "https://motcua.example.gov.vn/kq/XN-01.pdf",
    }  # fmt: skip
    assert hub.http.post("/v1/documents", json=expired).status_code == 201
    assert hub.http.post("/v1/documents", json={**expired, "holder_id": SOMEONE, "number": "XN-02"}).is_success
    r = httpx.get(
        f"{hub.server.url}/v1/citizens/me/documents", headers={"Authorization": f"Bearer {citizen_token(trust, ME)}"}
    )
    assert r.status_code == 200
    body = r.json()
    documented(hub, "CitizenDocumentList", body)
    assert [(x["number"], x["valid"], x["reference"]) for x in body["items"]] == [
        ("TL-77", True, f"dossier:{d['MaHoSo']}"),  # the unsafe link replaced by the dossier
        ("XN-01", False, "https://motcua.example.gov.vn/kq/XN-01.pdf"),  # expired: no longer offered for reuse
    ]
    assert body["items"][0]["dossier_code"] == d["MaHoSo"] and body["items"][1]["valid_until"].endswith("+07:00")
