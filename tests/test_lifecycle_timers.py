"""The pure day rules at their exact edges: 14 days, 30 days, 30 + 5 days, and what resets the clocks."""
from datetime import datetime, timedelta, timezone

import pytest

from gateway.config import LifecycleConfig
from gateway.lifecycle import (
    AgentMessage, CustomerMessage, Status, TicketState, apply, due, next_deadline,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SETTINGS = LifecycleConfig()
SECOND = timedelta(seconds=1)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def awaiting(type_: str, since: datetime = T0, request_at: datetime | None = None) -> TicketState:
    return TicketState(Status.AWAITING_REPLY, type=type_, awaiting_since=since, status_request_sent_at=request_at)


@pytest.mark.parametrize("after, rule", [
    (days(14) - SECOND, None),
    (days(14), "reopen-window-ended"),
    (days(14) + SECOND, "reopen-window-ended"),
])
def test_solved_ticket_closes_when_the_reopen_window_ends(after, rule):
    t = due(TicketState(Status.SOLVED, solved_at=T0), T0 + after, SETTINGS)
    assert (t.rule if t else None) == rule
    if t:
        assert t.state.status is Status.CLOSED and t.notices == ("ticket_auto_closed",)
        assert t.context == {"rule": "reopen-window-ended", "days": 14}


@pytest.mark.parametrize("after, fires", [(days(30) - SECOND, False), (days(30), True), (days(31), True)])
def test_service_request_awaiting_the_customer_closes_after_30_days(after, fires):
    t = due(awaiting("service_request"), T0 + after, SETTINGS)
    assert (t is not None) is fires
    if fires:
        assert t.rule == "service-request-inactive" and t.state.status is Status.CLOSED
        assert t.state.closed_at == T0 + after and t.state.awaiting_since is None
        assert t.notices == ("ticket_auto_closed",) and t.context == {"rule": "service-request-inactive", "days": 30}
        assert "rule service-request-inactive" in t.changes[0]


@pytest.mark.parametrize("after, fires", [(days(30) - SECOND, False), (days(30), True)])
def test_problem_awaiting_the_customer_gets_a_status_request_after_30_days(after, fires):
    t = due(awaiting("problem"), T0 + after, SETTINGS)
    assert (t is not None) is fires
    if fires:
        assert t.rule == "problem-status-request" and t.notices == ("status_update_request",)
        assert t.state.status is Status.AWAITING_REPLY and t.state.status_request_sent_at == T0 + after
        assert t.context["close_at"] == T0 + days(35) and t.context["close_after_days"] == 5


@pytest.mark.parametrize("after, rule", [
    (days(30) + SECOND, None),                 # the request is sent once per waiting period
    (days(35) - SECOND, None),
    (days(35), "problem-inactive"),
])
def test_problem_closes_5_days_after_the_status_request(after, rule):
    state = awaiting("problem", request_at=T0 + days(30))
    t = due(state, T0 + after, SETTINGS)
    assert (t.rule if t else None) == rule
    if t:
        assert t.state.status is Status.CLOSED and t.state.status_request_sent_at is None
        assert t.context == {"rule": "problem-inactive", "days": 35}


def test_a_late_status_request_still_gives_the_customer_5_days():
    # tick did not run for a while: the request goes out at day 40, the close follows at day 45, not at once.
    t = due(awaiting("problem"), T0 + days(40), SETTINGS)
    assert t.rule == "problem-status-request"
    assert due(t.state, T0 + days(45) - SECOND, SETTINGS) is None
    assert due(t.state, T0 + days(45), SETTINGS).rule == "problem-inactive"


@pytest.mark.parametrize("type_", ["service_request", "problem"])
def test_customer_reply_at_day_29_resets_the_inactivity_clock(type_):
    t = apply(awaiting(type_), CustomerMessage(), T0 + days(29), SETTINGS)
    assert t.state.status is Status.OPEN and t.state.awaiting_since is None
    assert t.state.last_customer_at == T0 + days(29)
    assert due(t.state, T0 + days(30), SETTINGS) is None
    # support answers the same day: a new 30-day period starts from that answer
    answer = apply(t.state, AgentMessage(), T0 + days(29, ), SETTINGS)
    assert answer.state.awaiting_since == T0 + days(29)
    assert due(answer.state, T0 + days(59) - SECOND, SETTINGS) is None
    assert due(answer.state, T0 + days(59), SETTINGS) is not None


def test_customer_reply_after_the_status_request_stops_the_close():
    state = awaiting("problem", request_at=T0 + days(30))
    t = apply(state, CustomerMessage(), T0 + days(33), SETTINGS)
    assert t.state.status_request_sent_at is None and due(t.state, T0 + days(35), SETTINGS) is None


def test_agent_reply_starts_a_new_waiting_period_with_a_new_status_request():
    state = awaiting("problem", request_at=T0 + days(30))
    t = apply(state, AgentMessage(), T0 + days(32), SETTINGS)
    assert t.state.awaiting_since == T0 + days(32) and t.state.status_request_sent_at is None
    assert due(t.state, T0 + days(62), SETTINGS).rule == "problem-status-request"


@pytest.mark.parametrize("event", [CustomerMessage(auto_generated=True), AgentMessage(internal=True),
                                   AgentMessage(has_text=False, priority="high")])
def test_automatic_mail_and_internal_notes_leave_the_clock_running(event):
    state = awaiting("problem")
    t = apply(state, event, T0 + days(29), SETTINGS)
    assert t.state.awaiting_since == T0
    assert due(t.state, T0 + days(30), SETTINGS).rule == "problem-status-request"


def test_first_public_answer_is_the_first_response():
    state = TicketState(Status.OPEN, first_response_due_at=T0 + days(1))
    note = apply(state, AgentMessage(internal=True), T0 + SECOND, SETTINGS)
    assert note.state.first_responded_at is None
    answer = apply(note.state, AgentMessage(), T0 + days(2), SETTINGS)
    assert answer.state.first_responded_at == T0 + days(2)
    again = apply(apply(answer.state, CustomerMessage(), T0 + days(3), SETTINGS).state, AgentMessage(),
                  T0 + days(4), SETTINGS)
    assert again.state.first_responded_at == T0 + days(2)


@pytest.mark.parametrize("state, expected", [
    (TicketState(Status.SOLVED, solved_at=T0), ("reopen-window-ended", T0 + days(14))),
    (awaiting("service_request"), ("service-request-inactive", T0 + days(30))),
    (awaiting("problem"), ("problem-status-request", T0 + days(30))),
    (awaiting("problem", request_at=T0 + days(31)), ("problem-inactive", T0 + days(36))),
    (TicketState(Status.OPEN), None),
    (TicketState(Status.CLOSED, closed_at=T0), None),
])
def test_next_deadline_names_the_rule_and_its_moment(state, expected):
    assert next_deadline(state, SETTINGS) == expected


def test_day_rules_follow_the_configured_numbers():
    custom = LifecycleConfig(service_request_autoclose_days=7, problem_status_request_days=3,
                             problem_close_after_request_days=2)
    assert due(awaiting("service_request"), T0 + days(7), custom).rule == "service-request-inactive"
    request = due(awaiting("problem"), T0 + days(3), custom)
    assert request.rule == "problem-status-request"
    assert due(request.state, T0 + days(5), custom).rule == "problem-inactive"
