"""The outbox dispatcher: deliver queued mails to the Maildir or an SMTP relay.

Each row is claimed (``SKIP LOCKED`` on PostgreSQL), delivered, and marked
``sent`` in its own transaction. Temporary failures are retried with
exponential backoff; permanent ones, or too many attempts, mark it ``failed``
with the reason. Maildir delivery is idempotent per outbox row, so a crash
between delivering and marking sends nothing twice.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from gateway.bounces import hold_if_bouncing
from gateway.config import Settings
from gateway.delivery import DeliveryError, deliver_to_maildir, deliver_via_smtp
from storage import queries
from storage.db import transaction
from storage.models import Outbox

log = logging.getLogger(__name__)


def send_due(engine: Engine, settings: Settings, now: datetime, limit: int = 50) -> int:
    """Deliver what is due at ``now``; returns the number of mails delivered."""
    sent = 0
    with transaction(engine) as session:
        ids = [row.id for row in queries.due_outbox(session, now, limit)]
    for outbox_id in ids:
        with transaction(engine) as session:
            # The row stays locked while it is delivered: another dispatcher skips it.
            row = queries.claim_outbox(session, outbox_id)
            if row is None or hold_if_bouncing(session, row, now):   # bounced meanwhile: recorded, not sent
                continue
            sent += _deliver(row, settings, now)
            session.add(row)
    return sent


def _deliver(row: Outbox, settings: Settings, now: datetime) -> int:
    row.attempts += 1
    try:
        if settings.outbound.transport == "maildir":
            deliver_to_maildir(settings.maildir_path, _key(row), row.raw)
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
