"""Response targets: when support must first answer a ticket, and when agents are warned. Pure.

Input: a :class:`~gateway.lifecycle.TicketState`, ``now``, the :class:`~gateway.hours.SupportHours`
and the ``[targets]`` settings. Output: due times, support hours left, and the
warning :class:`~gateway.lifecycle.Transition` that ``tick`` carries out.

A ticket's first-response target is its package's number of support hours,
counted from the moment it was opened and fixed then (``first_response_due_at``).
It is met by support's first public answer. While a ticket is open and still
unanswered, agents are warned once when ``warn_before_hours`` support hours or
fewer are left (rule ``first-response-due-soon``) and once when the target has
passed (rule ``first-response-missed``). No database, clock or network here.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from gateway.config import TargetsConfig
from gateway.hours import SupportHours, in_hours
from gateway.lifecycle import Status, TicketState, Transition

RULE_DUE_SOON = "first-response-due-soon"
RULE_MISSED = "first-response-missed"
DUE_SOON, OVERDUE = "due_soon", "overdue"


def first_response_due(opened_at: datetime, package: str, hours: SupportHours,
                       targets: TargetsConfig) -> datetime:
    """The first-response due time of a ticket of ``package`` opened at ``opened_at``."""
    return hours.add(opened_at, targets.first_response_hours(package))


def awaiting_first_response(state: TicketState) -> bool:
    """True while the ticket waits for support and support has not answered it yet."""
    return (state.first_response_due_at is not None and state.first_responded_at is None
            and state.status is Status.OPEN)


def support_hours_left(state: TicketState, now: datetime, hours: SupportHours) -> float | None:
    """Support hours until the target (negative: how far past it), or None when no target is running."""
    if not awaiting_first_response(state):
        return None
    return round(in_hours(hours.between(now, state.first_response_due_at)), 2)


def due_warning(state: TicketState, now: datetime, hours: SupportHours,
                targets: TargetsConfig) -> Transition | None:
    """The warning to agents that is due on this ticket at ``now``, or None.

    Each stage is told once: "due soon" when at most ``warn_before_hours`` support
    hours are left, "overdue" from the due time on. A ticket first seen after its
    due time gets only the "overdue" warning.
    """
    if not awaiting_first_response(state):
        return None
    due = state.first_response_due_at
    left = support_hours_left(state, now, hours)    # rounded, for people
    if now >= due:
        stage, rule = OVERDUE, RULE_MISSED
        change = f"first-response target missed: it was due {due.isoformat()} (rule {rule})"
    elif hours.between(now, due) <= timedelta(hours=targets.warn_before_hours):
        stage, rule = DUE_SOON, RULE_DUE_SOON
        change = f"first-response target due {due.isoformat()}, {left:g} support hours left (rule {rule})"
    else:
        return None
    if state.first_response_warning in (stage, OVERDUE):
        return None
    return Transition(replace(state, first_response_warning=stage), public=False, rule=rule,
                      notices=("target_warning",), changes=(change,),
                      context={"stage": stage, "due_at": due, "hours_left": left})
