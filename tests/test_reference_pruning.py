"""Out-of-order notes are deleted once they have outlived ``[desk] late_parent_days``.

Every processed reply notes the Message-IDs it names that nobody has, so that a late
parent can join its ticket; most never come. The timers delete notes older than the
limit, in bounded batches, on SQLite and PostgreSQL; a parent that comes within the
limit still joins its reply's ticket, and ``tick --dry-run`` deletes nothing.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gateway import arrival
from gateway.config import settings_from_mapping
from gateway.errors import ConfigError
from storage import references
from storage.db import create_schema, make_engine, reading, transaction
from storage.models import Inbound
from tests.conftest import _running_desk
from tests.pg import pg_cluster  # noqa: F401  (fixture)
from tests.test_out_of_order import parent, reply_from, wait_until_settled

NOW = datetime(2026, 3, 20, 9, 0, tzinfo=timezone.utc)
SETTINGS = settings_from_mapping({})
LIMIT = timedelta(days=SETTINGS.desk.late_parent_days)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'notes.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").new_database()
    engine = make_engine(url)
    create_schema(engine)
    yield engine
    engine.dispose()


def note(engine, written_at: datetime, *message_ids: str) -> None:
    """A processed message, written at ``written_at``, that named ``message_ids`` before they came."""
    with transaction(engine) as session:
        inbound = Inbound(received_at=written_at)
        session.add(inbound)
        session.flush()
        references.remember(session, inbound.id, message_ids, None, written_at)


def noted(engine) -> list[str]:
    with reading(engine) as session:
        return sorted(session.connection().execute(text("SELECT referenced FROM message_reference")).scalars())


def test_default_outlasts_the_retry_time_of_mail_servers():
    """A parent later than a mail server's 5 days of retrying does not come by mail at all."""
    assert LIMIT > timedelta(days=5)


def test_a_limit_below_one_day_is_a_config_error():
    with pytest.raises(ConfigError, match=r"\[desk\] late_parent_days"):
        settings_from_mapping({"desk": {"late_parent_days": 0}})


def test_notes_older_than_the_limit_are_deleted_and_younger_ones_stay(engine, caplog):
    note(engine, NOW - LIMIT - timedelta(seconds=1), "<old@x>", "<old-too@x>")
    note(engine, NOW - LIMIT, "<at-the-limit@x>")
    note(engine, NOW - timedelta(hours=1), "<young@x>")
    with caplog.at_level(logging.INFO, logger="gateway.arrival"):
        assert arrival.prune_notes(engine, SETTINGS, NOW) == 2
    assert noted(engine) == ["<at-the-limit@x>", "<young@x>"]
    assert "deleted 2 notes" in caplog.text
    assert arrival.prune_notes(engine, SETTINGS, NOW) == 0     # nothing left to do: nothing happens


def test_the_limit_is_read_from_the_settings(engine):
    note(engine, NOW - timedelta(days=2), "<two-days@x>")
    short = settings_from_mapping({"desk": {"late_parent_days": 1}})
    assert arrival.prune_notes(engine, SETTINGS, NOW) == 0
    assert arrival.prune_notes(engine, short, NOW) == 1
    assert noted(engine) == []


def test_dry_run_deletes_nothing_and_reports_how_many_it_would(engine, caplog):
    note(engine, NOW - LIMIT - timedelta(days=1), "<old@x>", "<old-too@x>", "<old-three@x>")
    with caplog.at_level(logging.INFO, logger="gateway.arrival"):
        assert arrival.prune_notes(engine, SETTINGS, NOW, dry_run=True) == 3
    assert noted(engine) == ["<old-three@x>", "<old-too@x>", "<old@x>"]
    assert "would delete 3 notes" in caplog.text


def test_a_backlog_larger_than_a_batch_goes_in_one_run_one_bounded_transaction_per_batch(engine, monkeypatch):
    backlog = 2 * arrival.PRUNE_BATCH + 1
    note(engine, NOW - LIMIT - timedelta(days=30), *(f"<old-{n}@x>" for n in range(backlog)))
    note(engine, NOW, "<young@x>")
    batches = []

    def counted(session, cutoff, limit):
        batches.append(real_prune(session, cutoff, limit))
        return batches[-1]

    real_prune = references.prune
    monkeypatch.setattr(references, "prune", counted)
    assert arrival.prune_notes(engine, SETTINGS, NOW) == backlog
    assert batches == [arrival.PRUNE_BATCH, arrival.PRUNE_BATCH, 1]
    assert noted(engine) == ["<young@x>"]


# ---- with the gateway: `postdesk tick` ------------------------------------------------------

@pytest.fixture
def acme(tmp_path, clock):
    """ACME with Alice and Carol; the serve loop's own timer pass is pushed far out, so only `tick` prunes."""
    runner = _running_desk(tmp_path, clock, "tick_interval_seconds = 86400.0\n")
    desk = next(runner)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    desk.cli("account", "add", "carol@acme.example", "--org", "ACME")
    yield desk
    next(runner, None)


@pytest.mark.parametrize("days_late, tick_options, joins", [
    (6, (), True),                  # within the limit: the note is kept
    (8, ("--dry-run",), True),      # past it, but a dry run deletes nothing
    (8, (), False),                 # past it: the note is gone, the parent opens its own ticket
], ids=["within-the-limit", "dry-run", "past-the-limit"])
def test_late_parent_joins_its_replys_ticket_only_within_the_limit(acme, clock, days_late, tick_options, joins):
    acme.send(reply_from("carol@acme.example"))
    clock.advance(seconds=6)
    wait_until_settled(acme)                                  # waited in vain: Carol's own ticket
    (opened,) = acme.json("ticket", "list")
    clock.advance(days=days_late)
    acme.json("tick", "--now", clock.now().isoformat(), *tick_options)
    acme.send(parent())
    alice = [r for r in acme.inbound() if r["from"] == "alice@acme.example"][0]
    if joins:
        assert (alice["outcome"], alice["ticket"]) == ("reply", opened["number"])
        assert [t["number"] for t in acme.json("ticket", "list")] == [opened["number"]]
    else:
        assert alice["outcome"] == "ticket_created" and alice["ticket"] != opened["number"]
