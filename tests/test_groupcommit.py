"""Group commit on a real SQLite file: batching, one unit's failure, a database that is gone."""
import threading
import time

import pytest
from sqlalchemy import event, func
from sqlmodel import select

from storage.db import create_schema, make_engine, transaction
from storage.groupcommit import GroupCommit
from storage.models import Meta


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}", busy_timeout_seconds=2.0)
    create_schema(engine)
    return engine


def commits(engine) -> list[int]:
    counted = []
    event.listen(engine, "commit", lambda _conn: counted.append(1))
    return counted


def insert(key: str):
    def work(session):
        session.add(Meta(key=key, value="x"))
        session.flush()
        return key
    return work


def stored_keys(engine) -> set[str]:
    with transaction(engine) as session:
        return set(session.exec(select(Meta.key).where(Meta.key.like("k%"))))


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_writes_queued_behind_a_running_one_share_the_next_transaction(engine):
    committer, counted = GroupCommit(engine), commits(engine)
    release, results = threading.Event(), {}

    def slow(session):
        release.wait(5)
        return insert("k0")(session)

    def call(key, work):
        results[key] = committer.run(work)

    first = threading.Thread(target=call, args=("k0", slow))
    first.start()
    wait_until(lambda: committer._leader.locked())
    others = [threading.Thread(target=call, args=(f"k{i}", insert(f"k{i}"))) for i in range(1, 6)]
    for thread in others:
        thread.start()
    wait_until(lambda: len(committer._queue) == 5)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert len(counted) == 2   # the first alone, the five queued behind it together
    assert results == {f"k{i}": f"k{i}" for i in range(6)}
    assert stored_keys(engine) == {f"k{i}" for i in range(6)}


def test_a_failing_unit_costs_only_its_own_caller(engine):
    committer = GroupCommit(engine)
    release, outcome = threading.Event(), {}

    def broken(session):
        session.add(Meta(key="k-broken", value="x"))
        session.flush()
        raise ValueError("cannot store this one")

    def call(key, work):
        try:
            outcome[key] = committer.run(work)
        except ValueError as exc:
            outcome[key] = exc

    def blocker(session):
        release.wait(5)
        return insert("k0")(session)

    threads = [threading.Thread(target=call, args=("k0", blocker))]
    threads[0].start()
    wait_until(lambda: committer._leader.locked())
    for key, work in (("k1", insert("k1")), ("broken", broken), ("k2", insert("k2"))):
        threads.append(threading.Thread(target=call, args=(key, work)))
        threads[-1].start()
    wait_until(lambda: len(committer._queue) == 3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert isinstance(outcome["broken"], ValueError)
    assert (outcome["k0"], outcome["k1"], outcome["k2"]) == ("k0", "k1", "k2")
    assert stored_keys(engine) == {"k0", "k1", "k2"}   # nothing of the broken unit


def test_a_unique_key_taken_meanwhile_is_retried_alone_and_seen(engine):
    committer = GroupCommit(engine)
    with transaction(engine) as session:
        session.add(Meta(key="k-taken", value="first"))

    def check_then_insert(session):
        existing = session.get(Meta, "k-taken")
        return "duplicate" if existing is not None else insert("k-taken")(session)

    assert committer.run(insert("k1")) == "k1"
    assert committer.run(check_then_insert) == "duplicate"
    with pytest.raises(Exception) as raised:
        committer.run(insert("k-taken"))   # a constraint hit again alone is not a race: the caller hears it
    assert "UNIQUE" in str(raised.value) or "unique" in str(raised.value)
    with transaction(engine) as session:
        assert session.exec(select(func.count()).select_from(Meta).where(Meta.key == "k-taken")).one() == 1


def test_a_database_that_cannot_be_opened_fails_every_caller(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'g.db'}", busy_timeout_seconds=0.2)
    committer = GroupCommit(engine)
    with pytest.raises(Exception) as raised:
        committer.run(insert("k1"))
    assert "unable to open" in str(raised.value)
