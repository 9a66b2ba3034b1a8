"""Identifiers, the national date format and the TrangThaiHoSo machine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain import identifiers as ids
from hub.domain.dates import format_national, instant, parse_national
from hub.domain.errors import InvalidDate, InvalidIdentifier, InvalidTransition
from hub.domain.status import INITIAL, TERMINAL, TRANSITIONS, DossierStatus, check_transition
from hub.sandbox import contracts


def test_dossier_code_parses_agency_date_and_sequence() -> None:
    code = ids.dossier_code("000.00.17.H56-241015-0007")
    assert code.agency == "000.00.17.H56"
    assert code.received_on == date(2024, 10, 15)
    assert code.daily_sequence == 7


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "000.00.17.H56-241015-007",
        "000.00.17.H56-241315-0007",
        "000.00.17.H56-240230-0001",
        "H56-241015-0007",
        "000.00.17.H56-241015-0000",
        "000.00.17.h56-241015-0001",
        "000.00.17.H56-241015-0001 ",
        "000.00.17.H56-241015-0001\n",  # `$` alone would let a trailing newline through: another dossier
    ],
)
def test_dossier_code_rejects_malformed(bad: str) -> None:
    with pytest.raises(InvalidIdentifier) as exc:
        ids.dossier_code(bad)
    assert exc.value.code == "invalid_dossier_code"


def test_agency_and_procedure_codes() -> None:
    assert ids.agency_code("000.00.00.G22") == "000.00.00.G22"
    assert ids.procedure_code("1.001193") == "1.001193"
    for bad in ("000.00.G22", "000.00.00.22", "000-00-00-G22", "000.00.00.G22\n"):
        with pytest.raises(InvalidIdentifier):
            ids.agency_code(bad)
    for bad in ("1001193", "1.00119", "1.0011933", "a.001193", "1.001193\n"):
        with pytest.raises(InvalidIdentifier):
            ids.procedure_code(bad)


def test_personal_id_structure_and_consistency() -> None:
    pid = ids.personal_id("079195001234")
    assert (pid.province_code, pid.male, pid.birth_year) == (79, False, 1995)
    assert "079195001234" not in repr(pid) and "079195001234" not in str(pid)
    assert ids.personal_id("001203123456", birth_date=date(2003, 5, 1), male=True).birth_year == 2003
    with pytest.raises(InvalidIdentifier):
        ids.personal_id("079195001234", birth_date=date(1996, 1, 1))
    with pytest.raises(InvalidIdentifier):
        ids.personal_id("079195001234", male=True)
    # a trailing newline would be another HMAC for the same citizen: their access log split in two
    for bad in ("07919500123", "0791950012345", "07919500123a", "999195001234", "079995001234", "079195001234\n"):
        with pytest.raises(InvalidIdentifier):
            ids.personal_id(bad)


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_personal_id_never_crashes(n: int) -> None:
    value = f"{n:012d}"
    try:
        pid = ids.personal_id(value)
    except InvalidIdentifier:
        return
    assert pid.value == value and 1900 <= pid.birth_year <= datetime.now(UTC).year


def test_national_dates_are_vietnam_local_time() -> None:
    moment = parse_national("20241015083000")
    assert moment.astimezone(UTC) == datetime(2024, 10, 15, 1, 30, tzinfo=UTC)
    assert format_national(datetime(2024, 10, 14, 17, 0, tzinfo=UTC)) == "20241015000000"
    for bad in ("2024101508300", "20241315083000", "20240230083000", "2024-10-15T08", "20241015256000",
                "２０２４１０１５０８３０００", "٢٠٢٤١٠١٥٠٨٣٠٠٠",  # full-width and Arabic-Indic digits
                "00010101000000", "18991231235959"):  # fmt: skip
        with pytest.raises(InvalidDate):
            parse_national(bad)
    with pytest.raises(InvalidDate):
        format_national(datetime(2024, 1, 1))
    assert parse_national("99991231235959").astimezone(UTC).year == 9999  # "no end" as some systems write it


def test_moments_sent_by_clients_carry_an_offset_and_fit_in_utc() -> None:
    assert instant(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2025, 1, 1, tzinfo=UTC)
    for bad in (
        datetime(2025, 1, 1),  # naive: which zone?
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-12))),
    ):
        with pytest.raises(InvalidDate):
            instant(bad)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)))
def test_national_date_round_trip(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    assert parse_national(format_national(moment)) == moment


def test_transition_table_matches_the_published_contract() -> None:
    published = contracts.load_json("national_portal/trang_thai_transitions.json")
    assert set(published["initial"]) == {int(s) for s in INITIAL}
    assert set(published["terminal"]) == {int(s) for s in TERMINAL}
    assert {int(k): set(v) for k, v in published["transitions"].items()} == {
        int(k): {int(x) for x in v} for k, v in TRANSITIONS.items()
    }


def test_documented_transitions() -> None:
    S = DossierStatus
    for allowed in [
        (S.SUPPLEMENT_REQUESTED, S.PROCESSING),
        (S.PAYMENT_REQUESTED, S.PROCESSING),
        (S.NEW, S.ACCEPTED),
        (S.PROCESSED, S.RESULT_RETURNED),
        (S.PROCESSING, S.PROCESSING),
    ]:
        check_transition(*allowed)
    for terminal in TERMINAL:
        for target in S:
            with pytest.raises(InvalidTransition):
                check_transition(terminal, target)
    with pytest.raises(InvalidTransition):
        check_transition(S.ACCEPTED, S.RESULT_RETURNED)  # a result cannot be returned before it is processed
    with pytest.raises(InvalidTransition):
        check_transition(None, S.PROCESSING)


@given(st.sampled_from(list(DossierStatus)), st.sampled_from(list(DossierStatus)))
def test_a_dossier_taken_over_starts_anywhere_and_then_follows_the_table(
    first: DossierStatus, then: DossierStatus
) -> None:
    """A dossier already in progress before hub (isUpdating) is taken at whatever status it is in; from there on
    the table holds as for any other — taking over never opens a transition the table does not allow."""
    check_transition(None, first, taken_over=True)
    if then in TRANSITIONS[first]:
        check_transition(first, then, taken_over=True)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(first, then, taken_over=True)


@given(st.lists(st.sampled_from(list(DossierStatus)), max_size=30), st.sampled_from(sorted(INITIAL)))
def test_any_walk_only_passes_through_allowed_transitions(walk: list[DossierStatus], start: DossierStatus) -> None:
    current = start
    for target in walk:
        try:
            check_transition(current, target)
        except InvalidTransition:
            assert target not in TRANSITIONS[current]
            continue
        assert target in TRANSITIONS[current]
        assert current not in TERMINAL
        current = target


def test_every_status_is_reachable_from_an_initial_status() -> None:
    seen = set(INITIAL)
    frontier = list(INITIAL)
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(DossierStatus)
