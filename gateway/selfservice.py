"""Carrying out a customer's email command (``commands.py``) inside the pipeline's transaction.

Input: the parsed message, its sender and classification, and the :class:`Command`.
Output: the outcome and reason the worker records on the inbound row, plus at most one
answer in the outbox. Rules, in order (their names start the recorded reason):

- ``command-automatic``: an automatic mail (auto-reply, bounce, list mail) runs no
  command and is never answered (RFC 3834 §2);
- ``command-agent``: agents neither follow organisations nor have customer lists;
- ``command-follow`` / ``command-unfollow``: set the account's follows flag and confirm;
- ``command-list``: answer with a digest of the views asked for.

Who may write at all (an active account) was decided by the policy before.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from gateway.accountmail import organization_context, queue_account_mail
from gateway.classify import Classification
from gateway.commands import FOLLOW, LIST, UNFOLLOW, Command
from gateway.mailer import Deps
from gateway.parsing import ParsedMessage
from gateway.rendering import label
from storage import views
from storage.models import Account, Organization, Ticket

#: Tickets per list in one digest; the digest says how many more there are.
DIGEST_MAX_TICKETS = 50


def run_command(session: Session, deps: Deps, parsed: ParsedMessage, sender, classification: Classification,
                command: Command, now: datetime) -> tuple[str, str]:
    """Carry out ``command`` for ``sender`` (a ``casework.Sender``); returns (outcome, reason)."""
    if classification.auto_generated or classification.bounce or classification.list_mail:
        return "ignored", (f"command-automatic: automatic mail to {command.address} "
                           f"({', '.join(classification.signals)}) runs no command and gets no answer")
    if sender.is_agent or sender.account is None:
        return "ignored", f"command-agent: {command.address} is a command for customer accounts"
    account: Account = sender.account
    org = session.get(Organization, account.organization_id)
    if command.kind in (FOLLOW, UNFOLLOW):
        return _follow(session, deps, parsed, sender, account, org, command.kind == FOLLOW, now)
    if command.kind == LIST:
        return _digest(session, deps, parsed, sender, account, org, command.scopes, now)
    raise ValueError(f"unknown command {command.kind!r}")


def _follow(session, deps, parsed, sender, account: Account, org: Organization, follows: bool, now) -> tuple[str, str]:
    changed = account.follows != follows
    account.follows = follows
    session.add(account)
    context = {"organization": organization_context(session, deps, org), "following": follows, "changed": changed}
    queue_account_mail(session, deps, sender.recipient, "follow_confirmation", context, now,
                       answers=parsed.message_id, auto_submitted="auto-replied")
    kind = FOLLOW if follows else UNFOLLOW
    state = ("now follows" if follows else "no longer follows") if changed else \
        ("already follows" if follows else "did not follow")
    return "command", f"command-{kind}: {account.email} {state} {org.name}; confirmation sent"


def _digest(session, deps, parsed, sender, account: Account, org: Organization, scopes, now) -> tuple[str, str]:
    locale = sender.recipient.locale
    sections = []
    for scope in scopes:
        tickets, more = views.tickets_in_view(session, account, scope, DIGEST_MAX_TICKETS)
        sections.append({"scope": scope, "tickets": [_ticket_line(session, t, locale) for t in tickets],
                         "more": more})
    context = {"organization": organization_context(session, deps, org), "sections": sections}
    queue_account_mail(session, deps, sender.recipient, "request_digest", context, now,
                       answers=parsed.message_id, auto_submitted="auto-replied")
    counts = ", ".join(f"{s['scope']} {len(s['tickets']) + s['more']}" for s in sections)
    return "command", f"command-list: digest ({counts}) sent to {account.email}"


def _ticket_line(session: Session, ticket: Ticket, locale: str) -> dict[str, Any]:
    requester = session.get(Account, ticket.requester_id)
    return {
        "number": ticket.id, "subject": ticket.subject, "status": ticket.status,
        "status_label": label("status", ticket.status, locale), "type": ticket.type,
        "type_label": label("type", ticket.type, locale),
        "requester_name": (requester.name or requester.email) if requester else "",
        "requester_email": requester.email if requester else "",
        "created_at": ticket.created_at, "updated_at": ticket.updated_at,
    }
