"""The procedure catalogue synced from the portal, and NgayHenTra derived from it in working days."""

from __future__ import annotations

import httpx
import pytest

from hub.sandbox import contracts
from tests.conftest import Hub, HubFactory
from tests.helpers import dossier

CIVIL_STATUS = {"1.001193", "1.000656", "1.000894", "2.000635", "1.004873", "2.000815", "1.004837", "1.004845"}


def test_catalogue_data_satisfies_its_schema() -> None:
    items = contracts.load_json("national_portal/data/procedures.json")["data"]
    assert len(items) == 16
    for item in items:
        assert contracts.errors("national_portal/procedure.schema.json", item) == []
    names = " ".join(i["TenTTHC"] for i in items)
    assert names.count("khai sinh") >= 4 and names.count("khai tử") >= 3 and names.count("kết hôn") >= 3


def test_sync_stores_the_portals_catalogue(hub_factory: HubFactory, portal: httpx.Client) -> None:
    hub: Hub = hub_factory(start_worker=False)
    assert hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t") == {"stored": 16, "skipped": 0}
    assert hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t") == {"stored": 16, "skipped": 0}
    known = {p["MaTTHC"]: p for p in hub.runtime.catalogue.all()}
    assert set(known) >= CIVIL_STATUS
    assert known["1.004873"]["ThoiHanGiaiQuyet"] == 3
    assert all(isinstance(f["Gia"], int) for p in known.values() for f in p["PhiLePhi"])


def test_a_catalogue_written_as_the_portals_look_ups_write_it_is_taken_the_same(
    hub_factory: HubFactory, portal: httpx.Client
) -> None:
    """The portal's look-ups answer in `result` with upper-case names, the time limit per channel and unit
    (contracts/README.md): hub takes the limit counted in working days (not the online channel's hours), the
    fees, the field — the same catalogue as from the contract's shape."""
    hub = hub_factory()
    assert hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t") == {"stored": 16, "skipped": 0}
    before = {p["MaTTHC"]: (p["TenTTHC"], p["ThoiHanGiaiQuyet"], p["PhiLePhi"]) for p in hub.runtime.catalogue.all()}
    portal.post("/_sandbox/faults", json={"catalogue_as_portal": True})
    assert hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t") == {"stored": 16, "skipped": 0}
    after = {p["MaTTHC"]: (p["TenTTHC"], p["ThoiHanGiaiQuyet"], p["PhiLePhi"]) for p in hub.runtime.catalogue.all()}
    assert after == before
    assert hub.runtime.catalogue.entry("1.001193")["MaLinhVuc"] == "HT"


def test_a_portal_procedure_without_a_limit_in_working_days_is_skipped_not_guessed() -> None:
    from hub.services.catalogue import as_contract

    hours_only = {
        "MATTHC": "1.001193",
        "TENTTHC": "Đăng ký khai sinh",
        "CACHTHUCTHUCHIEN": [{"KENH": 1, "THOIGIAN": [{"THOIGIANGIAIQUYET": 8, "DONVITINH": "Giờ"}]}],
    }
    with pytest.raises(KeyError):
        as_contract(hours_only)
    half_day = {**hours_only, "CACHTHUCTHUCHIEN": [{"KENH": "1", "THOIGIAN": [
        {"THOIGIANGIAIQUYET": 0.5, "DONVITINH": "NGÀY LÀM VIỆC", "PHILEPHI": [{"SOTIEN": 8000.0, "MOTA": "Lệ phí"}]}
    ]}]}  # fmt: skip
    taken = as_contract(half_day)
    assert taken["ThoiHanGiaiQuyet"] == 1 and taken["PhiLePhi"] == [{"TenPhiLePhi": "Lệ phí", "Gia": 8000}]


def test_appointment_date_is_derived_in_working_days_across_tet(hub_factory: HubFactory, portal: httpx.Client) -> None:
    hub: Hub = hub_factory(start_worker=False)
    hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t")
    d = dossier(
        1, MaTTHC="1.004873", TenTTHC="Cấp Giấy xác nhận tình trạng hôn nhân", NgayTiepNhan="20260213093000"
    )  # Friday before Tết Bính Ngọ
    d.pop("NgayHenTra")
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    got = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()
    # three working days: 14-15 weekend, 16-20 Tết, 21-22 weekend -> 23, 24, 25 February
    assert got["dossier"]["NgayHenTra"] == "20260225093000"
    # the derived date is what the portal will receive
    with hub.runtime.sessions() as s:
        from sqlalchemy import select

        from hub.store.models import OutboxMessage

        payload = s.scalars(select(OutboxMessage.payload)).one()
    assert payload["data"][0]["NgayHenTra"] == "20260225093000"
    # a given NgayHenTra is kept; an unknown procedure gets none
    given = dossier(2, NgayTiepNhan="20260213093000", NgayHenTra="20260301080000")
    hub.http.post("/v1/dossiers", json=given)
    assert hub.http.get(f"/v1/dossiers/{given['MaHoSo']}").json()["dossier"]["NgayHenTra"] == "20260301080000"
    unknown = dossier(3, MaTTHC="9.999999")
    unknown.pop("NgayHenTra")
    hub.http.post("/v1/dossiers", json=unknown)
    assert "NgayHenTra" not in hub.http.get(f"/v1/dossiers/{unknown['MaHoSo']}").json()["dossier"]


def test_a_provinces_own_days_off_move_the_appointment(hub_factory: HubFactory, portal: httpx.Client) -> None:
    """A province's own day off (HUB_CALENDAR_DAYS_OFF) and a swapped working Saturday (HUB_CALENDAR_WORKING_DAYS)
    count in the appointment date hub derives."""
    from datetime import date

    hub: Hub = hub_factory(
        start_worker=False, calendar_days_off=[date(2026, 2, 24)], calendar_working_days=[date(2026, 3, 7)]
    )
    hub.runtime.catalogue.sync(hub.runtime.portal, correlation_id="t")
    d = dossier(1, MaTTHC="1.004873", TenTTHC="Cấp Giấy xác nhận tình trạng hôn nhân", NgayTiepNhan="20260213093000")
    d.pop("NgayHenTra")
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    # three working days after Tết: 23 February, (24 off), 25, 26
    assert hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["dossier"]["NgayHenTra"] == "20260226093000"
    assert hub.runtime.dossiers.calendar.is_working_day(date(2026, 3, 7))  # a Saturday, worked
