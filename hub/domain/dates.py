"""The national portal's date format: `yyyyMMddHHmmss` in local time Asia/Ho_Chi_Minh (UTC+7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload
from zoneinfo import ZoneInfo

from hub.domain.errors import InvalidDate

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
NATIONAL_FORMAT = "%Y%m%d%H%M%S"


def parse_national(value: str) -> datetime:
    """Parse `yyyyMMddHHmmss` (Vietnam local time) into an aware datetime."""
    if not isinstance(value, str) or len(value) != 14 or not (value.isascii() and value.isdigit()):
        raise InvalidDate(f"date {value!r} is not in the format yyyyMMddHHmmss")
    if value < "1900":  # no record of the portal's is older; year 1 at +07:00 would not even convert to UTC
        raise InvalidDate(f"date {value!r} is before 1900")
    try:  # fields by position (14 ASCII digits, checked above): strptime's parsing costs ~10x as much per call
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[8:10]),
            int(value[10:12]),
            int(value[12:14]),
            tzinfo=VN_TZ,
        )
    except ValueError:
        raise InvalidDate(f"date {value!r} is not a real date/time") from None


def format_national(moment: datetime) -> str:
    """Format an aware datetime as `yyyyMMddHHmmss` in Vietnam local time."""
    if moment.tzinfo is None:
        raise InvalidDate("refusing to format a naive datetime: its zone is unknown")
    return moment.astimezone(VN_TZ).strftime(NATIONAL_FORMAT)


def instant(value: datetime, what: str = "datetimes") -> datetime:
    """A moment a client sent (ISO 8601): it must carry its offset, and be one UTC can hold — 0001-01-01T00:00+14:00
    and 9999-12-31T23:59-12:00 are not (converting them, as storing does, would overflow)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDate(f"{what} must carry a time zone offset (e.g. +07:00)")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidDate(f"{value.isoformat()} is out of range") from None
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def local_iso(moment: datetime) -> str: ...
@overload
def local_iso(moment: None) -> None: ...
def local_iso(moment: datetime | None) -> str | None:
    """An instant as a citizen reads it: ISO 8601 in Vietnam's time (+07:00), as the national dates are."""
    return moment.astimezone(VN_TZ).isoformat() if moment is not None else None
