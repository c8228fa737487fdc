"""Schema migrations (alembic), run by ``postdesk init`` and at start-up.

The migration scripts live in ``storage/migrations/versions``; ``upgrade``
brings any database made by an earlier version to the current schema and keeps
its data. ``revision`` writes a new script from the difference between the
models and a database at head (used by developers, not at run time).
"""
from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


_LOCK_KEY = 0x706F7374   # PostgreSQL advisory lock: one process migrates at a time


def upgrade(engine: Engine, target: str = "head") -> None:
    """Create or upgrade the schema to ``target``; safe to run again, and from several processes at once."""
    if target == "head" and current(engine) == head():
        return
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite alters a table by copying it; foreign keys must be off (outside any transaction) meanwhile.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():   # SQLite: BEGIN IMMEDIATE already serialises the processes
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
                _upgrade(connection, target)
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def _upgrade(connection, target: str) -> None:
    config = _config(connection)
    if _unversioned_schema(connection):
        # Made by an early build that created the tables directly: it matches the first revision.
        command.stamp(config, "0001")
    command.upgrade(config, target)
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left rows with broken references: {broken[:5]}")


def _unversioned_schema(connection) -> bool:
    names = set(inspect(connection).get_table_names())
    return "inbound" in names and "alembic_version" not in names


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a migration script against a database that is at head."""
    with engine.begin() as connection:
        command.revision(_config(connection), message=message, autogenerate=True)
