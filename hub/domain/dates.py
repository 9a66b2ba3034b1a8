"""The national portal's date format: `yyyyMMddHHmmss` in local time Asia/Ho_Chi_Minh (UTC+7)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hub.domain.errors import InvalidDate

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
NATIONAL_FORMAT = "%Y%m%d%H%M%S"


def parse_national(value: str) -> datetime:
    """Parse `yyyyMMddHHmmss` (Vietnam local time) into an aware datetime."""
    if not isinstance(value, str) or len(value) != 14 or not (value.isascii() and value.isdigit()):
        raise InvalidDate(f"date {value!r} is not in the format yyyyMMddHHmmss")
    try:
        naive = datetime.strptime(value, NATIONAL_FORMAT)  # noqa: DTZ007 - zone attached on the next line
    except ValueError:
        raise InvalidDate(f"date {value!r} is not a real date/time") from None
    return naive.replace(tzinfo=VN_TZ)


def format_national(moment: datetime) -> str:
    """Format an aware datetime as `yyyyMMddHHmmss` in Vietnam local time."""
    if moment.tzinfo is None:
        raise InvalidDate("refusing to format a naive datetime: its zone is unknown")
    return moment.astimezone(VN_TZ).strftime(NATIONAL_FORMAT)


def utcnow() -> datetime:
    return datetime.now(UTC)
