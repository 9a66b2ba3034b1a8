"""Working days in Vietnam: weekends and public holidays, the lunar ones included (Tết, Giỗ Tổ Hùng Vương),
from the maintained `holidays` package (see docs/adr/0004). Due dates (NgayHenTra) count working days."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

import holidays

from hub.domain.dates import VN_TZ


class WorkingCalendar:
    """Vietnam's official calendar, with a deployment's own extra days off and make-up working days."""

    def __init__(self, extra_days_off: Iterable[date] = (), extra_working_days: Iterable[date] = ()) -> None:
        self._holidays = holidays.country_holidays("VN")
        self._extra_off = set(extra_days_off)
        self._extra_working = set(extra_working_days)
        self._years: dict[int, list[int]] = {}

    def is_working_day(self, day: date) -> bool:
        """Not a weekend or a public holiday — except the Saturdays the government makes working days in exchange
        for a bridging day off (ngày làm bù: 26 April 2025 for Friday 2 May), which the package also knows."""
        if day in self._extra_working:
            return True
        if day in self._extra_off:
            return False
        return bool(self._holidays.is_working_day(day))

    def holiday_name(self, day: date) -> str | None:
        name = self._holidays.get(day)
        return str(name) if name else None

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """The moment `days` working days after `start` (Vietnam local time, same time of day)."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if days < 0:
            raise ValueError("days must be >= 0")
        local = start.astimezone(VN_TZ)
        day = local.date()
        left = days
        while left > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return local.replace(year=day.year, month=day.month, day=day.day)

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after `start` up to and including `end` (negative when end is before start). Counted from
        each year's running totals, built once a year is first asked for: a dossier due in 1990 answered in the
        overdue list costs 37 look-ups, not the 13,000 days between (a list of them was seconds of CPU)."""
        if end < start:
            return -self.working_days_between(end, start)
        first, last = self._running(start.year), self._running(end.year)
        since, until = start.timetuple().tm_yday, end.timetuple().tm_yday
        if start.year == end.year:
            return last[until] - first[since]
        between = sum(self._running(y)[-1] for y in range(start.year + 1, end.year))
        return first[-1] - first[since] + between + last[until]

    def _running(self, year: int) -> list[int]:
        """[0, working days in 1 Jan, … in 1 Jan – the day of the year given by the index]: built once a year."""
        found = self._years.get(year)
        if found is None:
            found = [0]
            day = date(year, 1, 1)
            while day.year == year:
                found.append(found[-1] + self.is_working_day(day))
                day += timedelta(days=1)
            self._years[year] = found
        return found
