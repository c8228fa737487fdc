"""Writing tickets, their messages, attachments and state (inside the caller's transaction)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

from gateway.lifecycle import Status, TicketState
from gateway.parsing import Attachment as ParsedAttachment
from storage.models import Attachment, MessageRecord, Ticket


def open_ticket(session: Session, *, org_id: int, requester_id: int, subject: str, type_: str,
                priority: str | None, module: str | None, now: datetime, followup_of: int | None = None,
                last_customer_at: datetime | None = None, first_response_due_at: datetime | None = None) -> Ticket:
    """Insert a new open ticket with its clocks already set (one INSERT, no UPDATE after it); returns it numbered.

    A plain insert, without the cost of an ORM flush. The ticket comes back detached, as if
    read and let go: a later change joins it to the session (``session.add``) and is written
    as an UPDATE, and a savepoint rolled back after the insert leaves no stale copy in the session.
    """
    ticket = Ticket(organization_id=org_id, requester_id=requester_id, subject=subject, status=Status.OPEN.value,
                    type=type_, priority=priority, module=module, followup_of=followup_of,
                    created_at=now, updated_at=now, status_changed_at=now, last_customer_at=last_customer_at,
                    first_response_due_at=first_response_due_at)
    values = {column: getattr(ticket, column) for column in _TICKET_COLUMNS}
    ticket.id = session.connection().execute(_INSERT_TICKET, values).inserted_primary_key[0]
    make_transient_to_detached(ticket)
    return ticket


def state_of(ticket: Ticket) -> TicketState:
    awaiting_since = ticket.awaiting_since
    if awaiting_since is None and ticket.status == Status.AWAITING_REPLY.value:
        awaiting_since = ticket.status_changed_at   # a row written before the clock was stored
    return TicketState(status=Status(ticket.status), type=ticket.type, priority=ticket.priority,
                       module=ticket.module, solved_at=ticket.solved_at, closed_at=ticket.closed_at,
                       last_customer_at=ticket.last_customer_at, awaiting_since=awaiting_since,
                       status_request_sent_at=ticket.status_request_sent_at,
                       first_response_due_at=ticket.first_response_due_at,
                       first_responded_at=ticket.first_responded_at,
                       first_response_warning=ticket.first_response_warning)


def save_state(session: Session, ticket: Ticket, state: TicketState, now: datetime) -> None:
    values = {
        "status": state.status.value, "type": state.type, "priority": state.priority, "module": state.module,
        "solved_at": state.solved_at, "closed_at": state.closed_at, "last_customer_at": state.last_customer_at,
        "awaiting_since": state.awaiting_since, "status_request_sent_at": state.status_request_sent_at,
        "first_response_due_at": state.first_response_due_at, "first_responded_at": state.first_responded_at,
        "first_response_warning": state.first_response_warning, "updated_at": now,
    }
    if state.status.value != ticket.status:
        values["status_changed_at"] = now
    for key, value in values.items():
        if getattr(ticket, key) != value:   # an unchanged value is not written anyway: no need to track it
            setattr(ticket, key, value)
    session.add(ticket)


_INSERT_TICKET = insert(Ticket.__table__)
_TICKET_COLUMNS = [column.key for column in Ticket.__table__.columns if column.key != "id"]
_INSERT_MESSAGE = insert(MessageRecord.__table__)
_INSERT_ATTACHMENT = insert(Attachment.__table__)


def add_message(session: Session, ticket: Ticket, *, author_email: str, author_kind: str,
                message_id: str | None, in_reply_to: Sequence[str], references: Sequence[str], subject: str,
                text: str, full_text: str, strip_rule: str, internal: bool, inbound_id: int | None,
                now: datetime, attachments: Sequence[ParsedAttachment] = ()) -> int:
    """Store an inbound message (and its attachments) on the ticket at once; returns the message's id.

    Plain inserts, in the order they happen: no ORM object to build and flush per message.
    """
    connection = session.connection()
    message_pk = connection.execute(_INSERT_MESSAGE, {
        "ticket_id": ticket.id, "direction": "inbound", "author_email": author_email, "author_kind": author_kind,
        "message_id": message_id, "in_reply_to": " ".join(in_reply_to) or None, "references": " ".join(references),
        "subject": subject, "text": text, "full_text": full_text, "strip_rule": strip_rule, "internal": internal,
        "inbound_id": inbound_id, "created_at": now,
    }).inserted_primary_key[0]
    if attachments:
        connection.execute(_INSERT_ATTACHMENT, [{
            "ticket_id": ticket.id, "message_pk": message_pk, "filename": item.filename,
            "content_type": item.content_type, "size": len(item.content),
            "sha256": hashlib.sha256(item.content).hexdigest(), "content_id": item.content_id,
            "inline": item.inline, "content": item.content,
        } for item in attachments])
    if ticket.updated_at != now:   # a ticket opened just now needs no update
        ticket.updated_at = now
        session.add(ticket)
    return message_pk
