"""Read and write functions of the pipeline, the worker and the views; each takes a Session."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, literal, null, union_all
from sqlmodel import Session, select

from gateway.policy import Person
from gateway.tokens import Signer, new_secret
from storage.models import (
    Account, Agent, Attachment, Inbound, Meta, MessageRecord, Organization, Outbox, SharedAddress,
    Ticket, TicketCC, TicketEvent,
)
from storage.references import tickets_naming


def signing_secret(session: Session) -> bytes:
    """The installation's signing secret, created on first use and kept in the database."""
    meta = session.get(Meta, "secret")
    if meta is None:
        meta = Meta(key="secret", value=new_secret())
        session.add(meta)
        session.flush()
    return meta.value.encode("utf-8")


def _person_columns(address):
    return (
        select(Agent.active).where(Agent.email == address).scalar_subquery(),
        select(SharedAddress.id).where(SharedAddress.email == address).scalar_subquery(),
        select(Account.active).where(Account.email == address).scalar_subquery(),
        select(Organization.name).join(Account, Account.organization_id == Organization.id)
        .where(Account.email == address).scalar_subquery(),
    )


def _author_statement():
    address = bindparam("address")
    return select(
        *_person_columns(address),
        select(Agent.name).where(Agent.email == address).scalar_subquery(),
        select(Agent.locale).where(Agent.email == address).scalar_subquery(),
        select(Outbox.id).where(Outbox.message_id == bindparam("message_id")).scalar_subquery(),
    )


# Built once: every delivered message asks the first before any transaction, the worker the second.
_PERSON = select(*_person_columns(bindparam("address")))
_AUTHOR = _author_statement()


def _person(address: str, agent_active, shared_id, account_active, org_name) -> Person:
    if agent_active is not None:
        return Person(address, "agent", active=bool(agent_active))
    shared = shared_id is not None
    if account_active is None:
        return Person(address, None, marked_shared=shared)
    return Person(address, "account", active=bool(account_active), marked_shared=shared, organization=org_name)


def find_person(session: Session, address: str | None) -> Person | None:
    """Who ``address`` is (agent, account of an organisation, or nobody we know), in one statement."""
    if not address:
        return None
    address = address.lower()
    return _person(address, *session.connection().execute(_PERSON, {"address": address}).one())


@dataclass(frozen=True)
class AgentName:
    """An agent as the mail to them addresses them."""

    email: str
    name: str
    locale: str


@dataclass(frozen=True)
class Author:
    """What the worker asks about the author of a message before the sender rules."""

    person: Person | None
    agent: AgentName | None    # set when the author is an agent (active or not)
    sent_by_us: bool           # the outbox holds a mail with the message's Message-ID (our own mail come back)


def author_of(session: Session, address: str | None, message_id: str | None) -> Author:
    """:func:`find_person`, the agent's name and whether we sent ``message_id``, in one statement.

    The worker needs all three for every message, before it knows which of them matter.
    """
    address = (address or "").lower()
    row = session.connection().execute(_AUTHOR, {"address": address, "message_id": message_id or None}).one()
    person = _person(address, *row[:4]) if address else None
    agent = AgentName(address, row[4], row[5]) if address and row[0] is not None else None
    return Author(person, agent, row[6] is not None)


def write_pending_accounts(session: Session) -> None:
    """Flush the session if an account has changes not written yet, before a plain read of accounts.

    Such reads skip the ORM and its autoflush; other pending changes (the ticket being
    updated) wait for the commit, which then writes everything in one flush.
    """
    if any(isinstance(obj, Account) for obj in (*session.new, *session.dirty)):
        session.flush()


def account_by_email(session: Session, address: str) -> Account | None:
    return session.exec(select(Account).where(Account.email == address.lower())).first()


# Built once: the worker asks these for every message (building a statement costs as much as running it).
_ACCOUNT_WITH_ORGANIZATION = (select(Account, Organization)
                              .join(Organization, Organization.id == Account.organization_id)
                              .where(Account.email == bindparam("address")))
