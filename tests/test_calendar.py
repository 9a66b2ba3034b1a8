"""Working days and due dates: weekends, Vietnamese public holidays including the lunar ones; overdue listing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.calendar import WorkingCalendar
from hub.domain.dates import VN_TZ, format_national, parse_national
from tests.api_helpers import assert_problem
from tests.conftest import OTHER_AGENCY, Creds, Hub, HubFactory
from tests.helpers import dossier, step

CAL = WorkingCalendar()


def test_weekends_and_fixed_holidays_are_not_working_days() -> None:
    assert CAL.is_working_day(date(2026, 11, 23))  # a Monday
    assert not CAL.is_working_day(date(2026, 11, 28))  # Saturday
    assert not CAL.is_working_day(date(2026, 11, 29))  # Sunday
    for fixed in (date(2026, 1, 1), date(2026, 4, 30), date(2026, 5, 1), date(2026, 9, 2)):
        assert not CAL.is_working_day(fixed), fixed


def test_lunar_holidays_tet_and_hung_kings() -> None:
    # Tết Bính Ngọ: lunar new year's day is 17 Feb 2026; Giỗ Tổ Hùng Vương (10/3 lunar) is 26 Apr 2026.
    for day in range(16, 21):
        assert not CAL.is_working_day(date(2026, 2, day)), day
    assert not CAL.is_working_day(date(2026, 4, 27))  # observed: the 26th is a Sunday
    assert CAL.holiday_name(date(2026, 2, 17)) is not None
    # 2025: Tết on 29 Jan, Hùng Kings on 7 Apr
    assert not CAL.is_working_day(date(2025, 1, 29)) and not CAL.is_working_day(date(2025, 4, 7))


def test_due_date_spanning_tet() -> None:
    received = datetime(2026, 2, 13, 9, 30, tzinfo=VN_TZ)  # Friday before Tết
    due = CAL.add_working_days(received, 3)
    # 14-15 weekend, 16-20 Tết, 21-22 weekend: the three working days are 23, 24, 25 Feb
    assert due == datetime(2026, 2, 25, 9, 30, tzinfo=VN_TZ)
    assert CAL.working_days_between(received.date(), due.date()) == 3
    assert CAL.add_working_days(received, 0) == received


def test_deployment_can_add_days_off_and_make_up_days() -> None:
    cal = WorkingCalendar(extra_days_off=[date(2026, 11, 23)], extra_working_days=[date(2026, 11, 28)])
    assert not cal.is_working_day(date(2026, 11, 23))
    assert cal.is_working_day(date(2026, 11, 28))


def _counted_day_by_day(cal: WorkingCalendar, start: date, end: date) -> int:
    if end < start:
        return -_counted_day_by_day(cal, end, start)
    return sum(cal.is_working_day(start + timedelta(days=i)) for i in range(1, (end - start).days + 1))


@settings(max_examples=150, deadline=None)
@given(
    st.dates(min_value=date(1990, 1, 1), max_value=date(2040, 12, 31)),
    st.integers(min_value=-800, max_value=800),
)
def test_working_days_between_counts_as_walking_the_days_would(start: date, span: int) -> None:
    """The running yearly totals give the count a day-by-day walk gives: across year ends, leap days, Tết, the
    deployment's own days off and make-up days, either way round."""
    cal = WorkingCalendar(
        extra_days_off=[date(2026, 11, 23), date(2000, 2, 29)], extra_working_days=[date(2026, 11, 28)]
    )
    end = start + timedelta(days=span)
    assert cal.working_days_between(start, end) == _counted_day_by_day(cal, start, end)


def test_a_dossier_due_decades_ago_is_counted_late_by_its_working_days(hub_factory: HubFactory) -> None:
    """A dossier imported from an old register, due in 1999: its working days late are counted whole (once a day
    at a time: a list of them took seconds)."""
    hub: Hub = hub_factory(start_worker=False)
    old = dossier(9, NgayTiepNhan="19990104080000", NgayHenTra="19990111080000")
    assert hub.http.post("/v1/dossiers", json=old).status_code == 202
    items = hub.http.get("/v1/dossiers", params={"overdue": "true"}).json()["items"]
    today = datetime.now(VN_TZ).date()
    assert [i["overdue_working_days"] for i in items] == [_counted_day_by_day(CAL, date(1999, 1, 11), today)]
    assert items[0]["overdue_working_days"] > 6000


