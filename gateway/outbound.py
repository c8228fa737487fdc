"""The outbox dispatcher: deliver queued mails to the Maildir or an SMTP relay.

Three steps, so no database lock is held while a mail travels: claim the due rows
in one short transaction (``SKIP LOCKED`` on PostgreSQL; each claimed row's next
attempt moves a lease ahead, so no other dispatcher takes it meanwhile), deliver
with no transaction open, then record the results. Temporary failures are retried
with exponential backoff; permanent ones, or too many attempts, mark the row
``failed`` with the reason. A dispatcher that dies mid-way leaves its rows to be
taken again when the lease ends: Maildir delivery is idempotent per outbox row,
and with a relay each result is recorded as soon as the relay answered, so only a
crash between the relay's 250 and that commit can send a mail twice (as with any MTA).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine

from gateway.bounces import bouncing_reasons, hold_if_bouncing
from gateway.config import Settings
from gateway.delivery import DeliveryError, deliver_to_maildir, deliver_via_smtp, delivered_stems, sync_maildir
from storage import queries
from storage.db import transaction
from storage.models import Outbox

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=15)   # a claimed row is not due again before this; delivery stops at half of it


def send_due(engine: Engine, settings: Settings, now: datetime, limit: int = 50) -> int:
    """Deliver what is due at ``now``; returns the number of mails delivered."""
    rows = _claim(engine, now, limit)
    if not rows:
        return 0
    maildir = settings.maildir_path if settings.outbound.transport == "maildir" else None
    delivered = delivered_stems(maildir) if maildir else None   # one look at the folders for the batch
    started, done, sent = time.monotonic(), [], 0
    for position, row in enumerate(rows):
        if time.monotonic() - started > LEASE.total_seconds() / 2:   # a slow relay: hand the rest back
            _release(engine, rows[position:], now)
            break
        sent += _deliver(row, settings, now, delivered)
        done.append(row)
        if maildir is None:   # a relay's 250 cannot be taken back: record it at once
            _record(engine, done)
            done = []
    if maildir is not None and sent:
        try:
            sync_maildir(maildir)   # the renames are durable before any row says "sent"
        except DeliveryError as exc:
            for row in done:
                if row.status == "sent":
                    row.status, row.sent_at = "queued", None
                    _failed(row, settings, now, False, exc.reason)
            sent = 0
    _record(engine, done)
    return sent


def _claim(engine: Engine, now: datetime, limit: int) -> list[Outbox]:
    with transaction(engine) as session, session.no_autoflush:
        rows = queries.due_outbox(session, now, limit)
        recipients = {row.id: json.loads(row.recipients or "[]") for row in rows}
        bouncing = bouncing_reasons(session, [a for addresses in recipients.values() for a in addresses])
        claimed = [row for row in rows
                   if not (any(a.lower() in bouncing for a in recipients[row.id])
                           and hold_if_bouncing(session, row, now))]   # bounced meanwhile: recorded, not sent
        if claimed:
            session.execute(update(Outbox.__table__).where(Outbox.__table__.c.id.in_([row.id for row in claimed]))
                            .values(next_attempt_at=now + LEASE))
    return claimed   # next_attempt_at still says when it was due: the backoff of a failure counts from there


_RESULT = (update(Outbox.__table__)
           .where(Outbox.__table__.c.id == bindparam("row_id"), Outbox.__table__.c.status == "queued")
           .values(status=bindparam("new_status"), attempts=bindparam("new_attempts"),
                   sent_at=bindparam("new_sent_at"), last_error=bindparam("new_error"),
                   next_attempt_at=bindparam("new_next")))


def _record(engine: Engine, rows: list[Outbox]) -> None:
    if not rows:
        return
    with transaction(engine) as session:
        session.connection().execute(_RESULT, [
            {"row_id": row.id, "new_status": row.status, "new_attempts": row.attempts, "new_sent_at": row.sent_at,
             "new_error": row.last_error, "new_next": row.next_attempt_at} for row in rows])


def _release(engine: Engine, rows: list[Outbox], now: datetime) -> None:
    with transaction(engine) as session:
        session.execute(update(Outbox.__table__).where(Outbox.__table__.c.id.in_([row.id for row in rows]),
                                                       Outbox.__table__.c.status == "queued")
                        .values(next_attempt_at=now))


def _deliver(row: Outbox, settings: Settings, now: datetime, delivered: set[str] | None = None) -> int:
    row.attempts += 1
    try:
        if settings.outbound.transport == "maildir":
            deliver_to_maildir(settings.maildir_path, _key(row), row.raw, delivered, sync_directory=False)
        else:
            deliver_via_smtp(settings.outbound.relay_host, settings.outbound.relay_port, row.envelope_from,
                             json.loads(row.recipients), row.raw)
    except DeliveryError as exc:
        return _failed(row, settings, now, exc.permanent, exc.reason)
    except OSError as exc:
        return _failed(row, settings, now, False, f"{type(exc).__name__}: {exc}")
    row.status, row.sent_at, row.last_error = "sent", now, None
    log.info("outbox %s sent (%s) to %s", row.id, row.template, row.recipients)
    return 1


def _key(row: Outbox) -> str:
    token = "".join(ch for ch in row.message_id if ch.isalnum())[:40]
    return f"postdesk-{row.id}-{token}"


def _failed(row: Outbox, settings: Settings, now: datetime, permanent: bool, reason: str) -> int:
    row.last_error = reason[:500]
    if permanent or row.attempts >= settings.outbound.max_attempts:
        row.status = "failed"
        log.warning("outbox %s failed permanently: %s", row.id, reason)
    else:
        delay = settings.outbound.retry_base_seconds * 2 ** (row.attempts - 1)
        row.next_attempt_at = now + timedelta(seconds=min(delay, 6 * 3600))
        log.warning("outbox %s: temporary failure (%s), retry at %s", row.id, reason, row.next_attempt_at)
    return 0
