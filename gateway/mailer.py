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

from sqlmodel import Session

from gateway import loops
from gateway.bounces import verp_address
from gateway.commands import command_addresses, list_unsubscribe
from gateway.composer import compose, make_thread_index
from gateway.config import Settings
from gateway.notifications import Notification, Recipient, TicketFacts, ticket_context
from gateway.rendering import Renderer
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


def recipient_for_account(session: Session, account: Account, settings: Settings, kind: str) -> Recipient:
    org = session.get(Organization, account.organization_id)
    locale = account.locale or (org.locale if org else None) or settings.desk.default_locale
    return Recipient(account.email, account.name, locale, kind)


def recipient_for_agent(agent: Agent) -> Recipient:
    return Recipient(agent.email, agent.name, agent.locale, "agent")


def ticket_facts(session: Session, ticket: Ticket, deps: Deps) -> TicketFacts:
    requester = session.get(Account, ticket.requester_id)
    org = session.get(Organization, ticket.organization_id)
    ccs = tuple(recipient_for_account(session, a, deps.settings, "cc")
                for a in queries.ticket_ccs(session, ticket.id))
    return TicketFacts(
        number=ticket.id, subject=ticket.subject, status=ticket.status, type=ticket.type,
        priority=ticket.priority, module=ticket.module, organization=org.name,
        requester=recipient_for_account(session, requester, deps.settings, "requester"), ccs=ccs,
        created_at=ticket.created_at, followup_of=ticket.followup_of,
        reply_address=deps.signer.reply_address(deps.settings.smtp.support_address, ticket.id),
        followers=tuple(recipient_for_account(session, a, deps.settings, "follower")
                        for a in views.followers(session, ticket.organization_id)),
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
          notifications: Sequence[Notification], now: datetime) -> list[Outbox]:
    """Render and compose each notification into the outbox, and record it on the ticket.

    Each mail answers (In-Reply-To) the newest message its recipient wrote or was
    sent on this ticket, so it lands in the conversation that person sees; the
    References start with the ticket's first message, a stable thread root.
    """
    references = queries.thread_message_ids(session, ticket.id)
    rows = []
    notifications = loops.allowed(session, deps.settings, ticket.id, notifications, now)   # bounces, rate limits
    if notifications:
        deps.renderer.refresh_overrides()
    last_seen = queries.last_message_ids_by_person(session, ticket.id)
    for position, notification in enumerate(notifications):
        in_reply_to = last_seen.get(notification.recipient.email.lower())
        rows.append(_queue_one(session, deps, ticket, facts, notification, in_reply_to, references,
                               now, position))
    return rows


def _queue_one(session, deps, ticket, facts, notification, in_reply_to, references, now, position) -> Outbox:
    settings, person = deps.settings, notification.recipient
    context = {
        "recipient": {"name": person.name or person.email, "email": person.email, "locale": person.locale},
        "ticket": ticket_context(facts, person.locale),
        "support_address": settings.smtp.support_address,
        "product_name": settings.desk.product_name,
        "commands": command_addresses(settings.smtp.support_address),
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
        thread_index=make_thread_index(f"{ticket.id}:{ticket.created_at.isoformat()}", ticket.created_at,
                                       len(references) + position),
        extra_headers={loops.LOOP_HEADER: settings.smtp.support_address,
                       **(list_headers(settings, ticket.organization_id, facts.organization)
                          if person.kind == "follower" else {})},
    )
    row = Outbox(created_at=now, ticket_id=ticket.id, template=notification.template, locale=person.locale,
                 recipients=json.dumps([person.email]), envelope_from=settings.smtp.support_address,
                 subject=rendered.subject, message_id=message_id, raw=raw, next_attempt_at=now,
                 auto_submitted=notification.auto_submitted)
    session.add(row)
    session.flush()
    # VERP: a delivery report names this row in its recipient (gateway/bounces.py)
    row.envelope_from = verp_address(deps.signer, settings.smtp.support_address, row.id)
    session.add(MessageRecord(
        ticket_id=ticket.id, direction="outbound", author_email=settings.smtp.support_address,
        author_kind="system", message_id=message_id, in_reply_to=in_reply_to, subject=rendered.subject,
        text=rendered.text, full_text=rendered.text, internal=notification.internal, outbox_id=row.id,
        recipient=person.email, created_at=now,
    ))
    return row
