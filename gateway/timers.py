"""Timers: every rule due at a moment, fired once (``postdesk tick`` and the serve loop).

Driven by stored timestamps, never by sleeping. Each due ticket is locked
(``SKIP LOCKED`` on PostgreSQL, the write lock on SQLite), re-checked by the
pure rule and changed in the same transaction as its audit event, so running
``tick`` twice fires nothing twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from gateway import lifecycle
from gateway.mailer import Deps
from storage import queries
from storage import tickets as store
from storage.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Firing:
    ticket: int
    rule: str
    change: str


def run_due(engine: Engine, deps: Deps, now: datetime, dry_run: bool = False) -> list[Firing]:
    window = timedelta(days=deps.settings.lifecycle.reopen_window_days)
    fired: list[Firing] = []
    with transaction(engine) as session:
        for ticket in queries.solved_tickets_due(session, now - window):
            transition = lifecycle.due_close(store.state_of(ticket), now, deps.settings.lifecycle)
            if transition is None:
                continue
            fired.append(Firing(ticket.id, "reopen-window-ended", "; ".join(transition.changes)))
            if dry_run:
                continue
            store.save_state(session, ticket, transition.state, now)
            for change in transition.changes:
                queries.add_event(session, ticket.id, now, "system", "auto-close", change)
        if dry_run:
            session.rollback()
    for firing in fired:
        log.info("tick: #%s %s%s", firing.ticket, firing.rule, " (dry run)" if dry_run else "")
    return fired
