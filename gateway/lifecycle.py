"""The ticket life cycle: pure transitions of (state, event, now) -> Transition.

No database, no clock, no network here. The pipeline and ``tick`` build a
:class:`TicketState` from storage, call :func:`apply` or :func:`due`, and carry
out the returned changes and notices.

Statuses (DESIGN §1): open, awaiting_reply, solved (reopenable for
``reopen_window_days``), closed (a customer's mail then opens a follow-up).
The reopen window is half-open: a reply at ``solved_at + 14 days - 1 s`` reopens,
one at exactly ``solved_at + 14 days`` opens a follow-up, and ``tick`` closes the
ticket from that same moment on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

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


def reopen_deadline(state: TicketState, settings: LifecycleConfig) -> datetime | None:
    if state.status is not Status.SOLVED or state.solved_at is None:
        return None
    return state.solved_at + timedelta(days=settings.reopen_window_days)


def apply(state: TicketState, event: CustomerMessage | AgentMessage, now: datetime,
          settings: LifecycleConfig) -> Transition:
    """The transition caused by one message on an existing ticket."""
    if isinstance(event, AgentMessage):
        return _agent(state, event, now)
    return _customer(state, event, now, settings)


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


def due_close(state: TicketState, now: datetime, settings: LifecycleConfig) -> Transition | None:
    """The automatic close of a solved ticket whose reopen window has ended, or None."""
    deadline = reopen_deadline(state, settings)
    if deadline is None or now < deadline:
        return None
    new = replace(state, status=Status.CLOSED, closed_at=now)
    return Transition(new, public=False, notices=(),
                      changes=(f"status: solved -> closed (rule reopen-window-ended: "
                               f"solved more than {settings.reopen_window_days} days ago)",))
