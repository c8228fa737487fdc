"""Mail about an account rather than a ticket: invitation, welcome, command answers, test mails.

Rendered like every notification (the recipient's locale, the sandboxed templates with
the admins' overrides) and written to the outbox in the caller's transaction; sending
is the dispatcher's job. These mails carry a Message-ID signed for their recipient with
ticket number 0 (they name no ticket, so a reply to one opens a new ticket) and the
plain support address as Reply-To.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from gateway.bounces import verp_address
from gateway.commands import command_addresses
from gateway.composer import compose
from gateway.loops import LOOP_HEADER
from gateway.mailer import Deps, recipient_for_account
from gateway.notifications import Recipient
from gateway.rendering import RenderedMail
from storage import views
from storage.models import Account, Organization, Outbox

NO_TICKET = 0


def base_context(deps: Deps, person: Recipient) -> dict[str, Any]:
    """What every account mail's template gets: recipient, support address, product, commands."""
    settings = deps.settings
    return {
        "recipient": {"name": person.name or person.email, "email": person.email, "locale": person.locale},
        "support_address": settings.smtp.support_address,
        "product_name": settings.desk.product_name,
        "commands": command_addresses(settings.smtp.support_address),
    }


def organization_context(session: Session, deps: Deps, org: Organization) -> dict[str, Any]:
    contact = views.main_contact(session, org.id)
    return {"name": org.name, "package": org.package, "accounts_allowed": deps.settings.packages.cap(org.package),
            "main_contact": contact.email if contact else ""}


def queue_account_mail(session: Session, deps: Deps, person: Recipient, template: str, context: Mapping[str, Any],
                       now: datetime, *, answers: str | None = None, auto_submitted: str = "auto-generated",
                       subject_prefix: str = "") -> Outbox:
    """Render ``template`` for ``person`` and put it in the outbox; ``answers``: the Message-ID it replies to."""
    full = {**base_context(deps, person), **context}
    rendered = deps.renderer.render(template, person.locale, full)
    if subject_prefix:
        rendered = RenderedMail(f"{subject_prefix}{rendered.subject}", rendered.text, rendered.html)
    return put_in_outbox(session, deps, person, template, rendered, now, answers=answers,
                         auto_submitted=auto_submitted)


def put_in_outbox(session: Session, deps: Deps, person: Recipient, template: str, rendered: RenderedMail,
                  now: datetime, *, answers: str | None = None, auto_submitted: str = "auto-generated",
                  references: Sequence[str] = ()) -> Outbox:
    settings = deps.settings
    message_id = deps.signer.message_id(NO_TICKET, person.email, settings.support_domain)
    raw = compose(rendered, from_addr=settings.smtp.support_address, from_name=settings.outbound.from_name,
                  to_addr=person.email, to_name=person.name or None, reply_to=settings.smtp.support_address,
                  message_id=message_id, in_reply_to=answers, references=list(references), date=now,
                  auto_submitted=auto_submitted, extra_headers={LOOP_HEADER: settings.smtp.support_address})
    row = Outbox(created_at=now, ticket_id=None, template=template, locale=person.locale,
                 recipients=json.dumps([person.email]), envelope_from=settings.smtp.support_address,
                 subject=rendered.subject, message_id=message_id, raw=raw, next_attempt_at=now,
                 auto_submitted=auto_submitted)
    session.add(row)
    session.flush()
    # VERP, as for ticket mail: a delivery report names this row (gateway/bounces.py)
    row.envelope_from = verp_address(deps.signer, settings.smtp.support_address, row.id)
    return row


def queue_onboarding(session: Session, deps: Deps, account: Account, now: datetime, *,
                     main_contact: bool) -> Outbox:
    """The invitation of an organisation's main contact, or the welcome of a further account."""
    org = session.get(Organization, account.organization_id)
    person = recipient_for_account(session, account, deps.settings, "customer")
    context = {"organization": organization_context(session, deps, org), "modules": list(deps.settings.desk.modules)}
    return queue_account_mail(session, deps, person, "invitation" if main_contact else "welcome", context, now)
