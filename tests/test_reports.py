"""The report on how procedures were resolved over a period (ADR 0048): what an agency sends each quarter, read
from the dossiers hub relays — carried over, received online or not, resolved before, on or after the
appointment, withdrawn or stopped, still being resolved at the end (within time, overdue)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.api_helpers import assert_problem
from tests.conftest import AGENCY, OTHER_AGENCY, Creds, Hub, HubFactory
from tests.helpers import dossier, step
from tests.test_cli import run

PROCEDURE = "1.001193"  # đăng ký khai sinh
OCTOBER = {"from": "2026-10-01", "to": "2026-10-31"}


@pytest.fixture
def hub(hub_factory: HubFactory) -> Hub:
    return hub_factory(start_worker=False)  # the report reads what was received: nothing need be delivered


def filed(hub: Hub, seq: int, received: str, due: str, channel: int, *, agency: str = AGENCY, key: str = "") -> str:
    """A dossier received on `received` (yyyyMMdd, 08:00), due on `due` (16:00), by `channel` (KenhThucHien)."""
    d = dossier(
        seq, agency=agency, MaTTHC=PROCEDURE, NgayTiepNhan=f"{received}080000", NgayHenTra=f"{due}160000",
        KenhThucHien=channel,
    )  # fmt: skip
    r = hub.http.post("/v1/dossiers", json=d, headers={"X-API-Key": key} if key else None)
    assert r.status_code == 202, r.text
    return str(d["MaHoSo"])


def moved(hub: Hub, code: str, status: int, at: str, *, key: str = "") -> None:
    """The dossier's one-stop system says it moved to `status` at `at` (ThoiDiemXuLy, yyyyMMddHHmmss)."""
    progress = {**step(code, status), "ThoiDiemXuLy": at}
    r = hub.http.post(f"/v1/dossiers/{code}/progress", json=progress, headers={"X-API-Key": key} if key else None)
    assert r.status_code == 202, r.text


def resolved(hub: Hub, code: str, day: str) -> None:
    moved(hub, code, 4, f"{day}090000")
    moved(hub, code, 9, f"{day}150000")


