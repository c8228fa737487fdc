"""Timers: every rule due at a moment, fired once (``postdesk tick`` and the serve loop).

Driven by stored timestamps, never by sleeping. The rules themselves are pure
(``lifecycle.due``: the 14-, 30- and 35-day rules; ``targets.due_warning``: the
first-response warnings); this module finds candidates, then fires each ticket in
a transaction of its own: lock the row (``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL, where a ticket another process holds is skipped and fired by that
process; SQLite's ``BEGIN IMMEDIATE`` serialises the transactions), re-check the
rule on the freshly read row, then save the state, the system event (actor
``system``, kind = the rule's name) and the notifications together. So a rule
fires and its mail is queued once, however often and in how many processes
``tick`` runs. Ticket rows are read and changed here, through ``storage``. Each
pass also deletes the out-of-order notes that outlived ``[desk] late_parent_days``
(``arrival.prune_notes``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway import lifecycle, notifications, targets
from gateway.arrival import prune_notes
from gateway.config import Settings
from gateway.hours import support_hours
from gateway.mailer import Deps, agent_recipients, queue, ticket_facts
from storage import queries, timing
from storage import tickets as store
from storage.db import transaction
from storage.models import Ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Firing:
    ticket: int
    rule: str
    change: str
    error: str | None = None      # the rule was due but could not be carried out (nothing was changed)


def due_rule(state: lifecycle.TicketState, now: datetime, settings: Settings) -> lifecycle.Transition | None:
    """The one rule due on a ticket at ``now``: a day rule, else a first-response warning."""
    return (lifecycle.due(state, now, settings.lifecycle)
            or targets.due_warning(state, now, support_hours(settings.hours), settings.targets))


def run_due(engine: Engine, deps: Deps, now: datetime, dry_run: bool = False) -> list[Firing]:
    """Fire every rule due at ``now``, then delete outlived notes (``dry_run``: only report what would happen)."""
    fired: list[Firing] = []
    for ticket_id in _candidates(engine, deps.settings, now):
        try:
            firing = _fire(engine, deps, ticket_id, now, dry_run)
        except Exception as exc:  # noqa: BLE001 - one broken ticket must not stop the others
            log.exception("tick: #%s failed; it stays due", ticket_id)
            firing = Firing(ticket_id, "error", "", error=f"{type(exc).__name__}: {exc}")
        if firing is not None:
            fired.append(firing)
            log.info("tick: #%s %s%s", firing.ticket, firing.rule, " (dry run)" if dry_run else "")
    prune_notes(engine, deps.settings, now, dry_run)
    return fired


def _candidates(engine: Engine, settings: Settings, now: datetime) -> list[int]:
    """Tickets that may be due; a superset, each is re-checked under its lock."""
    life = settings.lifecycle
    shortest_wait = min(life.service_request_autoclose_days, life.problem_status_request_days)
    horizon = support_hours(settings.hours).add(now, settings.targets.warn_before_hours)
    with transaction(engine) as session:
        ids = timing.solved_candidates(session, now - timedelta(days=life.reopen_window_days))
        ids += timing.awaiting_candidates(session, now - timedelta(days=shortest_wait))
        ids += timing.unwarned(session, timing.unanswered_candidates(session, max(now, horizon)))
    return sorted(set(ids))


def _fire(engine: Engine, deps: Deps, ticket_id: int, now: datetime, dry_run: bool) -> Firing | None:
    with transaction(engine) as session:
        ticket = timing.lock_ticket(session, ticket_id)
        if ticket is None:
            return None   # another process holds the row and fires whatever is due on it
        transition = due_rule(store.state_of(ticket), now, deps.settings)
        if transition is None:
            return None   # fired already (another tick) or no longer due (someone wrote)
        firing = Firing(ticket.id, transition.rule, "; ".join(transition.changes))
        if dry_run:
            session.rollback()
            return firing
        store.save_state(session, ticket, transition.state, now)
        for change in transition.changes:
            queries.add_event(session, ticket.id, now, "system", transition.rule, change)
        _notify(session, deps, ticket, transition, now)
    return firing


def _notify(session: Session, deps: Deps, ticket: Ticket, transition: lifecycle.Transition,
            now: datetime) -> None:
    if not transition.notices:
        return
    facts = ticket_facts(session, ticket, deps)
    system = notifications.Recipient(deps.settings.smtp.support_address, "", deps.settings.desk.default_locale,
                                     "system")
    planned = notifications.plan(transition.notices, facts, None, agent_recipients(session), author=system,
                                 extra=dict(transition.context))
    queue(session, deps, ticket, facts, planned, now)


# ---- views -------------------------------------------------------------------------------

def next_timer(ticket: Ticket, settings: Settings) -> dict | None:
    """The next day rule that will fire on ``ticket`` if nobody writes, for ``ticket show``."""
    found = lifecycle.next_deadline(store.state_of(ticket), settings.lifecycle)
    return None if found is None else {"rule": found[0], "at": found[1].isoformat()}


def response_due(session: Session, settings: Settings, now: datetime, *, within_hours: float | None = None,
                 overdue_only: bool = False, org_name: str | None = None) -> list[dict]:
    """Unanswered open tickets whose first-response target is at most ``within_hours`` support
    hours away or already past (``overdue_only``: only those past), soonest first."""
    hours = support_hours(settings.hours)
    horizon = now if overdue_only else hours.add(now, within_hours or 0.0)
    rows = []
    for ticket_id in timing.unanswered_candidates(session, max(now, horizon), org_name):
        ticket = session.get(Ticket, ticket_id)
        left = targets.support_hours_left(store.state_of(ticket), now, hours)
        overdue = now >= ticket.first_response_due_at
        if left is None or (overdue_only and not overdue):
            continue
        if not overdue and hours.between(now, ticket.first_response_due_at) > timedelta(hours=within_hours or 0.0):
            continue
        rows.append({**queries.ticket_summary(session, ticket), "support_hours_left": left, "overdue": overdue})
    return rows