_AGENT, _ACCOUNT = Agent.__table__, Account.__table__
_ACTIVE_AGENTS = select(_AGENT.c.email, _AGENT.c.name, _AGENT.c.locale).where(_AGENT.c.active).order_by(_AGENT.c.id)
_ADDRESSES = bindparam("addresses", expanding=True)
_PEOPLE_AMONG = union_all(
    select(literal("agent"), _AGENT.c.email, null(), null(), null()).where(_AGENT.c.email.in_(_ADDRESSES)),
    select(literal("account"), _ACCOUNT.c.email, _ACCOUNT.c.id, _ACCOUNT.c.organization_id, _ACCOUNT.c.active)
    .where(_ACCOUNT.c.email.in_(_ADDRESSES)),
)


def account_with_organization(session: Session, address: str) -> tuple[Account, Organization] | None:
    """The account of ``address`` and its organisation, in one statement (None: no account)."""
    return session.exec(_ACCOUNT_WITH_ORGANIZATION, params={"address": address.lower()}).first()


def active_agents(session: Session) -> list[AgentName]:
    """Every active agent's address, name and locale (plain columns: the worker asks for every batch)."""
    return [AgentName(*row) for row in session.connection().execute(_ACTIVE_AGENTS)]


@dataclass(frozen=True)
class AccountRef:
    """The columns of an account that decide whether it may be a CC."""

    id: int
    email: str
    organization_id: int
    active: bool


def people_among(session: Session, addresses: Sequence[str]) -> tuple[set[str], dict[str, AccountRef]]:
    """Which of ``addresses`` are agents, and the accounts of them by address (all lowercased), in one statement."""
    wanted = sorted({address.lower() for address in addresses})
    if not wanted:
        return set(), {}
    agents: set[str] = set()
    accounts: dict[str, AccountRef] = {}
    for kind, email, account_id, org_id, active in session.connection().execute(_PEOPLE_AMONG,
                                                                                 {"addresses": wanted}):
        if kind == "agent":
            agents.add(email)
        else:
            accounts[email] = AccountRef(account_id, email, org_id, bool(active))
    return agents, accounts


_MESSAGE, _TICKET = MessageRecord.__table__, Ticket.__table__
# Built once, each with the organisation of the ticket a message is on: the threader asks
# whether the sender may write on that ticket next, and needs no query of its own then.
_MESSAGE_IDS = bindparam("message_ids", expanding=True)
_TICKETS_OF_MESSAGES = (select(_MESSAGE.c.message_id, _MESSAGE.c.ticket_id, _TICKET.c.organization_id)
                        .select_from(_MESSAGE.outerjoin(_TICKET, _TICKET.c.id == _MESSAGE.c.ticket_id))
                        .where(_MESSAGE.c.message_id.in_(_MESSAGE_IDS))
                        .order_by(_MESSAGE.c.id))
_SENT_MESSAGES = (select(_MESSAGE.c.message_id, _MESSAGE.c.recipient, _MESSAGE.c.ticket_id,
                         _TICKET.c.organization_id)
                  .select_from(_MESSAGE.outerjoin(_TICKET, _TICKET.c.id == _MESSAGE.c.ticket_id))
                  .where(_MESSAGE.c.message_id.in_(_MESSAGE_IDS), _MESSAGE.c.direction == "outbound"))
_TICKET_ORGANIZATION = select(_TICKET.c.organization_id).where(_TICKET.c.id == bindparam("number"))


