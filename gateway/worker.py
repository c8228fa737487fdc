"""The worker: claim a pending inbound row, process it in one transaction, record the outcome.

Any unexpected exception rolls the processing back and marks the row
``quarantined`` with the error, in a transaction of its own: the raw message
stays archived and ``postdesk inbound requeue ID`` puts it back. A crash before
the commit leaves the row ``pending``, so it is processed on the next pass —
exactly once, because the outcome is written in the same transaction as the
ticket changes.
"""
from __future__ import annotations

import contextlib
import logging
import traceback
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from gateway.clock import Clock
from gateway.mailer import Deps
from gateway.pipeline import Outcome, Prepared, prepare, process_one
from storage import queries
from storage.db import let_front_doors_go, reading, transaction
from storage.models import Inbound

log = logging.getLogger(__name__)


def process_pending(engine: Engine, deps: Deps, clock: Clock, limit: int = 100, batch: int = 1) -> int:
    """Process up to ``limit`` pending inbound messages, up to ``batch`` to a transaction; returns how many
    were handled."""
    with transaction(engine) as session:
        pending = queries.pending_inbound(session, limit)
    handled = 0
    for chunk in batches(pending, batch, deps.settings.smtp.max_message_bytes):
        prepared = _prepare(engine, deps, chunk)   # needs no lock
        let_front_doors_go(engine)   # SQLite: a sender waiting for its 250 writes first
        if len(chunk) == 1:
            handled += process_inbound(engine, deps, chunk[0], clock.now(), prepared[chunk[0]])
        else:
            handled += _process_batch(engine, deps, chunk, clock.now(), prepared)
    return handled


def batches(pending: list[tuple[int, int]], most: int, most_bytes: int) -> list[list[int]]:
    """Consecutive messages per transaction: at most ``most``, and beyond the first at most ``most_bytes`` together.

    A batch's messages are parsed before its transaction and held until it ends, so the
    bytes bound keeps the worker's memory near one message of the largest size accepted.

    >>> batches([(1, 10), (2, 10), (3, 90), (4, 5), (5, 5)], most=3, most_bytes=100)
    [[1, 2], [3, 4, 5]]
    >>> batches([(1, 500), (2, 1)], most=20, most_bytes=100)   # a message over the bound goes alone
    [[1], [2]]
    """
    chunks: list[list[int]] = []
    chunk: list[int] = []
    size = 0
    for inbound_id, nbytes in pending:
        if chunk and (len(chunk) >= max(1, most) or size + nbytes > most_bytes):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(inbound_id)
        size += nbytes
    if chunk:
        chunks.append(chunk)
    return chunks


def _prepare(engine: Engine, deps: Deps, ids: list[int]) -> dict[int, Prepared | None]:
    """The database-free part of processing, before the transaction; None leaves it all to the transaction."""
    prepared: dict[int, Prepared | None] = dict.fromkeys(ids)
    try:
        with reading(engine) as session:
            rows = session.exec(select(Inbound.id, Inbound.raw, Inbound.envelope_from, Inbound.channel)
                                .where(Inbound.id.in_(ids), Inbound.outcome == "pending")).all()
    except Exception:  # noqa: BLE001 - the transaction does it again and quarantines what fails
        return prepared
    for inbound_id, raw, envelope_from, channel in rows:
        with contextlib.suppress(Exception):   # likewise
            prepared[inbound_id] = prepare(raw or b"", envelope_from, channel, deps)
    return prepared


def process_inbound(engine: Engine, deps: Deps, inbound_id: int, now: datetime,
                    prepared: Prepared | None = None) -> int:
    try:
        with transaction(engine) as session:
            result = _process_claimed(session, deps, inbound_id, now, prepared)
        if result is not None:
            _log_outcome(inbound_id, *result)
        return int(result is not None)
    except Exception as exc:  # noqa: BLE001 - quarantine whatever went wrong, never drop the message
        log.exception("inbound %s: processing failed, quarantined", inbound_id)
        _quarantine(engine, inbound_id, exc, now)
        return 1


