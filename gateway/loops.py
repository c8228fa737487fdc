"""Loop breaking: Postdesk's own mail coming back, and how often it answers one address.

Three guards, each a small query with the window of ``[loops]``:

- :func:`own_mail_reason`: the message is a copy of mail Postdesk sent (its Message-ID is
  in the outbox), carries our ``X-Loop`` header, or claims the support address as its
  author. Such mail is ignored quietly: never a ticket, never an answer, never a refusal
  (Zammad's ``OwnNotificationLoopDetection``; osTicket#3966).
- :func:`reply_cap_reason`: one address wrote more than ``max_replies_per_ticket_per_address``
  mails on one ticket within the window; the rest is kept as an internal note, quietly (no
  status change, nothing sent). This ends a ping-pong through an agent's or a customer's
  naive vacation responder.
- :func:`allowed`: before notifications are queued, drop (and record on the ticket) those to a
  bouncing address, and automatic ones to a customer address that already got
  ``max_auto_replies_per_address`` automatic mails (``max_auto_replies_per_ticket`` about this
  ticket) within the window. RFC 3834 §2: a responder SHOULD NOT answer one sender often.
  Mails a person wrote (``Auto-Submitted: no``) are never rate-limited.

Effects: reads the database, and :func:`allowed` writes ticket events. ``now`` is passed in.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case
from sqlmodel import Session, func, select

from gateway.bounces import bouncing_reasons
from gateway.config import Settings
from gateway.notifications import Notification
from gateway.tokens import plus_token
from storage import queries
from storage.models import MessageRecord, Outbox

LOOP_HEADER = "X-Loop"

# Built once: the worker asks these for every message or notification batch, and building
# a statement costs about as much as running it.
_SENT_BY_US = select(Outbox.id).where(Outbox.message_id == bindparam("message_id"))
_REPLIES = select(func.count()).select_from(MessageRecord).where(
    MessageRecord.ticket_id == bindparam("ticket_id"), MessageRecord.direction == "inbound",
    MessageRecord.author_email == bindparam("address"), MessageRecord.created_at >= bindparam("since"))
# Per recipient: automatic mails since a moment, and how many of them were about one ticket.
_AUTOMATIC_MAILS = (select(Outbox.recipients, func.count(),
                           func.sum(case((Outbox.ticket_id == bindparam("ticket_id"), 1), else_=0)))
                    .where(Outbox.recipients.in_(bindparam("recipients", expanding=True)),
                           Outbox.created_at >= bindparam("since"), Outbox.auto_submitted != "no",
                           Outbox.ticket_id.is_not(None))
                    .group_by(Outbox.recipients))


def own_mail_reason(session: Session, settings: Settings, headers: Mapping[str, Sequence[str]],
                    from_addr: str | None, message_id: str | None) -> str | None:
    """Why this message is Postdesk's own mail come back, or None (the outbox is asked only when the headers pass)."""
    return (looped_reason(settings, headers, from_addr)
            or copy_reason(message_id, bool(message_id) and _sent_by_us(session, message_id)))


def looped_reason(settings: Settings, headers: Mapping[str, Sequence[str]], from_addr: str | None) -> str | None:
    """Why the headers alone show Postdesk's own mail come back, or None."""
    support = settings.smtp.support_address
    if from_addr and plus_token(from_addr, support) is not None:
        return f"the message claims the support address {support} as its author (our own mail come back)"
    if any(support.lower() in value.lower() for value in headers.get(LOOP_HEADER.lower(), ())):
        return f"the message carries our {LOOP_HEADER} header (our own mail come back)"
    return None


def copy_reason(message_id: str | None, sent_by_us: bool) -> str | None:
    """Why a message whose Message-ID the outbox holds (``sent_by_us``) is our own mail come back, or None."""
    return f"the message is a copy of mail Postdesk sent ({message_id})" if sent_by_us else None


def _sent_by_us(session: Session, message_id: str) -> bool:
    return session.connection().execute(_SENT_BY_US, {"message_id": message_id}).first() is not None


