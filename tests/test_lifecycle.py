"""The pure ticket life cycle: every transition and both sides of the 14-day boundary."""
from datetime import datetime, timedelta, timezone

import pytest

from gateway.config import LifecycleConfig
from gateway.lifecycle import (
    AgentMessage, CustomerMessage, Status, TicketState, apply, due_close, reopen_deadline,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
SETTINGS = LifecycleConfig()


def solved(days_ago: float) -> TicketState:
    return TicketState(Status.SOLVED, solved_at=NOW - timedelta(days=days_ago))


@pytest.mark.parametrize("status", [Status.OPEN, Status.AWAITING_REPLY])
def test_customer_message_sets_open_and_tells_agents(status):
    t = apply(TicketState(status), CustomerMessage(), NOW, SETTINGS)
    assert t.state.status is Status.OPEN
    assert t.notices == ("agent_notice:customer_reply",)
    assert not t.followup


def test_agent_public_reply_sets_awaiting_reply_and_tells_customer():
    t = apply(TicketState(Status.OPEN), AgentMessage(), NOW, SETTINGS)
    assert t.state.status is Status.AWAITING_REPLY
    assert t.notices == ("agent_reply",)
    assert t.public


def test_agent_note_changes_nothing_and_tells_no_customer():
    t = apply(TicketState(Status.OPEN), AgentMessage(internal=True), NOW, SETTINGS)
    assert t.state.status is Status.OPEN
    assert t.notices == ()
    assert not t.public


def test_agent_solves_with_status_command():
    t = apply(TicketState(Status.OPEN), AgentMessage(status=Status.SOLVED), NOW, SETTINGS)
    assert t.state.status is Status.SOLVED and t.state.solved_at == NOW
    assert t.notices == ("ticket_solved",)
    assert reopen_deadline(t.state, SETTINGS) == NOW + timedelta(days=14)


def test_agent_commands_without_text_are_not_a_public_reply():
    t = apply(TicketState(Status.OPEN, type="problem"), AgentMessage(has_text=False, priority="blocker"),
              NOW, SETTINGS)
    assert t.state.status is Status.OPEN and t.state.priority == "blocker"
    assert t.notices == () and not t.public


def test_priority_is_not_set_on_service_requests_and_cleared_on_type_change():
    t = apply(TicketState(Status.OPEN, type="service_request"), AgentMessage(has_text=False, priority="high"),
              NOW, SETTINGS)
    assert t.state.priority is None
    t = apply(TicketState(Status.OPEN, type="problem", priority="high"),
              AgentMessage(has_text=False, type="service_request"), NOW, SETTINGS)
    assert t.state.type == "service_request" and t.state.priority is None


@pytest.mark.parametrize("days_ago, reopens", [
    (0, True),
    (13.99, True),
    (14 - 1 / 86400, True),      # one second before the window ends
    (14, False),                 # exactly at the end: follow-up
    (14 + 1 / 86400, False),     # one second after
    (40, False),
])
def test_reply_to_solved_ticket_reopens_only_within_14_days(days_ago, reopens):
    t = apply(solved(days_ago), CustomerMessage(), NOW, SETTINGS)
    assert t.followup is (not reopens)
    if reopens:
        assert t.state.status is Status.OPEN and t.state.solved_at is None
        assert "ticket_reopened" in t.notices


def test_reply_to_closed_ticket_opens_followup():
    t = apply(TicketState(Status.CLOSED, closed_at=NOW), CustomerMessage(), NOW, SETTINGS)
    assert t.followup and t.state.status is Status.CLOSED


def test_automatic_mail_never_changes_status():
    for state in (solved(1), TicketState(Status.AWAITING_REPLY), TicketState(Status.CLOSED)):
        t = apply(state, CustomerMessage(auto_generated=True), NOW, SETTINGS)
        assert t.state == state and not t.followup and not t.public and t.notices == ()


def test_agent_reply_keeps_closed_ticket_closed():
    t = apply(TicketState(Status.CLOSED, closed_at=NOW), AgentMessage(), NOW, SETTINGS)
    assert t.state.status is Status.CLOSED


@pytest.mark.parametrize("days_ago, closes", [(14 - 1 / 86400, False), (14, True), (15, True), (1, False)])
def test_due_close_at_the_end_of_the_reopen_window(days_ago, closes):
    t = due_close(solved(days_ago), NOW, SETTINGS)
    assert (t is not None) is closes
    if closes:
        assert t.state.status is Status.CLOSED and t.state.closed_at == NOW


def test_due_close_ignores_unsolved_tickets():
    assert due_close(TicketState(Status.OPEN), NOW, SETTINGS) is None


def test_reopen_window_is_configurable():
    t = apply(solved(3), CustomerMessage(), NOW, LifecycleConfig(reopen_window_days=2))
    assert t.followup
