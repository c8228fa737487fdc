"""The ticket life cycle: pure transitions of (state, event, now) -> Transition.

No database, no clock, no network here. The pipeline and ``tick`` build a
:class:`TicketState` from storage, call :func:`apply` or :func:`due`, and carry
out the returned changes and notices.

Statuses (DESIGN §1): open, awaiting_reply, solved (reopenable for
``reopen_window_days``), closed (a customer's mail then opens a follow-up).
The reopen window is half-open: a reply at ``solved_at + 14 days - 1 s`` reopens,
one at exactly ``solved_at + 14 days`` opens a follow-up, and ``tick`` closes the
ticket from that same moment on.

The day rules are timers over stored timestamps, evaluated by :func:`due` for
``tick``: an agent's public reply starts the customer's inactivity clock
(``awaiting_since``), a customer's reply stops it; a service request awaiting the
customer closes after 30 days; a problem gets one status-update request after 30
days and closes 5 days after that request. All edges are half-open like the
reopen window: a rule fires at its deadline exactly, not a second before.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from gateway.config import LifecycleConfig


class Status(StrEnum):
    OPEN = "open"
    AWAITING_REPLY = "awaiting_reply"
    SOLVED = "solved"
    CLOSED = "closed"


AGENT_SETTABLE = frozenset({Status.OPEN, Status.AWAITING_REPLY, Status.SOLVED})


@dataclass(frozen=True)
class TicketState:
    status: Status
    type: str = "service_request"
    priority: str | None = None
    module: str | None = None
    solved_at: datetime | None = None
    closed_at: datetime | None = None
    last_customer_at: datetime | None = None        # the customer's last own (not automatic) mail
    awaiting_since: datetime | None = None          # the inactivity clock: started by an agent's reply
    status_request_sent_at: datetime | None = None  # set once per waiting period (problems)
    first_response_due_at: datetime | None = None   # the package's first-response target
    first_responded_at: datetime | None = None      # support's first public answer
    first_response_warning: str | None = None       # "due_soon" | "overdue": agents were warned


@dataclass(frozen=True)
class CustomerMessage:
    """A mail from an account of the ticket's organisation."""

    auto_generated: bool = False


@dataclass(frozen=True)
class AgentMessage:
    """A mail from an agent, with the ``#`` commands found at its top."""

    has_text: bool = True
    internal: bool = False
    status: Status | None = None
    priority: str | None = None
    type: str | None = None
    module: str | None = None


@dataclass(frozen=True)
class Transition:
    state: TicketState
    followup: bool = False               # the message belongs on a new follow-up ticket instead
    public: bool = True                  # whether the message is visible to customers
    notices: tuple[str, ...] = ()        # notification names for notifications.plan()
    changes: tuple[str, ...] = field(default=())   # audit lines, e.g. "status: solved -> open"
    rule: str | None = None              # the timer rule that made this change (``tick`` only)
    context: dict[str, Any] = field(default_factory=dict)   # facts for the notices' templates


def reopen_deadline(state: TicketState, settings: LifecycleConfig) -> datetime | None:
    if state.status is not Status.SOLVED or state.solved_at is None:
        return None
    return state.solved_at + timedelta(days=settings.reopen_window_days)


def apply(state: TicketState, event: CustomerMessage | AgentMessage, now: datetime,
          settings: LifecycleConfig) -> Transition:
    """The transition caused by one message on an existing ticket."""
    if isinstance(event, AgentMessage):
        return _with_clocks(state, _agent(state, event, now), event, now)
    return _with_clocks(state, _customer(state, event, now, settings), event, now)


def _with_clocks(old: TicketState, transition: Transition, event: CustomerMessage | AgentMessage,
                 now: datetime) -> Transition:
    """Keep the timer timestamps in step with a message.

    A customer's own reply stops the inactivity clock (the ticket is open again);
    an agent's public reply (re)starts it and opens a new waiting period, so a
    status-update request can be sent again; automatic mail changes nothing.
    """
    if transition.followup or (isinstance(event, CustomerMessage) and event.auto_generated):
        return transition
    new = transition.state
    if isinstance(event, CustomerMessage):
        new = replace(new, last_customer_at=now)
    elif transition.public:
        new = replace(new, first_responded_at=new.first_responded_at or now)
    if new.status is Status.AWAITING_REPLY:
        started = isinstance(event, AgentMessage) and (transition.public or old.status is not Status.AWAITING_REPLY)
        if started or new.awaiting_since is None:
            new = replace(new, awaiting_since=now, status_request_sent_at=None)
    else:
        new = replace(new, awaiting_since=None, status_request_sent_at=None)
    return replace(transition, state=new)


def _customer(state: TicketState, event: CustomerMessage, now: datetime,
              settings: LifecycleConfig) -> Transition:
    if event.auto_generated:
        return Transition(state, public=False, changes=("kept as internal note: automatic mail",))
    if state.status is Status.CLOSED:
        return Transition(state, followup=True)
    deadline = reopen_deadline(state, settings)
    if deadline is not None:
        if now >= deadline:
            return Transition(state, followup=True)
        new = replace(state, status=Status.OPEN, solved_at=None)
        return Transition(new, notices=("ticket_reopened", "agent_notice:reopened"),
                          changes=(_status_change(state.status, Status.OPEN),))
    new = replace(state, status=Status.OPEN)
    changes = () if state.status is Status.OPEN else (_status_change(state.status, Status.OPEN),)
    return Transition(new, notices=("agent_notice:customer_reply",), changes=changes)