def reply_cap_reason(session: Session, settings: Settings, ticket_id: int, address: str,
                     now: datetime) -> str | None:
    """Why a mail from ``address`` on this ticket is kept quietly, or None."""
    cap, since = settings.loops.max_replies_per_ticket_per_address, _since(settings, now)
    count = session.connection().execute(_REPLIES, {"ticket_id": ticket_id, "address": address.lower(),
                                                    "since": since}).scalar_one()
    if count < cap:
        return None
    return (f"kept quietly: {address} wrote {count} mails on #{ticket_id} within "
            f"{settings.loops.window_minutes} minutes (limit {cap}; loop protection)")


def allowed(session: Session, settings: Settings, ticket_id: int, notifications: Sequence[Notification],
            now: datetime) -> list[Notification]:
    """The notifications that may be queued; each one skipped is recorded on the ticket."""
    kept = []
    for notification, reason in zip(notifications, skip_reasons(session, settings, ticket_id, notifications, now)):
        if reason is None:
            kept.append(notification)
            continue
        queries.add_event(session, ticket_id, now, "system", "notification-suppressed",
                          f"{notification.template} to {notification.recipient.email} not sent: {reason}")
    return kept


def skip_reasons(session: Session, settings: Settings, ticket_id: int, notifications: Sequence[Notification],
                 now: datetime) -> list[str | None]:
    """Why each of ``notifications`` must not be queued now (None: it may be), in their order.

    The whole batch is judged against the mail stored before it (queued earlier in this
    transaction included), in two statements however many recipients it has.
    """
    queries.write_pending_accounts(session)   # a bounce this very mail cleared (bounces.clear_on_new_mail)
    addresses = [notification.recipient.email.lower() for notification in notifications]
    bouncing = bouncing_reasons(session, addresses)
    limited = [address for notification, address in zip(notifications, addresses)
               if address not in bouncing and _rate_limited(notification)]
    counts = _automatic_mails(session, limited, _since(settings, now), ticket_id)
    reasons: list[str | None] = []
    for notification, address in zip(notifications, addresses):
        if address in bouncing:
            reasons.append(bouncing[address])
        elif _rate_limited(notification):
            reasons.append(_over_limit(settings, ticket_id, address, counts.get(address, (0, 0))))
        else:
            reasons.append(None)
    return reasons


def _rate_limited(notification: Notification) -> bool:
    """Mails a person wrote (``Auto-Submitted: no``) and mail to agents are never rate-limited."""
    return notification.auto_submitted != "no" and notification.recipient.kind != "agent"


def _over_limit(settings: Settings, ticket_id: int, address: str, counts: tuple[int, int]) -> str | None:
    limits, (sent, about) = settings.loops, counts
    if sent >= limits.max_auto_replies_per_address:
        return (f"{sent} automatic mails to {address} within {limits.window_minutes} minutes "
                f"(limit {limits.max_auto_replies_per_address}; loop protection)")
    if about >= limits.max_auto_replies_per_ticket:
        return (f"{about} automatic mails about #{ticket_id} to {address} within {limits.window_minutes} "
                f"minutes (limit {limits.max_auto_replies_per_ticket}; loop protection)")
    return None


def _automatic_mails(session: Session, addresses: Sequence[str], since: datetime,
                     ticket_id: int) -> dict[str, tuple[int, int]]:
    """Per address: automatic mails to it since ``since``, and how many of them were about ``ticket_id``."""
    # Answers about tickets only: invitations and other account mail are no loop partner's doing.
    by_recipients = {json.dumps([address]): address for address in addresses}
    if not by_recipients:
        return {}
    rows = session.connection().execute(_AUTOMATIC_MAILS, {"recipients": sorted(by_recipients), "since": since,
                                                           "ticket_id": ticket_id})
    return {by_recipients[recipients]: (sent, about_ticket or 0) for recipients, sent, about_ticket in rows}


def _since(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(minutes=settings.loops.window_minutes)
