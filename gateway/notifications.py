"""Who is told what: notices of a transition -> a list of Notification values. Pure.

The pipeline passes the facts (ticket, people, the message) as plain values;
this module picks recipients and template names and builds each template's
context. Rendering and the outbox are the caller's business.

Rules kept here: customers hear about their ticket (acknowledgment, support's
answers, solved, reopened, follow-up); agents hear about every customer message;
nothing goes to an address whose mail was itself automatic; internal notes
reach no customer. Timer notices (``tick``): a status-update request and an
automatic close go to the requester and the CCs; a first-response warning
(``target_warning``) goes to every agent. A new ticket is announced to the
accounts that follow its organisation, except its author and anyone who
already gets it as requester or CC.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.rendering import label


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    locale: str
    kind: str            # "requester" | "cc" | "customer" | "agent" | "follower"


@dataclass(frozen=True)
class TicketFacts:
    number: int
    subject: str
    status: str
    type: str
    priority: str | None
    module: str | None
    organization: str
    requester: Recipient
    ccs: tuple[Recipient, ...]
    created_at: datetime
    followup_of: int | None
    reply_address: str
    followers: tuple[Recipient, ...] = ()   # active accounts of the organisation that follow it


@dataclass(frozen=True)
class MessageFacts:
    author_email: str
    author_name: str
    text: str


@dataclass(frozen=True)
class Notification:
    template: str
    recipient: Recipient
    context: dict[str, Any] = field(default_factory=dict)
    internal: bool = False          # for agents only; never shown to customers
    auto_submitted: str = "auto-generated"   # "no" when it carries words a person (an agent) wrote


def ticket_context(ticket: TicketFacts, locale: str) -> dict[str, Any]:
    return {
        "number": ticket.number, "subject": ticket.subject, "status": ticket.status,
        "status_label": label("status", ticket.status, locale), "type": ticket.type,
        "type_label": label("type", ticket.type, locale), "priority": ticket.priority,
        "priority_label": label("priority", ticket.priority, locale), "module": ticket.module,
        "organization": ticket.organization, "requester_name": ticket.requester.name or ticket.requester.email,
        "requester_email": ticket.requester.email, "created_at": ticket.created_at,
        "followup_of": ticket.followup_of, "reply_address": ticket.reply_address,
    }


def customers(ticket: TicketFacts, exclude: Sequence[str] = ()) -> list[Recipient]:
    """Requester and CCs, each once, without the excluded addresses."""
    seen = {e.lower() for e in exclude}
    result = []
    for person in (ticket.requester, *ticket.ccs):
        if person.email.lower() not in seen:
            seen.add(person.email.lower())
            result.append(person)
    return result


def plan(notices: Sequence[str], ticket: TicketFacts, message: MessageFacts | None,
         agents: Sequence[Recipient], *, author: Recipient, extra: dict[str, Any] | None = None,
         customers_muted: bool = False, author_automatic: bool = False) -> list[Notification]:
    """The notifications for ``notices`` (names from lifecycle, plus "ticket_created"/"followup_created"
    and "follower_new_ticket"). ``author_automatic``: the message was an automatic mail, so its
    author is told nothing (RFC 3834 §2: never answer an automatic mail)."""
    extra = extra or {}
    out: list[Notification] = []
    for notice in notices:
        template, _, event = notice.partition(":")
        if template == "agent_notice":
            out += [Notification("agent_notice", a, {**extra, "event": event, "message": _message(message)}, True)
                    for a in agents if a.email.lower() != author.email.lower()]
            continue
        if template in AGENT_TEMPLATES:
            out += [Notification(template, a, dict(extra), True) for a in agents]
            continue
        if customers_muted:
            continue
        if template == FOLLOWER_TEMPLATE:
            out += [Notification(template, f, {**extra, "message": _message(message)})
                    for f in followers_to_tell(ticket, author)]
            continue
        written = template in ("agent_reply", "ticket_solved") and bool(message and message.text.strip())
        for person in _customer_audience(template, ticket, author):
            context = {**extra, "message": _message(message), "is_requester": person.kind == "requester"}
            out.append(Notification(template, person, context, auto_submitted="no" if written else "auto-generated"))
    if author_automatic:
        out = [n for n in out if n.recipient.email.lower() != author.email.lower()]
    return out


#: The mail about a new ticket to the accounts that follow its organisation.
FOLLOWER_TEMPLATE = "follower_new_ticket"


def followers_to_tell(ticket: TicketFacts, author: Recipient) -> list[Recipient]:
    """Followers of the ticket's organisation, each once, without the author and anyone who
    already receives the ticket's mail as requester or CC (one copy per person)."""
    taken = {p.email.lower() for p in (ticket.requester, *ticket.ccs, author)}
    result = []
    for person in ticket.followers:
        if person.email.lower() not in taken:
            taken.add(person.email.lower())
            result.append(person)
    return result


#: Notices for agents only, from timers (no author to leave out).
AGENT_TEMPLATES = frozenset({"target_warning"})
#: Customer notices that go to the requester and every CC.
TO_ALL_CUSTOMERS = frozenset({"ticket_created", "agent_reply", "ticket_solved",
                              "status_update_request", "ticket_auto_closed"})


def _customer_audience(template: str, ticket: TicketFacts, author: Recipient) -> list[Recipient]:
    if template in TO_ALL_CUSTOMERS:
        return customers(ticket)
    # reopened / follow-up: tell the customer who wrote (a CC or a colleague, too)
    return [author] if author.kind != "agent" else customers(ticket)[:1]


def _message(message: MessageFacts | None) -> dict[str, Any] | None:
    if message is None:
        return None
    return {"author_name": message.author_name or message.author_email, "author_email": message.author_email,
            "text": message.text}