def _agent(state: TicketState, event: AgentMessage, now: datetime) -> Transition:
    new, changes = _apply_fields(state, event)
    target = event.status
    if state.status is Status.CLOSED:
        target = None   # a closed ticket stays closed; the customer's next mail opens a follow-up
    elif target is None and event.has_text and not event.internal:
        target = Status.AWAITING_REPLY
    if target is not None and target != state.status:
        new = replace(new, status=target, closed_at=None,
                      solved_at=now if target is Status.SOLVED else None)
        changes += (_status_change(state.status, target),)
    public = event.has_text and not event.internal
    notices: tuple[str, ...] = ()
    if new.status is Status.SOLVED and state.status is not Status.SOLVED:
        notices = ("ticket_solved",)
    elif public:
        notices = ("agent_reply",)
    return Transition(new, public=public, notices=notices, changes=changes)


def _apply_fields(state: TicketState, event: AgentMessage) -> tuple[TicketState, tuple[str, ...]]:
    new, changes = state, ()
    if event.type and event.type != state.type:
        new = replace(new, type=event.type)
        changes += (f"type: {state.type} -> {event.type}",)
        if event.type == "service_request" and new.priority is not None:
            new = replace(new, priority=None)
            changes += (f"priority: {state.priority} -> none (service requests have no priority)",)
    if event.priority and event.priority != new.priority and new.type == "problem":
        changes += (f"priority: {new.priority or 'none'} -> {event.priority}",)
        new = replace(new, priority=event.priority)
    if event.module and event.module != new.module:
        changes += (f"module: {new.module or 'none'} -> {event.module}",)
        new = replace(new, module=event.module)
    return new, changes


def _status_change(old: Status, new: Status) -> str:
    return f"status: {old.value} -> {new.value}"


# ---- timers: the day rules ------------------------------------------------------------------

RULE_REOPEN_WINDOW = "reopen-window-ended"
RULE_REQUEST_INACTIVE = "service-request-inactive"
RULE_STATUS_REQUEST = "problem-status-request"
RULE_PROBLEM_INACTIVE = "problem-inactive"


def due(state: TicketState, now: datetime, settings: LifecycleConfig) -> Transition | None:
    """The day rule due on this ticket at ``now`` (at most one), or None. Used by ``tick``."""
    return due_close(state, now, settings) or due_inactivity(state, now, settings)


def next_deadline(state: TicketState, settings: LifecycleConfig) -> tuple[str, datetime] | None:
    """The next day rule that will fire on this ticket, and when, if nobody writes before."""
    deadline = reopen_deadline(state, settings)
    if deadline is not None:
        return RULE_REOPEN_WINDOW, deadline
    return inactivity_deadline(state, settings)


def inactivity_deadline(state: TicketState, settings: LifecycleConfig) -> tuple[str, datetime] | None:
    """For a ticket awaiting the customer: the next inactivity rule and its moment."""
    if state.status is not Status.AWAITING_REPLY or state.awaiting_since is None:
        return None
    if state.type != "problem":
        return RULE_REQUEST_INACTIVE, state.awaiting_since + timedelta(days=settings.service_request_autoclose_days)
    if state.status_request_sent_at is None:
        return RULE_STATUS_REQUEST, state.awaiting_since + timedelta(days=settings.problem_status_request_days)
    return RULE_PROBLEM_INACTIVE, state.status_request_sent_at + timedelta(
        days=settings.problem_close_after_request_days)


def due_inactivity(state: TicketState, now: datetime, settings: LifecycleConfig) -> Transition | None:
    """The status-update request or automatic close of a ticket the customer left unanswered, or None."""
    found = inactivity_deadline(state, settings)
    if found is None or now < found[1]:
        return None
    rule = found[0]
    if rule == RULE_STATUS_REQUEST:
        days, close_days = settings.problem_status_request_days, settings.problem_close_after_request_days
        return Transition(replace(state, status_request_sent_at=now), public=False, rule=rule,
                          notices=("status_update_request",),
                          changes=(f"status update requested (rule {rule}: no reply from the customer for "
                                   f"{days} days; closes in {close_days} days without one)",),
                          context={"waiting_days": days, "close_after_days": close_days,
                                   "close_at": now + timedelta(days=close_days)})
    days = (settings.service_request_autoclose_days if rule == RULE_REQUEST_INACTIVE
            else settings.problem_status_request_days + settings.problem_close_after_request_days)
    why = (f"no reply from the customer for {days} days" if rule == RULE_REQUEST_INACTIVE else
           f"no reply in the {settings.problem_close_after_request_days} days after the status-update request")
    new = replace(state, status=Status.CLOSED, closed_at=now, awaiting_since=None, status_request_sent_at=None)
    return Transition(new, public=False, rule=rule, notices=("ticket_auto_closed",),
                      changes=(f"{_status_change(state.status, Status.CLOSED)} (rule {rule}: {why})",),
                      context={"rule": rule, "days": days})


def due_close(state: TicketState, now: datetime, settings: LifecycleConfig) -> Transition | None:
    """The automatic close of a solved ticket whose reopen window has ended, or None."""
    deadline = reopen_deadline(state, settings)
    if deadline is None or now < deadline:
        return None
    new = replace(state, status=Status.CLOSED, closed_at=now)
    return Transition(new, public=False, notices=("ticket_auto_closed",), rule=RULE_REOPEN_WINDOW,
                      changes=(f"status: solved -> closed (rule {RULE_REOPEN_WINDOW}: "
                               f"solved more than {settings.reopen_window_days} days ago)",),
                      context={"rule": RULE_REOPEN_WINDOW, "days": settings.reopen_window_days})
