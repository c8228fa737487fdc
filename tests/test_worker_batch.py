"""Several messages in one worker transaction (SQLite with the intake spool): one commit, each in a savepoint."""
import pytest
from sqlalchemy import event
from sqlmodel import select

import gateway.worker as worker
from gateway.config import settings_from_mapping
from gateway.intake import receive
from gateway.service import BackgroundWork, build_runtime
from gateway.worker import process_pending
from storage import admin
from storage.db import reading, transaction
from storage.models import Inbound, Ticket
from tests.conftest import mail

SUPPORT = "support@desk.example.com"


@pytest.fixture
def runtime(tmp_path):
    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path / 'pd.db'}"},
                                      "outbound": {"maildir": str(tmp_path / "md")}}, base_dir=tmp_path)
    runtime = build_runtime(settings)
    with transaction(runtime.engine) as session:
        admin.add_organization(session, settings, runtime.clock.now(), "ACME", "gold", "alice@acme.example")
    return runtime


def deliver(runtime, subject: str) -> int:
    raw = mail("alice@acme.example", subject, "The export fails.").as_bytes()
    return receive(runtime.engine, runtime.settings, raw, "alice@acme.example", [SUPPORT],
                   runtime.clock.now()).inbound_id


def outcomes(runtime) -> dict[str, str]:
    with reading(runtime.engine) as session:
        return dict(session.exec(select(Inbound.subject, Inbound.outcome)).all())


def test_serve_batches_only_with_the_sqlite_spool(runtime, tmp_path):
    assert BackgroundWork(runtime).batch > 1
    without = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path / 'pd.db'}"},
                                     "smtp": {"spool": False}}, base_dir=tmp_path)
    assert BackgroundWork(build_runtime(without, create=False)).batch == 1


def test_a_batch_commits_once_and_a_failing_message_is_quarantined_alone(runtime, monkeypatch):
    for subject in ("First", "Breaks the pipeline", "Third"):
        deliver(runtime, subject)
    real = worker.process_one

    def process_one(session, inbound, deps, now, prepared=None):
        outcome = real(session, inbound, deps, now, prepared)   # its ticket and mail are written, then it fails
        if inbound.subject == "Breaks the pipeline":
            raise RuntimeError("a bug in the pipeline")
        return outcome

    monkeypatch.setattr(worker, "process_one", process_one)
    commits = []
    event.listen(runtime.engine, "commit", lambda _connection: commits.append(1))
    assert process_pending(runtime.engine, runtime.deps, runtime.clock, batch=10) == 3
    assert outcomes(runtime) == {"First": "ticket_created", "Breaks the pipeline": "quarantined",
                                 "Third": "ticket_created"}
    assert len(commits) == 3   # the pending ids, the batch, the quarantine
    with reading(runtime.engine) as session:   # nothing of the failed message's work survived its savepoint
        assert sorted(session.exec(select(Ticket.subject)).all()) == ["First", "Third"]
        error = session.exec(select(Inbound.error).where(Inbound.subject == "Breaks the pipeline")).one()
    assert "a bug in the pipeline" in error


def test_messages_of_a_batch_see_each_other(runtime):
    # A reply processed in the same transaction as its parent lands on the parent's ticket.
    parent = mail("alice@acme.example", "Export fails", "The export fails.", message_id="<parent@acme.example>")
    reply = mail("alice@acme.example", "Re: Export fails", "Also on Mondays.", in_reply_to="<parent@acme.example>")
    for message in (parent, reply):
        receive(runtime.engine, runtime.settings, message.as_bytes(), "alice@acme.example", [SUPPORT],
                runtime.clock.now())
    assert process_pending(runtime.engine, runtime.deps, runtime.clock, batch=10) == 2
    with reading(runtime.engine) as session:
        rows = session.exec(select(Inbound.outcome, Inbound.ticket_number).order_by(Inbound.id)).all()
    assert [outcome for outcome, _ in rows] == ["ticket_created", "reply"]
    assert rows[0][1] == rows[1][1] is not None


def test_a_batch_holds_about_one_largest_message_of_bytes(tmp_path):
    """The messages of a batch are parsed before its transaction: their bytes together stay near max_message_bytes."""
    raws = [mail("alice@acme.example", f"Log {n}", "x" * 4000).as_bytes() for n in range(3)]
    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path / 'pd.db'}"},
                                      "outbound": {"maildir": str(tmp_path / "md")},
                                      "smtp": {"max_message_bytes": int(len(raws[0]) * 2.5)}}, base_dir=tmp_path)
    runtime = build_runtime(settings)
    with transaction(runtime.engine) as session:
        admin.add_organization(session, settings, runtime.clock.now(), "ACME", "gold", "alice@acme.example")
    for raw in raws:
        receive(runtime.engine, settings, raw, "alice@acme.example", [SUPPORT], runtime.clock.now())
    commits = []
    event.listen(runtime.engine, "commit", lambda _connection: commits.append(1))
    assert process_pending(runtime.engine, runtime.deps, runtime.clock, batch=10) == 3
    assert len(commits) == 3   # the pending ids, the first two messages, the third alone
    assert set(outcomes(runtime).values()) == {"ticket_created"}


@pytest.mark.parametrize("pending, most, most_bytes, expected", [
    ([(1, 10), (2, 10), (3, 90), (4, 5), (5, 5)], 3, 100, [[1, 2], [3, 4, 5]]),
    ([(1, 500), (2, 1)], 20, 100, [[1], [2]]),                 # a message over the bound goes alone
    ([(n, 1) for n in range(1, 6)], 2, 100, [[1, 2], [3, 4], [5]]),
    ([(1, 1), (2, 1)], 0, 100, [[1], [2]]),                     # a batch of 0 means one at a time
    ([], 20, 100, []),
])
def test_batches_by_count_and_bytes(pending, most, most_bytes, expected):
    assert worker.batches(pending, most, most_bytes) == expected
