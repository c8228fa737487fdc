"""Support-hour arithmetic: weekends, the edges of the day, DST weekends of 2026, holidays, bad settings."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway.config import HoursConfig, settings_from_mapping
from gateway.errors import ConfigError
from gateway.hours import default_support_hours, in_hours, support_hours

BERLIN = ZoneInfo("Europe/Berlin")
HOURS = default_support_hours()


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("start, hours, due", [
    # 2026-03-02 is a Monday, 2026-03-06 a Friday
    (berlin("2026-03-02 09:00"), 4, berlin("2026-03-02 13:00")),
    (berlin("2026-03-02 08:59"), 4, berlin("2026-03-02 13:00")),          # before opening: counts from 09:00
    (berlin("2026-03-02 09:00"), 9, berlin("2026-03-02 18:00")),          # used up exactly at closing time
    (berlin("2026-03-02 09:00"), 9 + 1 / 3600, berlin("2026-03-03 09:00:01")),
    (berlin("2026-03-02 17:59"), 4, berlin("2026-03-03 12:59")),
    (berlin("2026-03-02 18:00"), 4, berlin("2026-03-03 13:00")),          # at closing: next morning
    (berlin("2026-03-06 17:59"), 4, berlin("2026-03-09 12:59")),          # Friday 17:59: one minute, then Monday
    (berlin("2026-03-06 17:59"), 24, berlin("2026-03-11 14:59")),         # basic: 1 min + 9 h + 9 h + 5 h 59 min
    (berlin("2026-03-07 10:00"), 4, berlin("2026-03-09 13:00")),          # Saturday: Monday 09:00 on
    (berlin("2026-03-08 23:59"), 8, berlin("2026-03-09 17:00")),          # Sunday night
    (berlin("2026-03-02 12:00"), 0.5, berlin("2026-03-02 12:30")),
])
def test_add_counts_support_hours_only(start, hours, due):
    # A target runs only Monday to Friday, 09:00 to 18:00 Berlin time.
    assert HOURS.add(start, hours) == due


@pytest.mark.parametrize("start, hours, due_utc", [
    # DST starts Sunday 2026-03-29: Friday is UTC+1, Monday UTC+2
    (berlin("2026-03-27 16:00"), 4, utc("2026-03-30 09:00")),     # Mon 11:00 CEST, not 12:00 CEST
    (berlin("2026-03-27 17:59"), 8, utc("2026-03-30 14:59")),     # Mon 16:59 CEST
    (berlin("2026-03-28 12:00"), 4, utc("2026-03-30 11:00")),     # opened on the DST Saturday
    # DST ends Sunday 2026-10-25: Friday is UTC+2, Monday UTC+1
    (berlin("2026-10-23 17:00"), 4, utc("2026-10-26 11:00")),     # Mon 12:00 CET
    (berlin("2026-10-23 17:59"), 8, utc("2026-10-26 15:59")),     # Mon 16:59 CET
    (berlin("2026-10-24 12:00"), 4, utc("2026-10-26 12:00")),     # opened on the DST Saturday
])
def test_add_keeps_wall_clock_hours_across_dst_weekends(start, hours, due_utc):
    # Monday's window opens at 09:00 local time whatever the offset was on Friday.
    assert HOURS.add(start, hours) == due_utc


@pytest.mark.parametrize("start, end, hours", [
    (berlin("2026-03-06 17:00"), berlin("2026-03-09 10:00"), 2.0),   # Friday evening to Monday morning
    (berlin("2026-03-07 00:00"), berlin("2026-03-08 23:59"), 0.0),   # a weekend has no support hours
    (berlin("2026-03-27 18:00"), berlin("2026-03-30 09:00"), 0.0),   # DST weekend, March
    (berlin("2026-10-23 18:00"), berlin("2026-10-26 09:30"), 0.5),   # DST weekend, October
    (berlin("2026-03-02 09:00"), berlin("2026-03-09 09:00"), 45.0),  # one week
    (berlin("2026-03-09 10:00"), berlin("2026-03-06 17:00"), -2.0),  # backwards: negative
])
def test_between_measures_support_time(start, end, hours):
    assert in_hours(HOURS.between(start, end)) == hours


def test_add_and_between_agree_over_a_year_of_starts():
    # For a start every 7 h 13 min through 2026 (so all weekdays, times and both DST changes are hit),
    # the support time between a start and its due time is the target.
    start = berlin("2026-01-01 00:00")
    while start.year == 2026:
        due = HOURS.add(start, 8)
        assert in_hours(HOURS.between(start, due)) == pytest.approx(8)
        start += timedelta(hours=7, minutes=13)


def test_public_holidays_and_extra_dates_are_not_support_days():
    # Good Friday and Easter Monday 2026 (3 and 6 April) from the holidays package, 7 April listed by hand.
    hours = support_hours(HoursConfig(holiday_country="DE", holiday_subdivision="BE",
                                      extra_closed_dates=("2026-04-07",)))
    assert hours.add(berlin("2026-04-02 17:00"), 4) == berlin("2026-04-08 12:00")
    assert support_hours(HoursConfig()).add(berlin("2026-04-02 17:00"), 4) == berlin("2026-04-03 12:00")


def test_holidays_are_off_by_default():
    assert HoursConfig().holiday_country == ""
    assert support_hours(HoursConfig()).is_support_day(berlin("2026-12-25").date())


@pytest.mark.parametrize("values, message", [
    ({"timezone": "Mars/Olympus"}, "[hours] timezone 'Mars/Olympus' is not an IANA time zone"),
    ({"days": ["mon", "funday"]}, "[hours] days: 'funday' is not a weekday"),
    ({"days": []}, "[hours] days must name at least one weekday"),
    ({"start": "9"}, "[hours] start must be a time like \"09:00\""),
    ({"start": "18:00", "end": "09:00"}, "[hours] start (18:00) must be before end (09:00)"),
    ({"holiday_subdivision": "BE"}, "[hours] holiday_subdivision needs holiday_country"),
    ({"holiday_country": "XX"}, "[hours] the holidays package knows no calendar for 'XX'"),
    ({"extra_closed_dates": ["24.12.2026"]}, "[hours] extra_closed_dates: '24.12.2026' is not a date"),
])
def test_bad_hours_settings_are_one_line_errors(values, message):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"hours": values})
    assert message in str(err.value)


@pytest.mark.parametrize("data, message", [
    ({"targets": {"gold": 0}}, "[targets] gold must be more than 0 support hours"),
    ({"targets": {"warn_before_hours": -1}}, "[targets] warn_before_hours must not be negative"),
    ({"targets": {"platinum": 1}}, "unknown key 'platinum' in [targets]"),
    ({"lifecycle": {"reopen_window_days": 0}}, "[lifecycle] reopen_window_days must be at least 1"),
])
def test_bad_target_and_day_settings_are_refused(data, message):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(data)
    assert message in str(err.value)