class StoredThreads:
    """The :class:`gateway.threader.ThreadLookup` over the database, for one sender."""

    def __init__(self, session: Session, signer: Signer, support_address: str,
                 sender_org_id: int | None, sender_is_agent: bool, sender_email: str = "") -> None:
        self.session, self.signer, self.support_address = session, signer, support_address
        self.sender_org_id, self.sender_is_agent = sender_org_id, sender_is_agent
        self.sender_email = sender_email
        self.unverified: list[str] = []   # Message-IDs of our shape whose signature did not verify
        self.missing: list[str] = []      # Message-IDs not of our shape that no stored message carries
        self._organizations: dict[int, int | None] = {}   # ticket -> its organisation (None: no such ticket)

    def ticket_for_token(self, address: str) -> int | None:
        return self.signer.ticket_from_address(address, self.support_address)

    def tickets_for_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]:
        if not message_ids:
            return {}
        ours = [mid for mid in message_ids if self.signer.is_own_message_id(mid)]
        others = [mid for mid in message_ids if mid not in ours]
        found: dict[str, int] = {}
        if others:
            rows = self.session.connection().execute(_TICKETS_OF_MESSAGES, {"message_ids": others})
            for mid, ticket_id, org_id in rows:
                found.setdefault(mid, ticket_id)
                self._organizations[ticket_id] = org_id
        found.update(self._own_message_ids(ours))
        self.missing = [mid for mid in dict.fromkeys(others) if mid not in found]
        return found

    def _own_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]:
        """Our signed Message-IDs, verified against the recipient we sent them to (or, when that
        mail is not on record, against the sender): a made-up or altered one is never followed."""
        if not message_ids:
            return {}
        sent = {}
        for mid, recipient, ticket_id, org_id in self.session.connection().execute(
                _SENT_MESSAGES, {"message_ids": list(message_ids)}):
            sent[mid] = recipient
            self._organizations[ticket_id] = org_id
        found: dict[str, int] = {}
        for mid in dict.fromkeys(message_ids):
            number = self.signer.verify_message_id(mid, sent.get(mid) or self.sender_email)
            if number is None:
                self.unverified.append(mid)
            elif number:   # 0: an account mail (invitation, digest), which names no ticket
                found[mid] = number
        return found

    def tickets_answering(self, message_id: str) -> list[int]:
        # A late parent joins the ticket of a reply that overtook it; an agent's mail never does:
        # where an agent's text goes must not depend on headers a customer wrote.
        if self.sender_is_agent:
            return []
        return tickets_naming(self.session, message_id)

    def ticket_exists(self, number: int) -> bool:
        return self._organization_of(number) is not None

    def may_write(self, number: int) -> bool:
        org_id = self._organization_of(number)
        return org_id is not None and (self.sender_is_agent or org_id == self.sender_org_id)

    def _organization_of(self, number: int) -> int | None:
        """The organisation of ticket ``number`` (None: no such ticket), read once per message."""
        if number not in self._organizations:
            self._organizations[number] = self.session.connection().execute(
                _TICKET_ORGANIZATION, {"number": number}).scalar()
        return self._organizations[number]


def ticket_ccs(session: Session, ticket_id: int, active_only: bool = True) -> list[Account]:
    query = select(Account).join(TicketCC, TicketCC.account_id == Account.id).where(TicketCC.ticket_id == ticket_id)
    if active_only:
        query = query.where(Account.active)
    return list(session.exec(query.order_by(Account.id)))


_CC = TicketCC.__table__
_INSERT_CC = insert(_CC)
_CC_IDS = select(_CC.c.account_id).where(_CC.c.ticket_id == bindparam("ticket_id"))


def add_ccs(session: Session, ticket_id: int, accounts: Sequence[Account | AccountRef]) -> None:
    """Make ``accounts`` CCs of the ticket (those not yet), written at once."""
    if not accounts:   # nothing to add: no need to read the ticket's CCs
        return
    existing = set(session.connection().execute(_CC_IDS, {"ticket_id": ticket_id}).scalars())
    rows = []
    for account in accounts:
        if account.id not in existing:
            rows.append({"ticket_id": ticket_id, "account_id": account.id})
            existing.add(account.id)
    if rows:
        session.connection().execute(_INSERT_CC, rows)


@dataclass(frozen=True)
class ThreadHistory:
    """What a ticket's new mail needs to thread: References and whom each earlier message concerned."""

    references: list[str]          # Message-IDs of the public messages, oldest first, each once
    last_seen: dict[str, str]      # person (lowercased) -> Message-ID of the newest message they wrote or were sent


_THREAD_HISTORY = (select(_MESSAGE.c.internal, _MESSAGE.c.direction, _MESSAGE.c.author_email,
                          _MESSAGE.c.recipient, _MESSAGE.c.message_id)
                   .where(_MESSAGE.c.ticket_id == bindparam("ticket_id"), _MESSAGE.c.message_id.is_not(None))
                   .order_by(_MESSAGE.c.id))