def test_overdue_dossiers_are_listed_for_the_clients_agencies(hub_factory: HubFactory, creds: Creds) -> None:
    hub: Hub = hub_factory(start_worker=False)
    now = datetime.now(UTC)
    filed = format_national(now - timedelta(days=20))
    late = dossier(1, NgayTiepNhan=filed, NgayHenTra=format_national(now - timedelta(days=10)))
    on_time = dossier(2, NgayTiepNhan=filed, NgayHenTra=format_national(now + timedelta(days=10)))
    done = dossier(3, NgayTiepNhan=filed, NgayHenTra=format_national(now - timedelta(days=10)))
    for d in (late, on_time, done):
        assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    for s in (4, 9):
        hub.http.post(f"/v1/dossiers/{done['MaHoSo']}/progress", json=step(done["MaHoSo"], s))
    other = dossier(4, agency=OTHER_AGENCY, NgayTiepNhan=filed, NgayHenTra=format_national(now - timedelta(days=3)))
    other_client = {"X-API-Key": creds.other_key}
    assert hub.http.post("/v1/dossiers", json=other, headers=other_client).status_code == 202
    got = hub.http.get("/v1/dossiers", params={"overdue": "true"}).json()
    assert got["total"] == 1 and [i["MaHoSo"] for i in got["items"]] == [late["MaHoSo"]]
    item = got["items"][0]
    assert item["overdue_working_days"] >= 5
    assert parse_national(item["NgayHenTra"]) <= now
    theirs = hub.http.get("/v1/dossiers", params={"overdue": "true"}, headers=other_client).json()
    assert [i["MaHoSo"] for i in theirs["items"]] == [other["MaHoSo"]]
    assert_problem(hub.http.get("/v1/dossiers", params={"overdue": "false"}), 422, "unsupported_query")
    assert_problem(hub.http.get("/v1/dossiers", params={"overdue": "true", "limit": 0}), 422, "validation_error")
    huge = {"overdue": "true", "offset": 10**20}  # past what a database takes as an offset: 422, not 500
    assert_problem(hub.http.get("/v1/dossiers", params=huge), 422, "validation_error")
    assert hub.http.get("/v1/dossiers", params={"overdue": "true", "offset": 2**31 - 1}).json()["items"] == []


def test_make_up_working_saturdays_count() -> None:
    """The government swaps days around holidays: Friday 2 May 2025 off, Saturday 26 April 2025 worked instead
    (ngày làm bù). A due date counts the Saturday and skips the Friday."""
    assert CAL.is_working_day(date(2025, 4, 26)) and not CAL.is_working_day(date(2025, 5, 2))
    received = datetime(2025, 4, 25, 8, 0, tzinfo=VN_TZ)  # Friday
    assert CAL.add_working_days(received, 1) == datetime(2025, 4, 26, 8, 0, tzinfo=VN_TZ)
    # 26 Sat (worked), 28 Mon, 29 Tue; 30 Apr, 1 and 2 May off, 3-4 weekend; then Monday 5 May
    assert CAL.add_working_days(received, 4) == datetime(2025, 5, 5, 8, 0, tzinfo=VN_TZ)


def test_a_client_configured_with_no_agency_sees_no_dossier_overdue_nor_in_a_report(
    hub_factory: HubFactory, creds: Creds
) -> None:
    """A client system given no agency (one that only pays fees, say) acts for none: the overdue list and the
    report on procedures resolved are empty for it — not every agency's, as an empty list of patterns read."""
    from pydantic import SecretStr

    from hub.settings import ClientSystem
    from tests.conftest import client_systems

    nobody = ClientSystem(name="payments-only", api_key=SecretStr("k" * 32), agencies=[])
    hub: Hub = hub_factory(start_worker=False, clients=[*client_systems(creds), nobody])
    now = datetime.now(UTC)
    late = dossier(1, NgayTiepNhan=format_national(now - timedelta(days=20)),
                   NgayHenTra=format_national(now - timedelta(days=10)))  # fmt: skip
    assert hub.http.post("/v1/dossiers", json=late).status_code == 202
    assert hub.http.get("/v1/dossiers", params={"overdue": "true"}).json()["total"] == 1  # its own client sees it
    headers = {"X-API-Key": "k" * 32}
    assert hub.http.get("/v1/dossiers", params={"overdue": "true"}, headers=headers).json()["total"] == 0
    today = now.astimezone(VN_TZ).date()
    month = {"from": (today - timedelta(days=30)).isoformat(), "to": today.isoformat()}
    report = hub.http.get("/v1/reports/resolution", params=month, headers=headers).json()
    assert report["lines"] == [] and report["total"]["in_progress"] == 0
    assert hub.http.get("/v1/reports/resolution", params=month).json()["total"]["in_progress_overdue"] == 1
