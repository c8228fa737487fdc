"""Notifications -> rendered, composed mails in the outbox (same transaction as the change).

Each recipient gets a mail of their own, in their locale, with a Message-ID
signed for them, so a reply reveals the ticket even when every other header is
lost. Sending is the dispatcher's job (``outbound.py``), never done here.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session

from gateway import loops
from gateway.bounces import verp_address
from gateway.commands import command_addresses, list_unsubscribe
from gateway.composer import compose, make_thread_index
from gateway.config import Settings
from gateway.notifications import Notification, Recipient, TicketFacts, ticket_context
from gateway.rendering import RenderedMail, Renderer
from gateway.subjects import single_reply_prefix
from gateway.tokens import Signer
from storage import queries, views
from storage.models import Account, Agent, MessageRecord, Organization, Outbox, Ticket


@dataclass(frozen=True)
class Deps:
    """What the pipeline needs besides the session: settings, renderer, signer."""

    settings: Settings
    renderer: Renderer
    signer: Signer
    resolver: Callable | None = None   # DNS TXT lookups for DKIM (gateway/sender_auth.py); None = real DNS


def account_recipient(account: Account, org: Organization | None, settings: Settings, kind: str) -> Recipient:
    """An account as a recipient, in its own locale, else its organisation's, else the desk's."""
    return _recipient(account.email, account.name, account.locale, org.locale if org else None, settings, kind)


def _recipient(email: str, name: str, locale: str | None, org_locale: str | None, settings: Settings,
               kind: str) -> Recipient:
    return Recipient(email, name, locale or org_locale or settings.desk.default_locale, kind)


def recipient_for_account(session: Session, account: Account, settings: Settings, kind: str) -> Recipient:
    return account_recipient(account, session.get(Organization, account.organization_id), settings, kind)


def recipient_for_agent(agent: Agent | queries.AgentName) -> Recipient:
    return Recipient(agent.email, agent.name, agent.locale, "agent")


def ticket_facts(session: Session, ticket: Ticket, deps: Deps) -> TicketFacts:
    people = views.ticket_people(session, ticket.id, ticket.organization_id, ticket.requester_id)

    def recipient(person: views.PersonOnTicket, kind: str) -> Recipient:
        return _recipient(person.email, person.name, person.locale, person.org_locale, deps.settings, kind)

    return TicketFacts(
        number=ticket.id, subject=ticket.subject, status=ticket.status, type=ticket.type,
        priority=ticket.priority, module=ticket.module, organization=people.organization,
        requester=recipient(people.requester, "requester"),
        ccs=tuple(recipient(a, "cc") for a in people.ccs),
        created_at=ticket.created_at, followup_of=ticket.followup_of,
        reply_address=deps.signer.reply_address(deps.settings.smtp.support_address, ticket.id),
        followers=tuple(recipient(a, "follower") for a in people.followers),
    )


def list_headers(settings: Settings, org_id: int, org_name: str) -> dict[str, str]:
    """RFC 2369/2919 headers of follower mail, so mail clients offer an unsubscribe button."""
    phrase = re.sub(r'[<>"\\()]', "", org_name).strip() or f"organisation {org_id}"
    return {
        "List-Id": f"{phrase} new tickets <org-{org_id}.followers.{settings.support_domain}>",
        "List-Unsubscribe": list_unsubscribe(settings.smtp.support_address),
    }


def agent_recipients(session: Session) -> list[Recipient]:
    return [recipient_for_agent(a) for a in queries.active_agents(session)]


def queue(session: Session, deps: Deps, ticket: Ticket, facts: TicketFacts,
          notifications: Sequence[Notification], now: datetime,
          history: queries.ThreadHistory | None = None) -> list[int]:
    """Render and compose each notification into the outbox, and record it on the ticket; returns the outbox ids.

    Each mail answers (In-Reply-To) the newest message its recipient wrote or was
    sent on this ticket, so it lands in the conversation that person sees; the
    References start with the ticket's first message, a stable thread root.
    ``history``: the ticket's thread history when the caller knows it (a ticket it just
    opened); else it is read.
    """
    if history is None:
        history = queries.thread_history(session, ticket.id)
    notifications = loops.allowed(session, deps.settings, ticket.id, notifications, now)   # bounces, rate limits
    if not notifications:
        return []
    deps.renderer.refresh_overrides()
    shared = _Shared.of(deps.settings, ticket, facts, notifications)
    mails = [_compose(deps, ticket, facts, shared, notification,
                      history.last_seen.get(notification.recipient.email.lower()), history.references, now, position)
             for position, notification in enumerate(notifications)]
    return _store(session, deps, ticket.id, mails, now)


@dataclass(frozen=True)
class _Mail:
    """One composed notification, ready for the outbox."""

    notification: Notification
    rendered: RenderedMail
    message_id: str
    in_reply_to: str | None
    raw: bytes


@dataclass(frozen=True)
class _Shared:
    """What the mails of one message have in common, worked out once rather than per recipient.

    The same dicts go to several templates; that is safe because the sandbox is
    immutable (a template cannot change a dict or list it was given).
    """

    commands: dict[str, str]
    thread_seed: str
    tickets: dict[str, dict[str, Any]]        # the ticket's template values in each recipient locale
    headers: dict[str, str]                   # the extra headers of every mail
    follower_headers: dict[str, str] | None   # a follower's: plus the list headers (None: no follower)

    @classmethod
    def of(cls, settings: Settings, ticket: Ticket, facts: TicketFacts,
           notifications: Sequence[Notification]) -> _Shared:
        headers = {loops.LOOP_HEADER: settings.smtp.support_address}
        followers = any(n.recipient.kind == "follower" for n in notifications)
        return cls(
            commands=command_addresses(settings.smtp.support_address),
            thread_seed=f"{ticket.id}:{ticket.created_at.isoformat()}",
            tickets={locale: ticket_context(facts, locale) for locale in {n.recipient.locale for n in notifications}},
            headers=headers,
            follower_headers={**headers, **list_headers(settings, ticket.organization_id, facts.organization)}
            if followers else None,
        )


def _compose(deps, ticket, facts, shared, notification, in_reply_to, references, now, position) -> _Mail:
    settings, person = deps.settings, notification.recipient
    context = {
        "recipient": {"name": person.name or person.email, "email": person.email, "locale": person.locale},
        "ticket": shared.tickets[person.locale],
        "support_address": settings.smtp.support_address,
        "product_name": settings.desk.product_name,
        "commands": shared.commands,
        **notification.context,
    }
    rendered = deps.renderer.render(notification.template, person.locale, context)
    rendered = replace(rendered, subject=single_reply_prefix(rendered.subject))
    message_id = deps.signer.message_id(ticket.id, person.email, settings.support_domain)
    raw = compose(
        rendered, from_addr=settings.smtp.support_address, from_name=settings.outbound.from_name,
        to_addr=person.email, to_name=person.name or None, reply_to=facts.reply_address,
        message_id=message_id, in_reply_to=in_reply_to or (references[-1] if references else None),
        references=references, date=now, thread_topic=ticket.subject,
        auto_submitted=notification.auto_submitted,
        thread_index=make_thread_index(shared.thread_seed, ticket.created_at, len(references) + position),
        extra_headers=shared.follower_headers if person.kind == "follower" else shared.headers,
    )
    return _Mail(notification, rendered, message_id, in_reply_to, raw)


_OUTBOX, _MESSAGE = Outbox.__table__, MessageRecord.__table__
# Built once: three statements store a whole batch, however many mails it has.
# RETURNING order is not guaranteed (SQLite), so each row comes back with its unique Message-ID.
_INSERT_OUTBOX = insert(_OUTBOX).returning(_OUTBOX.c.message_id, _OUTBOX.c.id)
_SET_ENVELOPE = (update(_OUTBOX).where(_OUTBOX.c.id == bindparam("row_id"))
                 .values(envelope_from=bindparam("verp")))
_INSERT_RECORD = insert(_MESSAGE)


def _store(session: Session, deps: Deps, ticket_id: int, mails: Sequence[_Mail], now: datetime) -> list[int]:
    """Write the mails to the outbox and onto the ticket, in three statements; returns the outbox ids.

    The outbox ids are known only after the insert, and the VERP envelope sender names
    its row (a delivery report finds the row by it, gateway/bounces.py), so it is set
    right after, in one statement for the batch.
    """
    support = deps.settings.smtp.support_address
    connection = session.connection()
    rows = connection.execute(_INSERT_OUTBOX, [{
        "created_at": now, "ticket_id": ticket_id, "template": mail.notification.template,
        "locale": mail.notification.recipient.locale, "recipients": json.dumps([mail.notification.recipient.email]),
        "envelope_from": support, "subject": mail.rendered.subject, "message_id": mail.message_id, "raw": mail.raw,
        "next_attempt_at": now, "auto_submitted": mail.notification.auto_submitted,
    } for mail in mails])
    inserted = {message_id: row_id for message_id, row_id in rows}
    ids = [inserted[mail.message_id] for mail in mails]
    connection.execute(_SET_ENVELOPE, [{"row_id": row_id, "verp": verp_address(deps.signer, support, row_id)}
                                       for row_id in ids])
    connection.execute(_INSERT_RECORD, [{
        "ticket_id": ticket_id, "direction": "outbound", "author_email": support, "author_kind": "system",
        "message_id": mail.message_id, "in_reply_to": mail.in_reply_to, "subject": mail.rendered.subject,
        "text": mail.rendered.text, "full_text": mail.rendered.text, "internal": mail.notification.internal,
        "outbox_id": row_id, "recipient": mail.notification.recipient.email, "created_at": now,
    } for mail, row_id in zip(mails, ids)])
    return ids
