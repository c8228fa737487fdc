"""Out-of-order arrival (issue 7 item 6): a reply that overtook its parent waits; a late parent joins.

Under concurrency a reply can be stored and processed before the message it answers.
Two rules put both on one ticket:

1. **The reply waits.** A message that finds no ticket but names Message-IDs nobody
   has stored (``ThreadMatch.missing``) is ``deferred`` instead of opening a ticket (or,
   from an agent, being ignored): for at most ``[desk] parent_wait_seconds`` from its
   first pass. The Message-IDs it waits for are noted (``storage/references.py``);
   processing any of them puts it back in the queue, in the same transaction, so it
   is processed right after its parent and threads onto the parent's ticket. `serve`
   puts back every message whose wait is over (:func:`release_waiting`), which is then
   processed as usual.
2. **A late parent joins.** A parent that comes after that wait finds the reply's
   ticket through the noted Message-IDs (the threader's last evidence) and joins it,
   only when it is a ticket of the parent's own organisation; its author becomes a
   CC. The reply's acknowledgment already went out when it opened the ticket, so the
   parent adds no second one.

Only mail that `serve` receives (SMTP, LMTP) waits, and only on its first pass: its
worker releases the wait. Mail fetched from a mailbox, piped in or replayed is
processed by its own command at once, and a requeued message is not held up again;
rule 2 covers those. This module carries the rules out inside the caller's transaction.

Rule 2 holds for ``[desk] late_parent_days``: most Message-IDs a reply names never
arrive (mail of other systems, long quoted chains), so the timers delete older notes
(:func:`prune_notes`), in batches of their own transactions.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.config import Settings
from gateway.intake import ENVELOPE_CHANNELS
from gateway.threader import ThreadMatch, parent_wait_until
from storage import references
from storage.db import let_front_doors_go, reading, transaction
from storage.models import Inbound

log = logging.getLogger(__name__)

DEFERRED = references.DEFERRED
RULE = "awaiting-parent"
PRUNE_BATCH = 1000    # notes deleted per transaction: each holds SQLite's write lock for milliseconds only


def wait_for_parent(settings: Settings, inbound: Inbound, match: ThreadMatch, now: datetime) -> str | None:
    """Defer a message that may have overtaken its parent: sets ``wait_until``, returns the reason (or None)."""
    may_start = inbound.attempts == 0 and inbound.channel in ENVELOPE_CHANNELS
    until = parent_wait_until(match, inbound.wait_until, may_start, now,
                              timedelta(seconds=settings.desk.parent_wait_seconds))
    if until is None:
        return None
    inbound.wait_until = until
    named = ", ".join(match.missing[:3]) + (f" and {len(match.missing) - 3} more" if len(match.missing) > 3 else "")
    return (f"deferred: it answers {named}, not received yet; waits for it until "
            f"{until.strftime('%H:%M:%S')} UTC")


def settle(session: Session, inbound: Inbound, outcome: str, ticket: int | None, missing: Sequence[str],
           now: datetime) -> None:
    """After a pass over ``inbound``: note the Message-IDs it names but nobody has, wake what waited for it."""
    if inbound.wait_until is not None:   # it waited: what an earlier pass noted is replaced
        references.forget(session, inbound.id)
    if missing and (outcome == DEFERRED or ticket is not None):
        references.remember(session, inbound.id, missing, None if outcome == DEFERRED else ticket, now)
    if outcome != DEFERRED and inbound.message_id:
        woken = references.wake_waiting(session, inbound.message_id)
        if woken:
            log.info("inbound %s %s: %d waiting repl%s back in the queue", inbound.id, inbound.message_id,
                     woken, "y" if woken == 1 else "ies")


def release_waiting(engine: Engine, now: datetime) -> int:
    """Put back in the queue every deferred message whose wait is over; returns how many (`serve`)."""
    with transaction(engine) as session:
        released = references.release_due(session, now)
    if released:
        log.info("%d deferred message%s waited long enough for a parent", released, "" if released == 1 else "s")
    return released


def prune_notes(engine: Engine, settings: Settings, now: datetime, dry_run: bool = False) -> int:
    """Delete the notes older than ``[desk] late_parent_days`` at ``now``; returns how many (``dry_run``: would).

    A parent that has not come by then will not join its reply's ticket any more.
    """
    cutoff = now - timedelta(days=settings.desk.late_parent_days)
    if dry_run:
        with reading(engine) as session:
            removed = references.count_older(session, cutoff)
    else:
        removed = _delete_older(engine, cutoff)
    if removed:
        log.info("%s %d note%s of Message-IDs not received within %d days", "would delete" if dry_run else "deleted",
                 removed, "" if removed == 1 else "s", settings.desk.late_parent_days)
    return removed


def _delete_older(engine: Engine, cutoff: datetime) -> int:
    """One transaction per batch, the front doors first between two: a backlog of millions never holds up intake."""
    removed = 0
    while True:
        with transaction(engine) as session:
            batch = references.prune(session, cutoff, PRUNE_BATCH)
        removed += batch
        if batch < PRUNE_BATCH:
            return removed
        let_front_doors_go(engine)
