"""The dispatcher's lease: no lock held while a mail travels, and a dispatcher that died leaves nothing behind."""
import mailbox
from datetime import timedelta

import pytest
from sqlmodel import select

from gateway import outbound
from gateway.config import settings_from_mapping
from gateway.delivery import deliver_to_maildir
from gateway.intake import receive
from gateway.service import build_runtime
from gateway.worker import process_pending
from storage import admin
from storage.db import transaction
from storage.models import Outbox
from tests.conftest import SUPPORT, FixedClock, START, mail


@pytest.fixture
def queued(tmp_path):
    """A runtime (no serve loop) with one new ticket's notifications queued in the outbox."""
    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path / 'pd.db'}",
                                                   "busy_timeout_seconds": 1.0},
                                      "smtp": {"support_address": SUPPORT},
                                      "outbound": {"maildir": str(tmp_path / "maildir")}}, base_dir=tmp_path)
    runtime = build_runtime(settings, FixedClock(START))
    with transaction(runtime.engine) as session:
        admin.add_organization(session, settings, START, "ACME", "gold", "alice@acme.example")
        admin.add_agent(session, START, "sam@vendor.example")
    raw = mail("alice@acme.example", "Export fails", "The nightly export stops with an error.").as_bytes()
    assert receive(runtime.engine, settings, raw, "alice@acme.example", [SUPPORT], START).status == "accepted"
    assert process_pending(runtime.engine, runtime.deps, runtime.clock) == 1
    return runtime


def statuses(runtime) -> list[str]:
    with transaction(runtime.engine) as session:
        return [row.status for row in session.exec(select(Outbox).order_by(Outbox.id))]


def maildir_count(runtime) -> int:
    return len(mailbox.Maildir(runtime.settings.maildir_path, create=False).keys())


def test_rows_claimed_by_a_dispatcher_that_died_are_sent_once_after_the_lease(queued):
    runtime = queued
    claimed = outbound._claim(runtime.engine, START, 50)   # a dispatcher claims, then dies before sending
    assert len(claimed) == len(statuses(runtime)) >= 2
    assert outbound.send_due(runtime.engine, runtime.settings, START + timedelta(minutes=1)) == 0   # leased
    assert set(statuses(runtime)) == {"queued"}
    later = START + outbound.LEASE + timedelta(seconds=1)
    assert outbound.send_due(runtime.engine, runtime.settings, later) == len(claimed)
    assert set(statuses(runtime)) == {"sent"}
    assert maildir_count(runtime) == len(claimed)


def test_a_mail_delivered_before_the_crash_is_not_delivered_again(queued):
    runtime = queued
    claimed = outbound._claim(runtime.engine, START, 50)
    first = claimed[0]   # delivered to the Maildir, then the dispatcher died before recording it
    deliver_to_maildir(runtime.settings.maildir_path, outbound._key(first), first.raw)
    later = START + outbound.LEASE + timedelta(seconds=1)
    assert outbound.send_due(runtime.engine, runtime.settings, later) == len(claimed)
    assert set(statuses(runtime)) == {"sent"}
    assert maildir_count(runtime) == len(claimed)   # one file per row, the early one included


def test_no_write_lock_is_held_while_mail_is_delivered(queued, monkeypatch):
    runtime = queued
    seen = []

    def deliver(maildir, key, raw, delivered=None, sync_directory=True):
        with transaction(runtime.engine) as session:   # would wait on SQLite's lock if the dispatcher held it
            seen.append(session.exec(select(Outbox.status).where(Outbox.raw == raw)).one())
        return maildir

    monkeypatch.setattr(outbound, "deliver_to_maildir", deliver)
    sent = outbound.send_due(runtime.engine, runtime.settings, START)
    assert sent == len(seen) >= 2
    assert set(seen) == {"queued"}
    assert set(statuses(runtime)) == {"sent"}
