"""The intake spool and its filing into the database, on real SQLite files.

``serve`` on SQLite answers 250 once a message is in the spool; these tests hold
the rules of the move into ``inbound``: every entry becomes exactly one row,
also when filing is repeated after a crash; copies become recorded duplicates;
held messages stay quarantined; a database that is busy keeps everything spooled.
"""
import json
import logging
import sqlite3
import threading
import time

import pytest
from sqlmodel import select

from gateway.config import settings_from_mapping
from gateway.filing import SpoolFiler, file_spooled
from gateway.intake import receive
from gateway.service import build_runtime, open_spool
from storage import admin
from storage.db import reading, transaction
from storage.models import Inbound
from storage.spool import spool_path
from tests.conftest import mail

SUPPORT = "support@desk.example.com"


def desk_settings(folder, **sections):
    return settings_from_mapping({"database": {"url": f"sqlite:///{folder / 'pd.db'}", "busy_timeout_seconds": 0.5},
                                  "outbound": {"maildir": str(folder / "md")}, **sections}, base_dir=folder)


@pytest.fixture
def desk(tmp_path):
    settings = desk_settings(tmp_path)
    runtime = build_runtime(settings)
    with transaction(runtime.engine) as session:
        admin.add_organization(session, settings, runtime.clock.now(), "ACME", "gold", "alice@acme.example")
    spool = open_spool(settings)
    yield runtime, spool
    spool.close()


def deliver(runtime, spool, raw: bytes):
    return receive(runtime.engine, runtime.settings, raw, "alice@acme.example", [SUPPORT], runtime.clock.now(),
                   spool=spool)


def rows(runtime) -> list[Inbound]:
    with reading(runtime.engine) as session:
        return list(session.exec(select(Inbound).order_by(Inbound.id)))


def raw_mail(subject: str) -> bytes:
    return mail("alice@acme.example", subject, "The export fails.").as_bytes()


def test_spool_lives_beside_a_sqlite_file_and_not_for_postgres_or_memory():
    assert spool_path("sqlite:////srv/desk/postdesk.db").as_posix() == "/srv/desk/postdesk.spool.db"
    assert spool_path("sqlite:///data/desk").as_posix() == "data/desk.spool.db"
    assert spool_path("sqlite://") is None and spool_path("sqlite:///:memory:") is None
    assert spool_path("postgresql+psycopg://desk@db/postdesk") is None


def test_accepted_message_waits_in_the_spool_until_filed_then_is_pending_once(desk):
    runtime, spool = desk
    raw = raw_mail("Export fails")
    result = deliver(runtime, spool, raw)
    assert (result.status, result.inbound_id) == ("accepted", None)
    assert rows(runtime) == [] and spool.count() == 1
    assert file_spooled(runtime.engine, spool, runtime.clock.now()) == 1
    [row] = rows(runtime)
    assert (row.outcome, row.subject, row.channel, row.raw) == ("pending", "Export fails", "smtp", raw)
    assert row.received_at is not None and row.spool_key and spool.count() == 0


def test_filing_again_after_a_crash_before_forgetting_makes_no_second_row(desk):
    runtime, spool = desk
    deliver(runtime, spool, raw_mail("Filed once"))
    with sqlite3.connect(spool.path) as connection:
        entry = connection.execute("SELECT id, key, fields, raw FROM spool").fetchone()
    file_spooled(runtime.engine, spool, runtime.clock.now())
    with sqlite3.connect(spool.path) as connection:   # as if the process died before forgetting the entry
        connection.execute("INSERT INTO spool (id, key, fields, raw) VALUES (?, ?, ?, ?)", entry)
    assert spool.count() == 1
    assert file_spooled(runtime.engine, spool, runtime.clock.now()) == 1
    assert [(r.subject, r.outcome) for r in rows(runtime)] == [("Filed once", "pending")]
    assert spool.count() == 0


