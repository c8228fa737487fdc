"""Message-IDs named before they were seen: the storage side of out-of-order arrival (issue 7 item 6).

A processed message whose In-Reply-To/References name Message-IDs nobody has stored
leaves one ``message_reference`` row per such Message-ID: without a ticket while it
waits for its parent (its inbound row is ``deferred``), with its ticket once it is on
one. Every lookup goes through the index on ``referenced``; messages whose references
are all known write nothing here. A note outlives its use: most named Message-IDs never
arrive, so the timers delete old notes in small batches through the index on
``created_at``. Each function works inside the caller's transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, insert, text
from sqlmodel import Session

from storage.models import MessageReference, UTCDateTime

DEFERRED = "deferred"

# Plain statements: these run for every processed message, and an ORM-enabled UPDATE costs
# about 25 times as much as the statement itself (issue 7 item 5: no ORM overhead in hot lookups).
_REMEMBER = insert(MessageReference.__table__)
_FORGET = text("DELETE FROM message_reference WHERE inbound_id = :inbound_id")
_TICKETS_NAMING = text("SELECT ticket_id FROM message_reference WHERE referenced = :message_id "
                       "AND ticket_id IS NOT NULL ORDER BY id")
_WAKE = text("UPDATE inbound SET outcome = 'pending' WHERE outcome = 'deferred' AND id IN "
             "(SELECT inbound_id FROM message_reference WHERE referenced = :message_id AND ticket_id IS NULL)")
_PRUNE = text("DELETE FROM message_reference WHERE id IN "
               "(SELECT id FROM message_reference WHERE created_at < :cutoff LIMIT :limit)"
               ).bindparams(bindparam("cutoff", type_=UTCDateTime()))
_COUNT_OLDER = text("SELECT count(*) FROM message_reference WHERE created_at < :cutoff"
                    ).bindparams(bindparam("cutoff", type_=UTCDateTime()))
_RELEASE = text("UPDATE inbound SET outcome = 'pending' WHERE outcome = 'deferred' AND wait_until <= :now"
                ).bindparams(bindparam("now", type_=UTCDateTime()))


def remember(session: Session, inbound_id: int, message_ids: Sequence[str], ticket_id: int | None,
             now: datetime) -> None:
    """Note that inbound ``inbound_id`` names ``message_ids`` (stored on ``ticket_id``, or waiting)."""
    rows = [{"referenced": mid, "inbound_id": inbound_id, "ticket_id": ticket_id, "created_at": now}
            for mid in dict.fromkeys(message_ids)]
    if rows:
        session.connection().execute(_REMEMBER, rows)


def forget(session: Session, inbound_id: int) -> None:
    """Drop what an earlier pass over inbound ``inbound_id`` noted (it waited; now it is processed again)."""
    session.connection().execute(_FORGET, {"inbound_id": inbound_id})


def tickets_naming(session: Session, message_id: str) -> list[int]:
    """Tickets holding a message that named ``message_id`` before it arrived, earliest first."""
    rows = session.connection().execute(_TICKETS_NAMING, {"message_id": message_id})
    return list(dict.fromkeys(rows.scalars()))


def wake_waiting(session: Session, message_id: str) -> int:
    """Put every message deferred while waiting for ``message_id`` back in the queue; returns how many."""
    return session.connection().execute(_WAKE, {"message_id": message_id}).rowcount or 0


def release_due(session: Session, now: datetime) -> int:
    """Put every deferred message whose wait is over at ``now`` back in the queue; returns how many."""
    return session.execute(_RELEASE, {"now": now}).rowcount or 0


def prune(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete at most ``limit`` notes written before ``cutoff``; returns how many.

    Bounded, so that a backlog of millions is many short transactions, never one that
    holds SQLite's single write lock while senders wait.
    """
    return session.connection().execute(_PRUNE, {"cutoff": cutoff, "limit": limit}).rowcount or 0


def count_older(session: Session, cutoff: datetime) -> int:
    """How many notes were written before ``cutoff`` (what :func:`prune` would delete in all)."""
    return session.connection().execute(_COUNT_OLDER, {"cutoff": cutoff}).scalar_one()