def thread_history(session: Session, ticket_id: int) -> ThreadHistory:
    """The ticket's :class:`ThreadHistory`, read in one statement."""
    rows = session.connection().execute(_THREAD_HISTORY, {"ticket_id": ticket_id})
    references: dict[str, None] = {}
    newest: dict[str, str] = {}
    for internal, direction, author, recipient, message_id in rows:
        if not internal:
            references.setdefault(message_id)
        person = author if direction == "inbound" else recipient
        if person:
            newest[person.lower()] = message_id
    return ThreadHistory(list(references), newest)


def first_message_history(author_email: str, message_id: str | None) -> ThreadHistory:
    """The :class:`ThreadHistory` of a ticket just opened by one public inbound message, known without a query."""
    if not message_id:
        return ThreadHistory([], {})
    return ThreadHistory([message_id], {author_email.lower(): message_id})


_INSERT_EVENT = insert(TicketEvent.__table__)


def add_event(session: Session, ticket_id: int, now: datetime, actor: str, kind: str, detail: str) -> None:
    """Write one event to the ticket's audit trail at once: a plain insert, in the order events happen."""
    session.connection().execute(_INSERT_EVENT, {"ticket_id": ticket_id, "at": now, "actor": actor, "kind": kind,
                                                 "detail": detail})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_summary(session: Session, ticket: Ticket) -> dict:
    org = session.get(Organization, ticket.organization_id)
    requester = session.get(Account, ticket.requester_id)
    return {
        "number": ticket.id, "subject": ticket.subject, "status": ticket.status, "type": ticket.type,
        "priority": ticket.priority, "module": ticket.module, "organization": org.name,
        "requester": requester.email, "ccs": [a.email for a in ticket_ccs(session, ticket.id, active_only=False)],
        "followup_of": ticket.followup_of, "created_at": _iso(ticket.created_at),
        "updated_at": _iso(ticket.updated_at), "solved_at": _iso(ticket.solved_at),
        "closed_at": _iso(ticket.closed_at),
        "first_response_due_at": _iso(ticket.first_response_due_at),
        "first_responded_at": _iso(ticket.first_responded_at),
        "awaiting_since": _iso(ticket.awaiting_since),
        "status_request_sent_at": _iso(ticket.status_request_sent_at),
    }


def ticket_detail(session: Session, ticket: Ticket) -> dict:
    data = ticket_summary(session, ticket)
    messages = session.exec(select(MessageRecord).where(MessageRecord.ticket_id == ticket.id).order_by(MessageRecord.id))
    data["messages"] = [{
        "direction": m.direction, "author": m.author_email, "message_id": m.message_id, "text": m.text,
        "internal": m.internal, "created_at": _iso(m.created_at), "subject": m.subject,
        "to": m.recipient, "full_text": m.full_text,
    } for m in messages]
    attachments = session.exec(select(Attachment).where(Attachment.ticket_id == ticket.id).order_by(Attachment.id))
    data["attachments"] = [{
        "filename": a.filename, "content_type": a.content_type, "size": a.size, "sha256": a.sha256,
        "inline": a.inline,
    } for a in attachments]
    followups = session.exec(select(Ticket.id).where(Ticket.followup_of == ticket.id).order_by(Ticket.id))
    data["followups"] = list(followups)
    events = session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))
    data["events"] = [{"at": _iso(e.at), "actor": e.actor, "kind": e.kind, "detail": e.detail} for e in events]
    return data


def list_tickets(session: Session, org_name: str | None = None, status: str | None = None) -> list[dict]:
    query = select(Ticket).order_by(Ticket.id)
    if org_name:
        query = query.join(Organization).where(Organization.name_key == org_name.strip().lower())
    if status:
        query = query.where(Ticket.status == status)
    return [ticket_summary(session, t) for t in session.exec(query)]