def test_the_same_message_twice_in_one_batch_is_one_message_and_a_recorded_duplicate(desk):
    runtime, spool = desk
    raw = raw_mail("Sent twice by an impatient client")
    deliver(runtime, spool, raw)
    deliver(runtime, spool, raw)
    deliver(runtime, spool, raw_mail("Another one"))
    assert file_spooled(runtime.engine, spool, runtime.clock.now()) == 3
    first, other, copy = rows(runtime)   # new messages are filed first, in their order; copies after them
    assert [(r.subject, r.outcome) for r in (first, other)] == [
        ("Sent twice by an impatient client", "pending"), ("Another one", "pending")]
    assert copy.outcome == "duplicate" and f"duplicate of inbound #{first.id}" in copy.reason
    assert copy.raw is None and copy.dedupe_key is None


def test_a_copy_of_a_message_filed_earlier_is_answered_as_duplicate_and_recorded(desk):
    runtime, spool = desk
    raw = raw_mail("Again later")
    deliver(runtime, spool, raw)
    file_spooled(runtime.engine, spool, runtime.clock.now())
    assert deliver(runtime, spool, raw).status == "duplicate"
    file_spooled(runtime.engine, spool, runtime.clock.now())
    assert [r.outcome for r in rows(runtime)] == ["pending", "duplicate"]


def test_a_held_message_is_filed_quarantined_with_its_reason(desk, tmp_path):
    runtime, spool = desk
    holding = desk_settings(tmp_path, limits={"action": "quarantine", "max_header_bytes": 100})
    raw = raw_mail("Headers over the limit")
    result = receive(runtime.engine, holding, raw, "alice@acme.example", [SUPPORT], runtime.clock.now(),
                     spool=spool)
    assert result.status == "accepted" and result.reason != "stored"
    file_spooled(runtime.engine, spool, runtime.clock.now())
    [row] = rows(runtime)
    assert (row.outcome, row.reason, row.raw) == ("quarantined", result.reason, raw)
    assert row.processed_at is not None


def test_refusals_are_recorded_at_once_not_spooled(desk):
    runtime, spool = desk
    raw = mail("mallory@evil.example", "Let me in", "Hi").as_bytes()
    result = receive(runtime.engine, runtime.settings, raw, "mallory@evil.example", [SUPPORT],
                     runtime.clock.now(), spool=spool)
    assert result.status == "refused" and result.inbound_id is not None
    assert spool.count() == 0 and [r.outcome for r in rows(runtime)] == ["refused"]


