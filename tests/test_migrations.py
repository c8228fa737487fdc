"""Schema migrations: a database made by the first version upgrades and keeps its data; models and
migrations never drift apart."""
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from storage import migrate
from storage.db import create_schema, make_engine
from tests.pg import pg_cluster  # noqa: F401  (fixture)

T0 = datetime(2025, 1, 6, 10, 0)


def fill_first_version(engine) -> None:
    """Rows as the first version wrote them (its columns only)."""
    with engine.begin() as c:
        c.execute(text("INSERT INTO organization (id, name, name_key, package, locale, created_at) "
                       "VALUES (1, 'ACME', 'acme', 'bronze', 'de', :t)"), {"t": T0})
        c.execute(text("INSERT INTO account (id, email, name, locale, organization_id, follows, active, created_at) "
                       "VALUES (1, 'alice@acme.example', 'Alice', 'de', 1, true, true, :t)"), {"t": T0})
        c.execute(text("INSERT INTO ticket (id, organization_id, requester_id, subject, status, type, priority, "
                       "created_at, updated_at, status_changed_at, solved_at) VALUES "
                       "(1, 1, 1, 'Export kaputt', 'solved', 'problem', 'high', :t, :t, :t, :t)"), {"t": T0})
        c.execute(text("INSERT INTO inbound (id, received_at, channel, envelope_from, envelope_to, message_id, "
                       "from_addr, subject, size, content_sha256, dedupe_key, raw, outcome, reason, ticket_number, "
                       "attempts) VALUES (1, :t, 'smtp', 'alice@acme.example', '[]', '<m1@acme.example>', "
                       "'alice@acme.example', 'Export kaputt', 3, 'x', 'k1', :raw, 'ticket_created', 'new ticket', "
                       "1, 1)"), {"t": T0, "raw": b"raw"})
        c.execute(text("INSERT INTO message (id, ticket_id, direction, author_email, author_kind, message_id, "
                       "\"references\", subject, text, full_text, strip_rule, internal, inbound_id, created_at) "
                       "VALUES (1, 1, 'inbound', 'alice@acme.example', 'customer', '<m1@acme.example>', '', "
                       "'Export kaputt', 'Geht nicht', 'Geht nicht', 'none', false, 1, :t)"), {"t": T0})
        c.execute(text("INSERT INTO outbox (id, created_at, ticket_id, template, locale, recipients, envelope_from, "
                       "subject, message_id, raw, status, attempts, next_attempt_at) VALUES (1, :t, 1, "
                       "'ticket_created', 'de', '[\"alice@acme.example\"]', 'support@desk.example.com', '[#1] x', "
                       "'<pd.1@desk.example.com>', :raw, 'sent', 1, :t)"), {"t": T0, "raw": b"mail"})


def check_upgraded(engine) -> None:
    with engine.connect() as c:
        assert c.execute(text("SELECT email, bouncing, bounce_reason FROM account")).one() == \
            ("alice@acme.example", False, "")
        ticket = c.execute(text("SELECT subject, status, priority, first_response_due_at FROM ticket")).one()
        assert ticket == ("Export kaputt", "solved", "high", None)
        assert c.execute(text("SELECT outcome, reason_code, raw FROM inbound")).one() == \
            ("ticket_created", "", b"raw")
        assert c.execute(text("SELECT auto_submitted, status FROM outbox")).one() == ("auto-generated", "sent")
        assert c.execute(text("SELECT text FROM message")).scalar_one() == "Geht nicht"


def test_sqlite_database_of_the_first_version_upgrades_and_keeps_its_data(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0001")
    fill_first_version(engine)
    create_schema(engine)          # what `postdesk init` does
    assert migrate.current(engine) == migrate.head()
    check_upgraded(engine)
    create_schema(engine)          # idempotent
    assert migrate.current(engine) == migrate.head()


def test_postgresql_database_of_the_first_version_upgrades_and_keeps_its_data(pg_cluster):
    engine = make_engine(pg_cluster.new_database())
    migrate.upgrade(engine, "0001")
    fill_first_version(engine)
    create_schema(engine)
    check_upgraded(engine)
    engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_match_the_models(tmp_path, dialect, request):
    if dialect == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    else:
        engine = make_engine(request.getfixturevalue("pg_cluster").new_database())
    create_schema(engine)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == [], "models changed without a migration: run storage.migrate.revision()"
    engine.dispose()
