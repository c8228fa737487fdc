"""The intake spool: accepted messages on disk before they are filed into the database.

SQLite has one writer. Were the SMTP intake to insert into the database itself,
each sender waiting for its 250 would wait for the worker's transaction in
progress (ticket, notifications, outbox: several milliseconds). So ``serve``
appends each accepted message to a spool — a small SQLite file of its own beside
the database, written by this process only — and answers after that commit (and
fsync). A thread beside the listener files spooled messages into ``inbound`` in
batches and then forgets them (``gateway/filing.py``).

Plain ``sqlite3`` on one connection, guarded by a lock: the spool is the hot path
of every delivery, and deliveries arriving together share one transaction
(``storage.groupcommit``). Each entry has a random key, stored with its ``inbound``
row under a unique index: a process that dies between filing and forgetting files
nothing twice. PostgreSQL needs no spool (an insert there waits for no other
transaction).
"""
from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from storage.groupcommit import GroupCommit

_SCHEMA = """CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,      -- stored with the inbound row it becomes (inbound.spool_key)
    fields TEXT NOT NULL,          -- the inbound row's columns, JSON
    raw BLOB NOT NULL              -- the message
)"""
_DATETIMES = ("received_at", "processed_at")


@dataclass(frozen=True)
class Entry:
    id: int
    key: str
    fields: dict      # inbound columns, datetimes restored, and "held": the reason it is quarantined, or None
    raw: bytes


class Spool:
    def __init__(self, path: Path, busy_timeout_seconds: float = 10.0) -> None:
        self.path = path
        # autocommit mode (isolation_level None): transactions are the explicit BEGIN IMMEDIATE below
        self._connection = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None,
                                           check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")   # 250 means the message survives a power cut
        self._connection.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._committer = GroupCommit(None, begin=self._writing)

    def append(self, fields: dict, raw: bytes) -> None:
        """Store one message, committed (with the deliveries of the moment) when this returns."""
        row = _row(fields, raw)
        self._committer.run(lambda cursor: cursor.execute(_INSERT, row))

    def append_many(self, entries: list[tuple[dict, bytes]]) -> None:
        """Store several messages in one transaction, committed when this returns."""
        rows = [_row(fields, raw) for fields, raw in entries]
        self._committer.run(lambda cursor: cursor.executemany(_INSERT, rows))

    def oldest(self, limit: int, most_bytes: int | None = None) -> list[Entry]:
        """The oldest entries: at most ``limit``, and beyond the first at most ``most_bytes`` of messages together."""
        with self._lock:
            sizes = self._connection.execute("SELECT id, length(raw) FROM spool ORDER BY id LIMIT ?",
                                             (limit,)).fetchall()   # length() reads no message
            taken = _within(sizes, most_bytes)
            rows = self._connection.execute("SELECT id, key, fields, raw FROM spool WHERE id <= ? ORDER BY id LIMIT ?",
                                            (taken[-1][0], len(taken))).fetchall() if taken else []
        return [Entry(id_, key, _readable(fields), raw) for id_, key, fields, raw in rows]

    def forget(self, ids: list[int]) -> None:
        with self._writing() as cursor:
            cursor.executemany("DELETE FROM spool WHERE id = ?", [(id_,) for id_ in ids])

    def count(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT count(*) FROM spool").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise


def waiting(path: Path | None) -> int:
    """How many entries a spool file holds, read without creating it (0 when there is none)."""
    if path is None or not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        try:
            return connection.execute("SELECT count(*) FROM spool").fetchone()[0]
        except sqlite3.OperationalError:   # created, table not yet
            return 0


def spool_path(database_url: str) -> Path | None:
    """Where the spool of a SQLite database file lives (beside it); None for PostgreSQL and in-memory SQLite."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        return None
    database = database_url[len(prefix):].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    path = Path(database)
    return path.with_name(f"{path.stem}.spool{path.suffix or '.db'}")


def _within(sizes: list[tuple[int, int]], most_bytes: int | None) -> list[tuple[int, int]]:
    """The leading (id, size) pairs whose sizes stay within ``most_bytes`` (the first always)."""
    total = 0
    for count, (_, size) in enumerate(sizes):
        total += size or 0
        if count and most_bytes is not None and total > most_bytes:
            return sizes[:count]
    return sizes


_INSERT = "INSERT INTO spool (key, fields, raw) VALUES (?, ?, ?)"


def _row(fields: dict, raw: bytes) -> tuple[str, str, bytes]:
    return secrets.token_hex(16), json.dumps(fields, default=_iso), raw


def _iso(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _readable(text: str) -> dict:
    """An entry's fields; {} when they cannot be read (the filer then sets the message aside, quarantined)."""
    try:
        return _restore(json.loads(text))
    except (ValueError, TypeError, AttributeError):
        return {}


def _restore(fields: dict) -> dict:
    return {name: datetime.fromisoformat(value) if name in _DATETIMES and value else value
            for name, value in fields.items()}
