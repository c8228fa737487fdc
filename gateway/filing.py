"""Filing: spooled deliveries into ``inbound``, in batches, beside the SMTP listener.

``serve`` on SQLite answers 250 once a message is in the spool (``storage/spool.py``).
A thread of the listener's process (``SpoolFiler``) moves what the spool holds into
``inbound`` — one transaction per batch, one insert statement for the messages — and
then wakes the worker. A sender therefore never waits for the worker's transaction,
and the worker never pays for the filing.

Filing keeps the direct intake's rules: a message stored before (same dedupe key, in
the database or earlier in the batch) becomes a recorded ``duplicate``. (Refusals
are recorded by the intake itself, when it answers 550.) Each entry's key goes into
its row (unique), so an entry filed by a process that died before forgetting it, or
by two processes at once, makes one row.
"""
from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import select as orm_select

from gateway.clock import Clock
from gateway.intake import store_message
from storage.db import transaction
from storage.models import Inbound
from storage.spool import Entry, Spool

log = logging.getLogger(__name__)

_INBOUND = Inbound.__table__
_INSERT = insert(_INBOUND)
_COLUMNS = frozenset(_INBOUND.c.keys())


def file_spooled(engine: Engine, spool: Spool, now: datetime, limit: int = 500, most_bytes: int | None = None) -> int:
    """File the oldest spooled deliveries (up to ``limit``, and beyond the first up to ``most_bytes`` of
    messages: they are held in memory together) into ``inbound``; returns how many were taken.

    When the batch fails on something other than the database itself (a row another process
    filed just now, or an entry that cannot be filed), each entry gets a transaction of its
    own; an entry that fails alone is filed ``quarantined`` with the error (``now``: when),
    so one bad entry never holds up the mail behind it. A database that is down raises.
    """
    entries = spool.oldest(limit, most_bytes)
    if not entries:
        return 0
    try:
        with transaction(engine) as session:
            _file(session, entries)
    except OperationalError:
        raise
    except Exception:  # noqa: BLE001 - one by one: each sees the other's rows, a bad entry is set aside
        for entry in entries:
            _file_alone(engine, entry, now)
    spool.forget([entry.id for entry in entries])
    return len(entries)


def _file_alone(engine: Engine, entry: Entry, now: datetime) -> None:
    try:
        with transaction(engine) as session:
            _file(session, [entry])
        return
    except OperationalError:
        raise
    except Exception as exc:  # noqa: BLE001 - kept for an admin instead of blocking the spool
        log.exception("spool entry %s cannot be filed; stored as quarantined", entry.key)
        error = exc
    with transaction(engine) as session:
        if session.exec(orm_select(Inbound.id).where(Inbound.spool_key == entry.key)).first() is None:
            session.add(Inbound(received_at=entry.fields.get("received_at") or now, raw=entry.raw,
                                spool_key=entry.key, outcome="quarantined", reason_code="filing-failed",
                                reason=f"quarantined: could not be filed ({type(error).__name__})",
                                error="".join(traceback.format_exception(error))[-4000:], processed_at=now))


def _file(session, entries: Sequence[Entry]) -> None:
    connection = session.connection()
    keys = [entry.key for entry in entries]
    filed = set(connection.execute(select(_INBOUND.c.spool_key).where(_INBOUND.c.spool_key.in_(keys))).scalars())
    entries = [entry for entry in entries if entry.key not in filed]
    stored = set(connection.execute(select(_INBOUND.c.dedupe_key).where(
        _INBOUND.c.dedupe_key.in_([entry.fields["dedupe_key"] for entry in entries]))).scalars())
    new, again = [], []
    for entry in entries:   # new messages in one statement; copies of stored ones after them, one by one
        key = entry.fields["dedupe_key"]
        (again if key in stored else new).append(entry)
        stored.add(key)
    for rows in _same_columns([_row(entry) for entry in new]):
        connection.execute(_INSERT, rows)
    for entry in again:
        fields, held = _fields(entry)
        store_message(session, fields, held, fields["received_at"])


def _same_columns(rows: list[dict]) -> list[list[dict]]:
    """Rows grouped by their columns: one insert statement needs the same columns in every row, and a spool
    written by another version of Postdesk may hold entries with a column more or less."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.values())


def _fields(entry: Entry) -> tuple[dict, str | None]:
    """The entry's inbound columns (without those the table lacks: a newer version's spool) and its hold reason."""
    fields = {name: value for name, value in entry.fields.items() if name in _COLUMNS}
    return {**fields, "spool_key": entry.key, "raw": entry.raw}, entry.fields.get("held")


def _row(entry: Entry) -> dict:
    """The inbound row of a new message."""
    fields, held = _fields(entry)
    if held is None:
        return {**fields, "outcome": "pending", "reason": "", "processed_at": None}
    # kept for an admin: `postdesk inbound show|release ID`
    return {**fields, "outcome": "quarantined", "reason": held, "processed_at": fields["received_at"]}


class SpoolFiler:
    """The thread that files the spool, woken by every stored message; ``on_filed`` wakes the worker."""

    def __init__(self, engine: Engine, spool: Spool, on_filed: Callable[[], None], clock: Clock,
                 most_bytes: int | None = None) -> None:
        self.engine, self.spool, self.on_filed, self.clock = engine, spool, on_filed, clock
        self.most_bytes = most_bytes   # of messages per batch (``[smtp] max_message_bytes`` in serve)
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="postdesk-filer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """File what is left and end the thread."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            self.wake.clear()
            try:
                self._file_all()
            except Exception:  # noqa: BLE001 - the database may be down: the spool keeps the messages
                log.exception("filing the spool failed; retrying in 5 s")
                if self.stopping.wait(5):
                    return
                continue
            if self.stopping.is_set():
                return
            self.wake.wait(1.0)

    def _file_all(self) -> None:
        while file_spooled(self.engine, self.spool, self.clock.now(), most_bytes=self.most_bytes):
            self.on_filed()
