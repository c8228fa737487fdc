"""The customers' views of tickets (DESIGN §1 "views") and the people mail about them goes to.

My requests, requests I am CC'd on, my organisation's requests — each limited to the
account's own organisation, newest activity first — plus the followers and the main
contact of an organisation. Read-only functions that take a Session.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, bindparam, or_
from sqlmodel import Session, func, select

from storage.models import Account, Organization, Ticket, TicketCC
from storage.queries import write_pending_accounts

SCOPES = ("mine", "cc", "org")


@dataclass(frozen=True)
class PersonOnTicket:
    """An account that mail about a ticket goes to, with what its locale falls back on."""

    email: str
    name: str
    locale: str | None
    org_locale: str | None     # of the account's own organisation


@dataclass(frozen=True)
class TicketPeople:
    """Who mail about a ticket goes to, and the name of the ticket's organisation."""

    organization: str
    requester: PersonOnTicket
    ccs: list[PersonOnTicket]         # active CCs, by account id
    followers: list[PersonOnTicket]   # active accounts of the ticket's organisation that follow it, by account id


def _ticket_people_statement():
    account, org, cc = Account.__table__, Organization.__table__, TicketCC.__table__
    requester = account.c.id == bindparam("requester_id")
    is_cc = account.c.id.in_(select(cc.c.account_id).where(cc.c.ticket_id == bindparam("ticket_id")))
    follows = and_(account.c.organization_id == bindparam("org_id"), account.c.follows)
    org_name = select(org.c.name).where(org.c.id == bindparam("org_id")).scalar_subquery()
    return (select(account.c.email, account.c.name, account.c.locale, org.c.locale, account.c.active,
                   requester, is_cc, follows, org_name)
            .select_from(account.outerjoin(org, org.c.id == account.c.organization_id))
            .where(or_(requester, and_(account.c.active, or_(is_cc, follows))))
            .order_by(account.c.id))


_TICKET_PEOPLE = _ticket_people_statement()   # built once: every notification batch asks it


def ticket_people(session: Session, ticket_id: int, org_id: int, requester_id: int) -> TicketPeople:
    """The ticket's requester, active CCs and followers, and its organisation's name, in one statement.

    Plain columns rather than accounts: every notification batch asks, and only reads them.
    Changes to accounts still pending in the session (a name taken from the mail being
    processed) are written first, so the answer includes them.
    """
    write_pending_accounts(session)
    rows = session.connection().execute(_TICKET_PEOPLE, {"ticket_id": ticket_id, "org_id": org_id,
                                                         "requester_id": requester_id}).all()
    people = [(PersonOnTicket(*row[:4]), row) for row in rows]
    return TicketPeople(
        organization=rows[0][8],
        requester=next(person for person, row in people if row[5]),
        ccs=[person for person, row in people if row[4] and row[6]],
        followers=[person for person, row in people if row[4] and row[7]],
    )


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
