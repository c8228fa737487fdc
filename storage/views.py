"""The customers' views of tickets (DESIGN §1 "views") and the people mail about them goes to.

My requests, requests I am CC'd on, my organisation's requests — each limited to the
account's own organisation, newest activity first — plus the followers and the main
contact of an organisation. Read-only functions that take a Session.
"""
from __future__ import annotations

from sqlmodel import Session, func, select

from storage.models import Account, Ticket, TicketCC

SCOPES = ("mine", "cc", "org")


def followers(session: Session, org_id: int) -> list[Account]:
    """Active accounts of the organisation that follow it."""
    query = select(Account).where(Account.organization_id == org_id, Account.active, Account.follows)
    return list(session.exec(query.order_by(Account.id)))


def main_contact(session: Session, org_id: int) -> Account | None:
    """The organisation's main contact: its oldest active account (``org add`` creates it first)."""
    query = select(Account).where(Account.organization_id == org_id, Account.active).order_by(Account.id)
    return session.exec(query.limit(1)).first()


def _scope_filter(query, account: Account, scope: str):
    query = query.where(Ticket.organization_id == account.organization_id)
    if scope == "mine":
        return query.where(Ticket.requester_id == account.id)
    if scope == "cc":
        cc = select(TicketCC.ticket_id).where(TicketCC.account_id == account.id)
        return query.where(Ticket.id.in_(cc))
    if scope == "org":
        return query
    raise ValueError(f"unknown scope {scope!r}")


def tickets_in_view(session: Session, account: Account, scope: str, limit: int) -> tuple[list[Ticket], int]:
    """The newest ``limit`` tickets of a view (by last activity) and how many more there are."""
    total = session.exec(_scope_filter(select(func.count()).select_from(Ticket), account, scope)).one()
    query = _scope_filter(select(Ticket), account, scope).order_by(Ticket.updated_at.desc(), Ticket.id.desc())
    tickets = list(session.exec(query.limit(limit)))
    return tickets, max(total - len(tickets), 0)