def inbound_record(row: Inbound) -> dict:
    return {
        "id": row.id, "message_id": row.message_id, "from": row.from_addr, "envelope_from": row.envelope_from,
        "to": json.loads(row.envelope_to or "[]"), "subject": row.subject, "received_at": _iso(row.received_at),
        # A reply waiting for the message it answers is not processed yet: "pending" to the outside
        # (the contract's outcome values), with "waiting_for_parent" and a reason that says so.
        "channel": row.channel, "size": row.size, "outcome": _public_outcome(row.outcome), "reason": row.reason,
        "waiting_for_parent": row.outcome == "deferred",
        "ticket": row.ticket_number, "error": row.error, "processed_at": _iso(row.processed_at),
        "reason_code": row.reason_code, "released_at": _iso(row.released_at),
        "wait_until": _iso(row.wait_until),
    }


def _public_outcome(outcome: str) -> str:
    return "pending" if outcome == "deferred" else outcome


def list_inbound(session: Session, outcome: str | None = None) -> list[dict]:
    query = select(Inbound).order_by(Inbound.id)
    if outcome == "pending":
        query = query.where(Inbound.outcome.in_(("pending", "deferred")))
    elif outcome:
        query = query.where(Inbound.outcome == outcome)
    return [inbound_record(r) for r in session.exec(query)]


def outbox_record(row: Outbox) -> dict:
    return {
        "id": row.id, "to": json.loads(row.recipients), "subject": row.subject, "template": row.template,
        "locale": row.locale, "status": row.status, "ticket": row.ticket_id, "message_id": row.message_id,
        "attempts": row.attempts, "created_at": _iso(row.created_at), "sent_at": _iso(row.sent_at),
        "last_error": row.last_error,
    }


def list_outbox(session: Session, status: str | None = None) -> list[dict]:
    query = select(Outbox).order_by(Outbox.id)
    if status:
        query = query.where(Outbox.status == status)
    return [outbox_record(r) for r in session.exec(query)]


def pending_inbound(session: Session, limit: int = 100) -> list[tuple[int, int]]:
    """The oldest pending messages: (id, size in bytes)."""
    query = select(Inbound.id, Inbound.size).where(Inbound.outcome == "pending").order_by(Inbound.id).limit(limit)
    return [(inbound_id, size or 0) for inbound_id, size in session.exec(query)]


_CLAIM_INBOUND = (select(Inbound).where(Inbound.id == bindparam("inbound_id"), Inbound.outcome == "pending")
                  .with_for_update(skip_locked=True))


def claim_inbound(session: Session, inbound_id: int) -> Inbound | None:
    """Lock a pending inbound row for processing (skipped when another process holds it)."""
    return session.exec(_CLAIM_INBOUND, params={"inbound_id": inbound_id}).first()


def due_outbox(session: Session, now: datetime, limit: int = 50) -> list[Outbox]:
    query = (select(Outbox).where(Outbox.status == "queued", Outbox.next_attempt_at <= now)
             .order_by(Outbox.id).limit(limit))
    return list(session.exec(query.with_for_update(skip_locked=True)))


def claim_outbox(session: Session, outbox_id: int) -> Outbox | None:
    """Lock a queued outbox row for delivery (None when sent meanwhile or locked by another process)."""
    query = select(Outbox).where(Outbox.id == outbox_id, Outbox.status == "queued")
    return session.exec(query.with_for_update(skip_locked=True)).first()


def duplicate_of(session: Session, dedupe_key: str) -> Inbound | None:
    return session.exec(select(Inbound).where(Inbound.dedupe_key == dedupe_key)).first()


def earlier_refusal(session: Session, message_id: str | None, content_sha256: str) -> Inbound | None:
    """The recorded refusal of the same message (Message-ID and content), or None; without a Message-ID, None."""
    if not message_id:
        return None
    return session.exec(select(Inbound).where(Inbound.message_id == message_id, Inbound.outcome == "refused",
                                              Inbound.content_sha256 == content_sha256)).first()



def last_outbox_to(session: Session, template: str, address: str) -> datetime | None:
    """When a mail of ``template`` was last queued for exactly ``address`` (rate limits), or None."""
    query = (select(Outbox.created_at).where(Outbox.template == template,
                                             Outbox.recipients == json.dumps([address.lower()]))
             .order_by(Outbox.created_at.desc()).limit(1))
    return session.exec(query).first()