def _process_batch(engine: Engine, deps: Deps, ids: list[int], now: datetime,
                   prepared: dict[int, Prepared | None]) -> int:
    """Several messages in one transaction (one commit, one disk sync), each in a savepoint of its own.

    A message whose processing raises is rolled back to its savepoint and quarantined
    after the commit; the others keep their work. When the transaction itself fails
    (the database), each message is processed again on its own.
    """
    done, failed = [], []
    try:
        with transaction(engine) as session:
            for inbound_id in ids:
                try:
                    with session.begin_nested():
                        result = _process_claimed(session, deps, inbound_id, now, prepared[inbound_id])
                except Exception as exc:  # noqa: BLE001 - this message only; quarantined below
                    failed.append((inbound_id, exc))
                    continue
                if result is not None:
                    done.append((inbound_id, *result))
    except Exception:  # noqa: BLE001 - the commit or the database: one transaction per message instead
        log.warning("a batch of %d messages failed to commit; processing them one by one", len(ids), exc_info=True)
        return sum(process_inbound(engine, deps, inbound_id, now, prepared[inbound_id]) for inbound_id in ids)
    for inbound_id, *result in done:
        _log_outcome(inbound_id, *result)
    for inbound_id, exc in failed:
        log.error("inbound %s: processing failed, quarantined", inbound_id, exc_info=exc)
        _quarantine(engine, inbound_id, exc, now)
    return len(done) + len(failed)


def _process_claimed(session, deps: Deps, inbound_id: int, now: datetime,
                     prepared: Prepared | None) -> tuple[str, Outcome] | None:
    """Claim and process one message in ``session``: its Message-ID and outcome, or None when not pending."""
    inbound = queries.claim_inbound(session, inbound_id)
    if inbound is None:
        return None
    outcome = process_one(session, inbound, deps, now, prepared)
    _finish(inbound, outcome, now)
    session.add(inbound)
    return _mid(inbound), outcome


def _log_outcome(inbound_id: int, message_id: str, outcome: Outcome) -> None:
    log.info("inbound %s %s: %s", inbound_id, message_id, f"{outcome.outcome}: {outcome.reason}")


def _finish(inbound: Inbound, outcome: Outcome, now: datetime) -> None:
    inbound.outcome, inbound.reason, inbound.ticket_number = outcome.outcome, outcome.reason, outcome.ticket
    inbound.reason_code = outcome.code
    inbound.processed_at, inbound.error = now, None
    inbound.attempts += 1


def _quarantine(engine: Engine, inbound_id: int, exc: Exception, now: datetime) -> None:
    with transaction(engine) as session:
        inbound = session.get(Inbound, inbound_id)
        if inbound is None or inbound.outcome != "pending":
            return
        inbound.outcome, inbound.reason_code = "quarantined", "processing-failed"
        inbound.reason = f"quarantined: processing failed ({type(exc).__name__}: {_first_line(exc)})"
        inbound.error = "".join(traceback.format_exception(exc))[-4000:]
        inbound.processed_at = now
        inbound.attempts += 1
        session.add(inbound)


def requeue(engine: Engine, inbound_id: int) -> Inbound:
    """Put a quarantined (or ignored/refused) message back in the queue."""
    from gateway.errors import AdminError
    with transaction(engine) as session:
        inbound = session.get(Inbound, inbound_id)
        if inbound is None:
            raise AdminError(f"no inbound message with id {inbound_id}")
        if inbound.raw is None:
            raise AdminError(f"inbound {inbound_id} has no stored content to process")
        if inbound.outcome in ("pending", "duplicate") or inbound.ticket_number is not None:
            raise AdminError(f"inbound {inbound_id} is {inbound.outcome}; only messages without a ticket "
                             "can be processed again")
        inbound.outcome, inbound.reason, inbound.error = "pending", "requeued by an admin", None
        session.add(inbound)
        return inbound


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _mid(inbound: Inbound) -> str:
    return inbound.message_id or "(no Message-ID)"