def test_filer_keeps_the_spool_while_the_database_is_locked_and_files_it_after(desk, caplog):
    runtime, spool = desk
    deliver(runtime, spool, raw_mail("While the database is busy"))
    blocker = sqlite3.connect(runtime.settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")   # another process holds SQLite's write lock
    filed = threading.Event()
    filer = SpoolFiler(runtime.engine, spool, filed.set, runtime.clock)
    filer.start()
    with caplog.at_level(logging.ERROR, logger="gateway.filing"):
        _wait(lambda: any("filing the spool failed" in r.getMessage() for r in caplog.records), 10)
    assert spool.count() == 1 and rows(runtime) == []
    blocker.execute("ROLLBACK")
    blocker.close()
    assert filed.wait(15)
    filer.stop()
    assert [r.subject for r in rows(runtime)] == ["While the database is busy"] and spool.count() == 0


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_entries_of_another_version_with_a_column_more_or_less_are_filed_together(desk):
    # A spool written before an upgrade (or after a downgrade) may hold entries with other fields.
    runtime, spool = desk
    for subject in ("Written by an older version", "Written by a newer version", "Written by this version"):
        deliver(runtime, spool, raw_mail(subject))
    with sqlite3.connect(spool.path) as connection:
        spooled = connection.execute("SELECT id, fields FROM spool ORDER BY id").fetchall()
        older, newer = json.loads(spooled[0][1]), json.loads(spooled[1][1])
        del older["auth"], older["held"]
        newer["column_of_a_later_version"] = "x"
        for (id_, _), fields in zip(spooled, (older, newer)):
            connection.execute("UPDATE spool SET fields = ? WHERE id = ?", (json.dumps(fields), id_))
    assert file_spooled(runtime.engine, spool, runtime.clock.now()) == 3
    filed = {r.subject: r for r in rows(runtime)}
    assert sorted(filed) == ["Written by a newer version", "Written by an older version", "Written by this version"]
    assert {r.outcome for r in filed.values()} == {"pending"} and spool.count() == 0
    assert filed["Written by an older version"].auth == "" and filed["Written by this version"].auth != ""


def test_an_entry_that_cannot_be_filed_is_set_aside_quarantined_and_the_rest_is_filed(desk):
    # One unreadable entry must not hold up the mail behind it, nor be lost.
    runtime, spool = desk
    raws = [raw_mail(subject) for subject in ("Before", "Unreadable", "After")]
    for raw in raws:
        deliver(runtime, spool, raw)
    with sqlite3.connect(spool.path) as connection:
        connection.execute("UPDATE spool SET fields = 'not json' WHERE id = (SELECT min(id) + 1 FROM spool)")
    assert file_spooled(runtime.engine, spool, runtime.clock.now()) == 3
    by_raw = {r.raw: r for r in rows(runtime)}
    assert [by_raw[raw].outcome for raw in raws] == ["pending", "quarantined", "pending"]
    aside = by_raw[raws[1]]
    assert aside.reason_code == "filing-failed" and "could not be filed" in aside.reason and aside.error
    assert spool.count() == 0


def _counting_spool(tmp_path, fail_first: bool = False):
    """A real spool whose batch writes are slow (the others queue meanwhile) and counted."""
    from storage.spool import Spool
    spool, sizes = Spool(tmp_path / "pd.spool.db"), []
    write = spool.append_many

    def slow_write(entries):
        sizes.append(len(entries))
        time.sleep(0.2)
        if fail_first and len(sizes) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        write(entries)

    spool.append_many = slow_write
    return spool, sizes


def _append_together(spool, count: int) -> list:
    import asyncio

    from gateway.smtp_server import SpoolBatches

    async def deliveries():
        batches = SpoolBatches(spool)
        return await asyncio.gather(*(batches.append({"n": n}, b"message %d" % n) for n in range(count)),
                                    return_exceptions=True)
    return asyncio.run(deliveries())


def test_spool_writes_of_the_moment_share_one_commit(tmp_path):
    """SMTP deliveries arriving while a spool commit runs are written together by the next one."""
    spool, sizes = _counting_spool(tmp_path)
    assert _append_together(spool, 8) == [None] * 8
    assert sizes == [1, 7] and spool.count() == 8


def test_a_failed_spool_commit_fails_the_deliveries_in_it_and_no_others(tmp_path):
    spool, sizes = _counting_spool(tmp_path, fail_first=True)
    results = _append_together(spool, 8)
    assert isinstance(results[0], sqlite3.OperationalError) and results[1:] == [None] * 7
    assert sizes == [1, 7] and [e.fields["n"] for e in spool.oldest(10)] == list(range(1, 8))


def test_filing_holds_about_one_largest_message_of_bytes_at_a_time(desk):
    """A burst of large messages is filed a few at a time, not all at once into memory."""
    runtime, spool = desk
    raws = [mail("alice@acme.example", f"Log {n}", "x" * 4000).as_bytes() for n in range(5)]
    for raw in raws:
        deliver(runtime, spool, raw)
    bound = int(len(raws[0]) * 2.5)
    taken = []
    while spool.count():
        taken.append(file_spooled(runtime.engine, spool, runtime.clock.now(), most_bytes=bound))
    assert taken == [2, 2, 1]
    assert [row.subject for row in rows(runtime)] == [f"Log {n}" for n in range(5)]
    big = mail("alice@acme.example", "Huge", "y" * 20000).as_bytes()   # larger than the bound: filed alone
    deliver(runtime, spool, big)
    deliver(runtime, spool, raw_mail("Small"))
    assert file_spooled(runtime.engine, spool, runtime.clock.now(), most_bytes=bound) == 1
    assert file_spooled(runtime.engine, spool, runtime.clock.now(), most_bytes=bound) == 1
