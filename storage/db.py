"""Engine, schema creation and the transaction helper.

SQLite is the default; PostgreSQL works through the URL alone. SQLite runs in
WAL mode with a busy timeout so the SMTP listener, the worker and the CLI can
share one file.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from storage import models  # noqa: F401  (registers the tables)


def make_engine(url: str, busy_timeout_seconds: float = 10.0) -> Engine:
    """Create the engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
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


def _sqlite_begin_immediate(connection) -> None:
    # Take the write lock at the start of every transaction: read-then-write
    # transactions from two processes then wait for each other instead of failing
    # with "database is locked" half-way through. Read-only work (see ``reading``)
    # takes no lock, so it never waits for the worker's write transaction (WAL).
    read_only = connection.get_execution_options().get("postdesk_read_only", False)
    connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


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
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
