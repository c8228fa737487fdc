"""Engine, schema creation and the transaction helper.

SQLite is the default; PostgreSQL works through the URL alone. SQLite runs in
WAL mode with a busy timeout so the SMTP listener, the worker and the CLI can
share one file. SQLite has one writer: threads of one process take turns on a
lock of the engine before they ask SQLite, and a write transaction asks for the
file's lock every few hundred microseconds up to the busy timeout, instead of
SQLite's own waiting in sleeps of up to 100 ms (see ``_WriterTurn``).
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from storage import models  # noqa: F401  (registers the tables)


def make_engine(url: str, busy_timeout_seconds: float = 10.0) -> Engine:
    """Create the engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False},
        )
        turn = _WRITERS[engine] = _WriterTurn(busy_timeout_seconds)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", turn.begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Let SQLAlchemy, not pysqlite, open transactions, so BEGIN IMMEDIATE below applies.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")   # 250 means the message survives a power cut, too
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class _Counter:
    """An in-process stand-in for ``multiprocessing.Value("i")``."""

    def __init__(self) -> None:
        self.value, self._lock = 0, threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


class _WriterTurn:
    """Who writes to a SQLite file next.

    SQLite has one writer, and its own waiting for the lock sleeps in steps of up to
    100 ms, so a process that writes back to back (the worker) can starve one that
    writes now and then (the SMTP intake, whose client waits for the answer). Here:
    threads of one process take turns on a lock first; the lock of the file is asked
    for every few hundred microseconds up to the busy timeout; and the front doors
    mark that they wait (``urgent``, shared with the worker process of ``serve``),
    so the worker lets them go first between two messages.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.lock, self.timeout = threading.RLock(), timeout_seconds
        self.urgent = _Counter()

    def __enter__(self) -> None:
        if not self.lock.acquire(timeout=self.timeout):
            raise TimeoutError(f"the database stayed busy for {self.timeout:g} s (another write in this process)")

    def __exit__(self, *exc) -> None:
        self.lock.release()

    def begin(self, connection) -> None:
        # Take the write lock at the start of every transaction: read-then-write
        # transactions from two processes then wait for each other instead of failing
        # with "database is locked" half-way through. Read-only work (see ``reading``)
        # takes no lock, so it never waits for the worker's write transaction (WAL).
        if connection.get_execution_options().get("postdesk_read_only", False):
            connection.exec_driver_sql("BEGIN DEFERRED")
            return
        driver = connection.connection.driver_connection
        driver.execute("PRAGMA busy_timeout = 0")
        try:
            deadline, pause = time.monotonic() + self.timeout, 0.0002
            while True:
                try:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except OperationalError as exc:
                    if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 1.5, 0.002)
        finally:
            driver.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def mark_urgent(self, step: int) -> None:
        with self.urgent.get_lock():
            self.urgent.value += step


_WRITERS: weakref.WeakKeyDictionary[Engine, _WriterTurn] = weakref.WeakKeyDictionary()


def share_urgency(engine: Engine, counter) -> None:
    """Use ``counter`` (a ``multiprocessing.Value("i")``) to tell another process that a front door waits."""
    turn = _WRITERS.get(engine)
    if turn is not None:
        turn.urgent = counter


def let_front_doors_go(engine: Engine, most_seconds: float = 0.05) -> None:
    """Between two messages, the worker waits (a little) while a front door waits for SQLite's lock."""
    turn = _WRITERS.get(engine)
    if turn is None or not _waiting_front_doors(turn.urgent):
        return
    deadline = time.monotonic() + most_seconds
    while _waiting_front_doors(turn.urgent) and time.monotonic() < deadline:
        time.sleep(0.0002)


def _waiting_front_doors(counter) -> int:
    """The urgency counter, read without its lock (reading an int needs none).

    ``serve`` killed while one of its threads held the lock of the shared counter leaves
    that lock taken for good; a worker reading through it would block there for ever,
    never noticing that ``serve`` is gone.
    """
    shared = getattr(counter, "get_obj", None)   # multiprocessing.Value: the plain ctypes int behind the lock
    return (shared() if shared is not None else counter).value


def create_schema(engine: Engine) -> None:
    """Create or upgrade the schema through the migrations; safe to run again."""
    from storage.migrate import upgrade
    upgrade(engine)


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A session for reads only: on SQLite it does not take (or wait for) the write lock."""
    with engine.connect().execution_options(postdesk_read_only=True) as connection:
        with Session(bind=connection) as session:
            yield session


@contextmanager
def transaction(engine: Engine, urgent: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    ``urgent``: a sender waits for the answer (intake); on SQLite the transaction then
    takes the write lock at once and the worker lets it go first (see ``_WriterTurn``).
    """
    turn = _WRITERS.get(engine)
    if turn is not None and urgent:
        turn.mark_urgent(+1)
    try:
        with turn or nullcontext(), Session(engine, expire_on_commit=False) as session:
            try:
                if turn is not None and urgent:
                    session.connection()   # BEGIN IMMEDIATE now
                    turn.mark_urgent(-1)
                    urgent = False
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    finally:
        if turn is not None and urgent:
            turn.mark_urgent(-1)
