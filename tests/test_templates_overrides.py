"""The database-backed override source: what a running gateway renders from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from storage.db import create_schema, make_engine, transaction
from storage.templates import DatabaseOverrides, add_version

NOW = datetime(2026, 11, 27, 13, 5, tzinfo=timezone.utc)
KEY = ("agent_reply", "de", "subject.txt")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'postdesk.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def overrides(url: str, engine: Engine) -> Iterator[DatabaseOverrides]:
    source = DatabaseOverrides(url)
    yield source
    source.dispose()


def store(engine: Engine, parts: dict[str, str | None], action: str = "set") -> None:
    with transaction(engine) as session:
        add_version(session, "agent_reply", "de", parts, action=action, author="admin@desk.example.com",
                    note="", now=NOW)


def test_new_version_is_used_from_the_next_refresh_and_reset_restores_the_default(
        engine: Engine, overrides: DatabaseOverrides) -> None:
    # Each refresh (once per message) sees the version in force, without a restart.
    overrides.refresh()
    assert overrides.get(*KEY) is None
    store(engine, {"subject.txt": "[#{{ ticket.number }}] Neu"})
    overrides.refresh()
    assert overrides.get(*KEY) == "[#{{ ticket.number }}] Neu"
    assert overrides.get("agent_reply", "de", "body.txt") is None   # a part left out stays packaged
    assert overrides.get("agent_reply", "en", "subject.txt") is None
    store(engine, {"subject.txt": "[#{{ ticket.number }}] Zweite Fassung"})
    overrides.refresh()
    assert overrides.get(*KEY) == "[#{{ ticket.number }}] Zweite Fassung"
    store(engine, {}, action="reset")
    overrides.refresh()
    assert overrides.get(*KEY) is None


def test_overrides_read_before_stay_in_use_when_the_database_cannot_be_read(
        engine: Engine, overrides: DatabaseOverrides) -> None:
    # A failed look is logged, not raised: mail goes on with what was read last.
    store(engine, {"subject.txt": "[#{{ ticket.number }}] Neu"})
    overrides.refresh()
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE template_version"))
    overrides.refresh()
    assert overrides.get(*KEY) == "[#{{ ticket.number }}] Neu"
