"""First-response targets per package and the warnings to agents, at their edges. Pure."""
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.config import TargetsConfig
from gateway.hours import default_support_hours
from gateway.lifecycle import Status, TicketState
from gateway.targets import due_warning, first_response_due, support_hours_left

BERLIN = ZoneInfo("Europe/Berlin")
HOURS = default_support_hours()
TARGETS = TargetsConfig()
SECOND = timedelta(seconds=1)


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


@pytest.mark.parametrize("package, opened, due", [
    ("gold", berlin("2026-03-02 10:00"), berlin("2026-03-02 14:00")),
    ("silver", berlin("2026-03-02 10:00"), berlin("2026-03-02 18:00")),
    ("bronze", berlin("2026-03-02 10:00"), berlin("2026-03-03 17:00")),
    ("basic", berlin("2026-03-02 10:00"), berlin("2026-03-04 16:00")),
    ("gold", berlin("2026-03-06 17:59"), berlin("2026-03-09 12:59")),    # Friday 17:59
    ("silver", berlin("2026-03-07 11:00"), berlin("2026-03-09 17:00")),  # Saturday
    ("gold", berlin("2026-03-27 17:59"), berlin("2026-03-30 12:59")),    # Friday before the March DST change
    ("gold", berlin("2026-10-24 09:30"), berlin("2026-10-26 13:00")),    # Saturday of the October DST change
])
def test_first_response_due_by_package(package, opened, due):
    assert first_response_due(opened, package, HOURS, TARGETS) == due


DUE = berlin("2026-03-09 12:59")          # a gold ticket opened Friday 17:59
OPEN = TicketState(Status.OPEN, first_response_due_at=DUE)


@pytest.mark.parametrize("now, stage", [
    (berlin("2026-03-06 18:30"), None),
    (berlin("2026-03-09 11:59") - SECOND, None),        # 1 h and a second left
    (berlin("2026-03-09 11:59"), "due_soon"),           # exactly 1 support hour left
    (DUE - SECOND, "due_soon"),
    (DUE, "overdue"),
    (berlin("2026-03-14 10:00"), "overdue"),            # first seen days later: only the overdue warning
])
def test_warning_stage_at_the_edges(now, stage):
    t = due_warning(OPEN, now, HOURS, TARGETS)
    assert (t.context["stage"] if t else None) == stage
    if t:
        assert t.notices == ("target_warning",) and t.state.first_response_warning == stage
        assert t.rule == {"due_soon": "first-response-due-soon", "overdue": "first-response-missed"}[stage]


def test_each_warning_stage_is_sent_once():
    soon = due_warning(OPEN, DUE - timedelta(minutes=30), HOURS, TARGETS)
    assert due_warning(soon.state, DUE - timedelta(minutes=10), HOURS, TARGETS) is None
    late = due_warning(soon.state, DUE, HOURS, TARGETS)
    assert late.context["stage"] == "overdue"
    assert due_warning(late.state, DUE + timedelta(days=3), HOURS, TARGETS) is None


@pytest.mark.parametrize("state", [
    replace(OPEN, first_responded_at=berlin("2026-03-09 09:05")),    # support answered
    replace(OPEN, status=Status.AWAITING_REPLY),
    replace(OPEN, status=Status.SOLVED),
    replace(OPEN, status=Status.CLOSED),
    TicketState(Status.OPEN),                                        # no target stored
])
def test_no_warning_when_no_first_response_is_awaited(state):
    assert due_warning(state, DUE + timedelta(hours=5), HOURS, TARGETS) is None
    assert support_hours_left(state, DUE, HOURS) is None


def test_hours_left_count_support_time_and_go_negative_when_overdue():
    assert support_hours_left(OPEN, berlin("2026-03-07 12:00"), HOURS) == 3.98   # Saturday: Monday's 3 h 59 min
    assert support_hours_left(OPEN, berlin("2026-03-09 14:59"), HOURS) == -2.0


def test_warning_threshold_is_configurable():
    early = TargetsConfig(warn_before_hours=4)
    assert due_warning(OPEN, berlin("2026-03-09 09:00"), HOURS, early).context["stage"] == "due_soon"
    assert due_warning(OPEN, berlin("2026-03-09 09:00"), HOURS, TARGETS) is None
