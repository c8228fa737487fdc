"""Queries of the timers: which tickets may be due, and locking one ticket to fire a rule on it.

Candidate queries only narrow the search with SQL and take no locks; the timer
then locks each ticket on its own (``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` write lock serialises whole
transactions) and re-checks the pure rule on the row it holds.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, select

from storage.models import Organization, Ticket


def solved_candidates(session: Session, solved_before: datetime) -> list[int]:
    query = select(Ticket.id).where(Ticket.status == "solved", Ticket.solved_at <= solved_before)
    return list(session.exec(query.order_by(Ticket.id)))


def awaiting_candidates(session: Session, waiting_since_before: datetime) -> list[int]:
    """Tickets awaiting the customer since ``waiting_since_before`` or earlier."""
    since = func.coalesce(Ticket.awaiting_since, Ticket.status_changed_at)
    query = select(Ticket.id).where(Ticket.status == "awaiting_reply", since <= waiting_since_before)
    return list(session.exec(query.order_by(Ticket.id)))


def unanswered_candidates(session: Session, due_before: datetime, org_name: str | None = None) -> list[int]:
    """Open tickets without a first response whose target falls at ``due_before`` or earlier."""
    query = select(Ticket.id).where(
        Ticket.status == "open", Ticket.first_responded_at.is_(None),
        Ticket.first_response_due_at.is_not(None), Ticket.first_response_due_at <= due_before,
    )
    if org_name:
        query = query.join(Organization).where(Organization.name_key == org_name.strip().lower())
    return list(session.exec(query.order_by(Ticket.first_response_due_at, Ticket.id)))


def unwarned(session: Session, ids: list[int]) -> list[int]:
    """Of ``ids``, those whose agents have not yet had the final (overdue) warning."""
    if not ids:
        return []
    query = select(Ticket.id).where(Ticket.id.in_(ids),
                                    or_(Ticket.first_response_warning.is_(None),
                                        Ticket.first_response_warning != "overdue"))
    return list(session.exec(query.order_by(Ticket.id)))


def lock_ticket(session: Session, ticket_id: int) -> Ticket | None:
    """The ticket, freshly read and locked for this transaction; None when another process holds it."""
    query = (select(Ticket).where(Ticket.id == ticket_id)
             .with_for_update(skip_locked=True).execution_options(populate_existing=True))
    return session.exec(query).first()


def package_of(session: Session, organization_id: int) -> str:
    return session.get(Organization, organization_id).package
