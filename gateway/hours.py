"""Support hours: when the desk is staffed, and arithmetic in support time. Pure.

Input: the ``[hours]`` settings (a time zone, the weekdays, opening and closing
wall-clock times, optional public holidays and extra closed dates) and aware
datetimes. Output: aware UTC datetimes and :class:`~datetime.timedelta` values
of support time. Response targets (``gateway/targets.py``) count only this time.

Every day's window is built from the wall clock in the configured zone
(``zoneinfo``) and only then converted to UTC, so a target that runs across a
daylight-saving change still starts at 09:00 local time on Monday. No clock is
read and nothing is stored here; the ``holidays`` package only computes dates.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from gateway.config import HoursConfig

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: A calendar with no support day this far ahead is a configuration mistake, not a long wait.
MAX_DAYS_SEARCHED = 5 * 366
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, eq=False)
class ClosedDays:
    """Dates without support: the configured extra dates plus, optionally, a public-holiday calendar."""

    extra: frozenset[date] = frozenset()
    public: Container[date] | None = None

    def __contains__(self, day: object) -> bool:
        return day in self.extra or (self.public is not None and day in self.public)


@dataclass(frozen=True)
class SupportHours:
    """Support time: ``weekdays`` (0 = Monday) from ``start`` to ``end`` in ``zone``, except ``closed`` days."""

    zone: ZoneInfo
    weekdays: frozenset[int]
    start: time
    end: time
    closed: Container[date] = field(default_factory=ClosedDays)

    def is_support_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.closed

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The support window of one local date, in UTC, or None on a day without support."""
        if not self.is_support_day(day):
            return None
        opens = datetime.combine(day, self.start, self.zone).astimezone(timezone.utc)
        closes = datetime.combine(day, self.end, self.zone).astimezone(timezone.utc)
        return opens, closes

    def add(self, start: datetime, hours: float) -> datetime:
        """The moment at which ``hours`` support hours have passed since ``start``.

        A start outside support hours counts from the next opening; a target that
        is used up exactly at closing time ends at closing time.

        >>> berlin = default_support_hours()
        >>> berlin.add(datetime(2026, 3, 27, 16, 59, tzinfo=ZoneInfo("Europe/Berlin")), 4).isoformat()
        '2026-03-30T09:59:00+00:00'
        """
        remaining = timedelta(hours=hours)
        start = start.astimezone(timezone.utc)
        for opens, closes in self._windows(start):
            begin = max(opens, start)
            if begin >= closes:
                continue
            if remaining <= closes - begin:
                return begin + remaining
            remaining -= closes - begin
        raise ValueError(f"no support hours within {MAX_DAYS_SEARCHED} days of {start.isoformat()}")

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Support time from ``start`` to ``end``; negative when ``end`` is earlier.

        >>> berlin = default_support_hours()
        >>> friday = datetime(2026, 3, 27, 17, 0, tzinfo=ZoneInfo("Europe/Berlin"))
        >>> berlin.between(friday, friday + timedelta(days=3)) / timedelta(hours=1)
        9.0
        """
        start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
        if end < start:
            return -self.between(end, start)
        total = timedelta()
        for opens, closes in self._windows(start):
            if opens >= end:
                break
            total += max(timedelta(), min(closes, end) - max(opens, start))
        return total

    def _windows(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        day = start.astimezone(self.zone).date()
        for offset in range(MAX_DAYS_SEARCHED):
            window = self.window(day + timedelta(days=offset))
            if window is not None:
                yield window


def in_hours(value: timedelta) -> float:
    """A span of support time as a number of hours (``timedelta(minutes=90)`` -> 1.5)."""
    return value / timedelta(hours=1)


@functools.lru_cache(maxsize=8)
def support_hours(config: "HoursConfig") -> SupportHours:
    """Build :class:`SupportHours` from the ``[hours]`` settings.

    :raises ValueError: a setting is invalid (the message names the key).
    """
    start, end = _clock_time(config.start, "start"), _clock_time(config.end, "end")
    if start >= end:
        raise ValueError(f"start ({config.start}) must be before end ({config.end})")
    extra = frozenset(_iso_date(text) for text in config.extra_closed_dates)
    hours = SupportHours(_zone(config.timezone), _weekdays(config.days), start, end,
                         ClosedDays(extra, _public_holidays(config.holiday_country, config.holiday_subdivision)))
    if not any(hours.is_support_day(date(2026, 1, 5) + timedelta(days=n)) for n in range(366)):
        raise ValueError("no support day in a whole year")
    return hours


def default_support_hours() -> SupportHours:
    """Monday–Friday 09:00–18:00 Europe/Berlin without holidays (the service-desk terms)."""
    return SupportHours(ZoneInfo("Europe/Berlin"), frozenset(range(5)), time(9), time(18))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not an IANA time zone such as \"Europe/Berlin\"") from None


def _weekdays(names: tuple[str, ...]) -> frozenset[int]:
    days = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in WEEKDAYS:
            raise ValueError(f"days: {name!r} is not a weekday; use {', '.join(WEEKDAYS)}")
        days.add(WEEKDAYS.index(key))
    if not days:
        raise ValueError("days must name at least one weekday")
    return frozenset(days)


def _clock_time(text: str, key: str) -> time:
    match = _CLOCK_RE.match(text.strip())
    if not match:
        raise ValueError(f"{key} must be a time like \"09:00\", not {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"extra_closed_dates: {text!r} is not a date like \"2026-12-24\"") from None


def _public_holidays(country: str, subdivision: str) -> Container[date] | None:
    if not country:
        if subdivision:
            raise ValueError("holiday_subdivision needs holiday_country")
        return None
    try:
        import holidays
    except ImportError:
        raise ValueError("holiday_country needs the 'holidays' package (pip install holidays)") from None
    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision or None)
    except NotImplementedError:
        where = f"{country}/{subdivision}" if subdivision else country
        raise ValueError(f"the holidays package knows no calendar for {where!r}") from None
