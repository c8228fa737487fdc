"""The customers' views of tickets (DESIGN §1 "views") and the people mail about them goes to.

My requests, requests I am CC'd on, my organisation's requests — each limited to the
account's own organisation, newest activity first — plus the followers and the main
contact of an organisation. Read-only functions that take a Session.
"""
from __future__ import annotations

from sqlalchemy import and_, bindparam, or_
from sqlmodel import Session, func, select

from storage.models import Account, Ticket, TicketCC

SCOPES = ("mine", "cc", "org")


def _ccs_and_followers_statement():
    is_cc = Account.id.in_(select(TicketCC.account_id).where(TicketCC.ticket_id == bindparam("ticket_id")))
    follows = and_(Account.organization_id == bindparam("org_id"), Account.follows)
    return select(Account, is_cc, follows).where(Account.active, or_(is_cc, follows)).order_by(Account.id)


_CCS_AND_FOLLOWERS = _ccs_and_followers_statement()   # built once: every notification batch asks it


def ccs_and_followers(session: Session, ticket_id: int, org_id: int) -> tuple[list[Account], list[Account]]:
    """The ticket's active CCs, and the active accounts of the organisation that follow it.

    One statement for both lists (each by account id), since every notification batch needs both.
    """
    rows = session.exec(_CCS_AND_FOLLOWERS, params={"ticket_id": ticket_id, "org_id": org_id}).all()
    return [a for a, cc, _ in rows if cc], [a for a, _, follower in rows if follower]


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