def report(hub: Hub, **params: str) -> dict[str, Any]:
    r = hub.http.get("/v1/reports/resolution", params={**OCTOBER, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_october_as_an_agency_reports_it(hub: Hub, creds: Creds, tmp_path: Path) -> None:
    """Each dossier counts once where it belongs, the two sides of the report agree, and the rates follow."""
    early = filed(hub, 1, "20260920", "20261005", 1)  # carried over from September, resolved 3 October
    resolved(hub, early, "20261003")
    on_time = filed(hub, 2, "20261002", "20261010", 2)  # online, resolved on its appointment's day
    resolved(hub, on_time, "20261010")
    late = filed(hub, 3, "20261003", "20261008", 1)  # in person, resolved a week late
    resolved(hub, late, "20261015")
    overdue = filed(hub, 4, "20261005", "20261020", 2)  # online, still being handled, its day passed
    moved(hub, overdue, 4, "20261006090000")
    filed(hub, 5, "20261006", "20261130", 3)  # by post, still being handled, in time
    before = filed(hub, 6, "20260910", "20260920", 1)  # done with in September: not in October's report
    resolved(hub, before, "20260918")
    after = filed(hub, 7, "20261102", "20261110", 1)  # received in November
    withdrawn = filed(hub, 8, "20261007", "20261015", 2)
    moved(hub, withdrawn, 7, "20261009100000")  # the citizen withdrew it
    stopped_later = filed(hub, 9, "20261008", "20261025", 1)
    moved(hub, stopped_later, 8, "20261105100000")  # stopped in November: still in progress at October's end
    filed_only = dossier(10, status=1, MaTTHC=PROCEDURE, NgayTiepNhan="20261010080000", NgayHenTra="20261020160000")
    filed_only["KenhThucHien"] = 2  # filed online on 10 October, not received yet: not counted
    assert hub.http.post("/v1/dossiers", json=filed_only).status_code == 202
    gave_up = dossier(12, status=1, MaTTHC=PROCEDURE, NgayTiepNhan="20261011080000", NgayHenTra="20261020160000")
    assert hub.http.post("/v1/dossiers", json=gave_up).status_code == 202
    moved(hub, str(gave_up["MaHoSo"]), 7, "20261012080000")  # withdrawn before anyone received it: not counted
    asked = dossier(13, status=1, MaTTHC=PROCEDURE, NgayTiepNhan="20261013080000", NgayHenTra="20261020160000")
    assert hub.http.post("/v1/dossiers", json=asked).status_code == 202
    moved(hub, str(asked["MaHoSo"]), 5, "20261013100000")  # papers asked for before it was received,
    moved(hub, str(asked["MaHoSo"]), 7, "20261014100000")  # then withdrawn: never received, not counted
    supplemented = filed(hub, 14, "20261014", "20261024", 1)  # received, papers asked for, then withdrawn
    moved(hub, supplemented, 5, "20261015100000")
    moved(hub, supplemented, 7, "20261016100000")
    assert after and filed(hub, 11, "20261012", "20261020", 2, agency=OTHER_AGENCY, key=creds.portal_key)

    body = report(hub)
    assert [(line["agency"], line["MaTTHC"]) for line in body["lines"]] == [(AGENCY, PROCEDURE)]  # its agencies only
    total = body["total"]
    assert {k: total[k] for k in ("carried_over", "received_online", "received_other", "received", "to_resolve")} == {
        "carried_over": 1, "received_online": 3, "received_other": 4, "received": 7, "to_resolve": 8,
    }  # fmt: skip
    assert {k: total[k] for k in ("resolved_early", "resolved_on_time", "resolved_late", "resolved", "ended")} == {
        "resolved_early": 1, "resolved_on_time": 1, "resolved_late": 1, "resolved": 3, "ended": 2,
    }  # fmt: skip
    assert (total["in_progress_in_time"], total["in_progress_overdue"], total["in_progress"]) == (1, 2, 3)
    assert total["to_resolve"] == total["resolved"] + total["ended"] + total["in_progress"]
    assert total["on_time_rate"] == 66.67 and total["online_rate"] == 42.86
    assert body["from"] == "2026-10-01" and body["as_of"] == "2026-11-01T00:00:00+07:00" and body["unreadable"] == 0

    # the national portal's client acts for every agency: both lines, and one agency's alone when it asks so
    portal = {"X-API-Key": creds.portal_key}
    every = hub.http.get("/v1/reports/resolution", params=OCTOBER, headers=portal).json()
    assert [line["agency"] for line in every["lines"]] == sorted([AGENCY, OTHER_AGENCY])
    assert every["total"]["received"] == 8
    other = hub.http.get("/v1/reports/resolution", params={**OCTOBER, "agency": OTHER_AGENCY}, headers=portal).json()
    assert [line["received_online"] for line in other["lines"]] == [1]
    assert_problem(
        hub.http.get("/v1/reports/resolution", params={**OCTOBER, "agency": OTHER_AGENCY}), 403, "agency_not_allowed"
    )

    # September: the dossier carried into October was received then; the one done with then counts resolved
    september = report(hub, **{"from": "2026-09-01", "to": "2026-09-30"})["total"]
    assert (september["received"], september["resolved"], september["in_progress"]) == (2, 1, 1)

    # the same as a spreadsheet: a line per agency and procedure, then the total
    r = hub.http.get("/v1/reports/resolution", params={**OCTOBER, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["agency"], row["MaTTHC"], row["received"], row["resolved_late"]) for row in rows] == [
        (AGENCY, PROCEDURE, "7", "1"), ("*", "*", "7", "1"),
    ]  # fmt: skip

    # and from the command line, for an operator: the same figures, the agencies it names
    env = {"HUB_DATABASE_URL": hub.settings.effective_database_url, "HUB_VAR_DIR": str(tmp_path)}
    done = run(["dossiers", "report", "--from", "2026-10-01", "--to", "2026-10-31", "--agency", "000.00.17.*",
                "--format", "csv"], cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == r.text.replace("\r\n", "\n")  # (read as text: universal newlines)
    table = run(["dossiers", "report", "--from", "2026-10-01", "--to", "2026-10-31"], cwd=tmp_path, env=env)
    assert table.returncode == 0 and AGENCY in table.stdout and OTHER_AGENCY in table.stdout, table.stderr
    wrong = run(["dossiers", "report", "--from", "2026-10-31", "--to", "2026-10-01"], cwd=tmp_path, env=env)
    assert wrong.returncode == 2 and "before it starts" in wrong.stderr


def test_a_period_under_way_counts_until_now_and_what_hub_heard_when_no_time_was_said(hub: Hub) -> None:
    """A report of the month under way holds for now. A status a one-stop system changed by sending the dossier
    again (DongBoHoSoMC, no time of its own) counts from when hub recorded it; an end of processing
    (NgayKetThucXuLy) sent as a date to come is a plan, not the end."""
    from hub.domain.dates import VN_TZ, utcnow

    today = utcnow().astimezone(VN_TZ).date()
    month = {"from": today.replace(day=1).isoformat(), "to": today.isoformat()}
    d = dossier(1, MaTTHC=PROCEDURE, NgayTiepNhan=today.strftime("%Y%m%d") + "000000", NgayHenTra="29991231160000")
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    assert hub.http.post("/v1/dossiers", json={**d, "TrangThaiHoSo": 4}).status_code == 202
    body = hub.http.get("/v1/reports/resolution", params=month).json()
    assert body["total"]["in_progress_in_time"] == 1 and body["as_of"] < f"{today.isoformat()}T23:59:59+07:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00", body["as_of"])  # now, to the second
    done = {**d, "TrangThaiHoSo": 9, "NgayKetThucXuLy": "29991230160000"}
    assert hub.http.post("/v1/dossiers", json=done).status_code == 202
    total = hub.http.get("/v1/reports/resolution", params=month).json()["total"]
    assert (total["resolved"], total["resolved_early"], total["in_progress"]) == (1, 1, 0)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-10-31", "to": "2026-10-01"}, "invalid_period"),
        ({"from": "2000-01-01", "to": "2026-10-01"}, "invalid_period"),  # more than five years
        ({"from": "0001-01-01", "to": "0001-01-02"}, "invalid_period"),
        ({"from": "2026-13-01", "to": "2026-10-01"}, "validation_error"),
        ({"to": "2026-10-01"}, "missing_field"),
        ({**OCTOBER, "format": "xlsx"}, "validation_error"),
    ],
)
def test_a_period_that_is_not_one_is_refused_plainly(hub: Hub, params: dict[str, str], code: str) -> None:
    assert_problem(hub.http.get("/v1/reports/resolution", params=params), 422, code)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_operator_reads_the_report_in_the_console_and_downloads_it(
    hub_factory: HubFactory, browser: object, backend: str
) -> None:
    """The console's report (Vietnamese by default): the form's days, the table with its two-row header, the
    rates, and the same figures as a CSV file a spreadsheet opens (byte-order mark)."""
    from hub.console.auth import Operators
    from tests.test_console import PASSWORD, login, shot

    hub = hub_factory(start_worker=False)
    Operators(hub.runtime.sessions).add("le.thi.xem", PASSWORD, "viewer")
    on_time = filed(hub, 1, "20261002", "20261010", 2)
    resolved(hub, on_time, "20261009")
    late = filed(hub, 2, "20261003", "20261008", 1)
    resolved(hub, late, "20261015")
    filed(hub, 3, "20261005", "20261020", 2)

    context = browser.new_context(locale="vi-VN", accept_downloads=True)  # type: ignore[attr-defined]
    page = context.new_page()
    login(page, hub.server.url, "le.thi.xem")
    page.click("text=Báo cáo giải quyết TTHC")
    assert page.locator("h1").inner_text() == "Báo cáo giải quyết TTHC"
    page.fill("input[name=from]", "2026-10-01")
    page.fill("input[name=to]", "2026-10-31")
    page.click("text=Xem báo cáo")
    assert page.locator("#on-time-rate").inner_text() == "50.00%"
    assert page.locator("#online-rate").inner_text() == "66.67%"
    header = page.locator("#report tr").first.inner_text()
    assert "Kỳ trước chuyển qua" in header and "Đã giải quyết" in header and "Đang giải quyết" in header
    total = page.locator("#report-total").inner_text().split()
    assert total[:2] == ["Tổng", "cộng"] and total[2:] == ["0", "2", "1", "1", "0", "1", "0", "0", "1", "50.00%"]
    shot(page, "report")
    with page.expect_download() as download:
        page.click("#download")
    data = Path(download.value.path()).read_bytes()
    assert data.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))  # headed in the console's language
    assert [(row["Cơ quan"], row["Đã giải quyết"], row["Đang giải quyết quá hạn"]) for row in rows] == [
        (AGENCY, "2", "1"), ("*", "2", "1"),
    ]  # fmt: skip
    assert list(rows[0])[:5] == ["Từ ngày", "Đến ngày", "Cơ quan", "Mã TTHC", "Kỳ trước chuyển qua"]
    page.goto(f"{hub.server.url}/ops/reports?from=2026-10-31&to=2026-10-01")
    assert "Kỳ báo cáo không hợp lệ" in page.locator("#error").inner_text()
    context.close()


def test_reports_asked_for_together_beyond_the_few_are_told_to_come_back(hub: Hub) -> None:
    """A report reads every dossier of its period: while as many as a process makes at once are being made, one
    more is refused at once — 429 `reports_busy` with Retry-After — instead of taking another of the threads
    every request is served on; once one is done, it is made."""
    from hub.services import reports

    held = [reports.slot() for _ in range(reports.AT_ONCE)]
    for place in held:
        place.__enter__()
    try:
        r = hub.http.get("/v1/reports/resolution", params=OCTOBER)
        body = assert_problem(r, 429, "reports_busy")
        assert r.headers["retry-after"] == "10" and "shortly" in body["detail"]
    finally:
        for place in held:
            place.__exit__(None, None, None)
    assert hub.http.get("/v1/reports/resolution", params=OCTOBER).status_code == 200
