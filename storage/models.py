"""The data model: organisations, people, tickets, messages, inbound archive, outbox.

Times are stored as UTC and always handed back aware (SQLite forgets the zone;
:class:`UTCDateTime` restores it in this one place). Email addresses are stored
lowercased. Ticket numbers are the ticket's primary key, so two gateway
processes on one PostgreSQL database can never hand out the same number.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import Column, Index, LargeBinary, Text
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    """A timestamp that goes in as aware UTC and always comes out aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _ts(nullable: bool = False, index: bool = False):
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class Organization(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    name_key: str = Field(sa_column_kwargs={"unique": True})
    package: str
    locale: str = "en"
    created_at: datetime = _ts()


class Account(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(sa_column_kwargs={"unique": True})
    name: str = ""
    locale: Optional[str] = None
    organization_id: int = Field(foreign_key="organization.id", index=True)
    follows: bool = False
    active: bool = True
    created_at: datetime = _ts()
    deactivated_at: Optional[datetime] = _ts(nullable=True)
    # bounces (gateway/bounces.py): no mail goes to a bouncing address until cleared
    bouncing: bool = False
    bounced_at: Optional[datetime] = _ts(nullable=True)
    bounce_reason: str = ""


class Agent(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(sa_column_kwargs={"unique": True})
    name: str = ""
    locale: str = "en"
    active: bool = True
    created_at: datetime = _ts()


class SharedAddress(SQLModel, table=True):
    """An address an admin marked as shared: it can be no account and its mail is refused."""

    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(sa_column_kwargs={"unique": True})
    created_at: datetime = _ts()


class Ticket(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organization.id", index=True)
    requester_id: int = Field(foreign_key="account.id", index=True)
    subject: str
    status: str = Field(index=True)
    type: str
    priority: Optional[str] = None
    module: Optional[str] = None
    followup_of: Optional[int] = Field(default=None, foreign_key="ticket.id")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    status_changed_at: datetime = _ts()
    solved_at: Optional[datetime] = _ts(nullable=True, index=True)
    closed_at: Optional[datetime] = _ts(nullable=True)
    # timers (gateway/lifecycle.py, gateway/targets.py); all empty by default
    last_customer_at: Optional[datetime] = _ts(nullable=True)
    awaiting_since: Optional[datetime] = _ts(nullable=True, index=True)
    status_request_sent_at: Optional[datetime] = _ts(nullable=True)
    first_response_due_at: Optional[datetime] = _ts(nullable=True, index=True)
    first_responded_at: Optional[datetime] = _ts(nullable=True)
    first_response_warning: Optional[str] = None


class TicketCC(SQLModel, table=True):
    ticket_id: int = Field(foreign_key="ticket.id", primary_key=True)
    account_id: int = Field(foreign_key="account.id", primary_key=True)


class MessageRecord(SQLModel, table=True):
    """One message on a ticket, inbound or outbound, public or internal."""

    __tablename__ = "message"
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    direction: str
    author_email: str
    author_kind: str
    message_id: Optional[str] = Field(default=None, index=True)
    in_reply_to: Optional[str] = None
    references: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    subject: str = ""
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    full_text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    strip_rule: str = ""
    internal: bool = False
    inbound_id: Optional[int] = Field(default=None, foreign_key="inbound.id")
    outbox_id: Optional[int] = Field(default=None, foreign_key="outbox.id")
    recipient: Optional[str] = None
    created_at: datetime = _ts()


class Attachment(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    message_pk: int = Field(foreign_key="message.id", index=True)
    filename: str
    content_type: str
    size: int
    sha256: str
    content_id: Optional[str] = None
    inline: bool = False
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Inbound(SQLModel, table=True):
    """Every delivery attempt that reached the end of DATA, refused ones included.

    ``dedupe_key`` (Message-ID + hash of the line-ending-normalised bytes) is set
    on the first delivery of a message only; its unique index makes a second
    copy, even from another process, a recorded ``duplicate``.
    """

    id: Optional[int] = Field(default=None, primary_key=True)
    received_at: datetime = _ts(index=True)
    channel: str = "smtp"
    envelope_from: str = ""
    envelope_to: str = ""
    message_id: Optional[str] = Field(default=None, index=True)
    from_addr: Optional[str] = None
    subject: str = ""
    size: int = 0
    content_sha256: str = ""
    dedupe_key: Optional[str] = Field(default=None, sa_column_kwargs={"unique": True})
    raw: Optional[bytes] = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    outcome: str = Field(default="pending", index=True)
    reason: str = ""
    ticket_number: Optional[int] = None
    error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    processed_at: Optional[datetime] = _ts(nullable=True)
    # typed reasons and holds (gateway/intake.py, gateway/quarantine.py)
    reason_code: str = ""          # the rule behind the outcome: sender-auth-failed, over-limit, processing-failed …
    auth: str = ""                 # the sender-authentication verdict at receipt (JSON), "" when not checked
    released_at: Optional[datetime] = _ts(nullable=True)   # an admin released it from quarantine
    # out-of-order arrival (gateway/arrival.py): a reply ``deferred`` until its parent arrives, at most until then
    wait_until: Optional[datetime] = _ts(nullable=True)
    # filed from the SMTP intake's spool (storage/spool.py): the entry's key, so it is filed once
    spool_key: Optional[str] = Field(default=None, max_length=32, index=True, unique=True)


class Outbox(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = _ts()
    ticket_id: Optional[int] = Field(default=None, foreign_key="ticket.id", index=True)
    template: str
    locale: str = "en"
    recipients: str
    envelope_from: str = ""
    subject: str
    message_id: str = Field(sa_column_kwargs={"unique": True})
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="queued", index=True)
    attempts: int = 0
    next_attempt_at: datetime = _ts(index=True)
    last_error: Optional[str] = None
    sent_at: Optional[datetime] = _ts(nullable=True)
    auto_submitted: str = ""       # the mail's Auto-Submitted value: loop limits count the automatic ones


class TicketEvent(SQLModel, table=True):
    """The audit trail of a ticket: every change, who or which rule made it, and when."""

    __tablename__ = "ticket_event"
    id: Optional[int] = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    at: datetime = _ts()
    actor: str
    kind: str
    detail: str = ""


class Meta(SQLModel, table=True):
    """Small installation-wide values, such as the generated signing secret."""

    key: str = Field(primary_key=True)
    value: str


Index("ix_message_ticket_created", MessageRecord.ticket_id, MessageRecord.created_at)
# Loop limits count the recent mail to one address (gateway/loops.py) without reading every outbox row.
Index("ix_outbox_recipients_created", Outbox.recipients, Outbox.created_at)


class TemplateVersion(SQLModel, table=True):
    """One version of an admin's override of a notification template, for one locale.

    Versions are only ever added: the newest version of (name, locale) is in force.
    A part that is None falls back to the packaged template; ``body_html`` "" means
    "no HTML part". A ``reset`` version has every part None: the defaults are in force.
    """

    __tablename__ = "template_version"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    locale: str
    version: int
    action: str = "set"                  # set | rollback | reset
    subject: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    body_text: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    body_html: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    author: str = ""
    note: str = ""
    created_at: datetime = _ts()


Index("ux_template_version", TemplateVersion.name, TemplateVersion.locale, TemplateVersion.version, unique=True)


class MessageReference(SQLModel, table=True):
    """A Message-ID that a processed message names (In-Reply-To/References) but nobody had stored then.

    Written for a reply that waits for its parent (``ticket_id`` empty) and for one stored on a
    ticket (``ticket_id`` set). When a message with that Message-ID arrives later, it wakes the
    waiting reply, or joins the ticket of the stored one (``gateway/arrival.py``, issue 7 item 6).
    """

    __tablename__ = "message_reference"
    id: Optional[int] = Field(default=None, primary_key=True)
    referenced: str = Field(index=True)
    inbound_id: int = Field(foreign_key="inbound.id", index=True)
    ticket_id: Optional[int] = Field(default=None, foreign_key="ticket.id")
    created_at: datetime = _ts(index=True)   # the timers delete old notes by age (gateway/arrival.py)
