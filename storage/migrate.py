"""Schema migrations (alembic), run by ``postdesk init`` and at start-up.

The migration scripts live in ``storage/migrations/versions``; ``upgrade``
brings any database made by an earlier version to the current schema and keeps
its data. ``revision`` writes a new script from the difference between the
models and a database at head (used by developers, not at run time).
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, target: str = "head") -> None:
    """Create or upgrade the schema to ``target``; safe to run again."""
    with engine.begin() as connection:
        command.upgrade(_config(connection), target)


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a migration script against a database that is at head."""
    with engine.begin() as connection:
        command.revision(_config(connection), message=message, autogenerate=True)
