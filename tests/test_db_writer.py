"""SQLite's one write lock: waiting for another process's transaction, and letting the front doors go first."""
import sqlite3
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from storage.db import create_schema, let_front_doors_go, make_engine, transaction
from storage.models import Meta


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "w.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_seconds=1.0)
    create_schema(engine)
    return engine, path


def hold_write_lock(path, seconds: float) -> threading.Thread:
    """Another process's writer: BEGIN IMMEDIATE, keep it for ``seconds``, commit."""
    started = threading.Event()

    def run():
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(5)
    return thread


def test_a_write_waits_for_another_writer_and_then_commits(db):
    engine, path = db
    holder = hold_write_lock(path, 0.3)
    with transaction(engine, urgent=True) as session:
        session.add(Meta(key="after-the-other", value="1"))
    holder.join()
    with transaction(engine) as session:
        assert session.get(Meta, "after-the-other").value == "1"


def test_a_write_gives_up_after_the_busy_timeout(db):
    engine, path = db
    holder = hold_write_lock(path, 1.6)
    with pytest.raises(OperationalError, match="locked"):
        with transaction(engine) as session:
            session.add(Meta(key="too-late", value="1"))
    holder.join()
    with transaction(engine) as session:
        assert session.get(Meta, "too-late") is None
        session.add(Meta(key="later", value="1"))   # the connection is usable again, busy timeout restored


def test_the_worker_waits_while_a_front_door_waits_for_the_lock(db):
    engine, path = db
    holder = hold_write_lock(path, 0.3)
    order = []

    def front_door():
        with transaction(engine, urgent=True) as session:
            order.append("front door")
            session.add(Meta(key="front", value="1"))

    door = threading.Thread(target=front_door)
    door.start()
    time.sleep(0.05)   # the front door is waiting for the other writer now
    let_front_doors_go(engine, most_seconds=5)
    order.append("worker")
    door.join()
    holder.join()
    assert order == ["front door", "worker"]


def test_the_worker_is_not_held_by_the_lock_of_a_serve_killed_while_holding_it(db):
    """``serve`` SIGKILLed inside ``mark_urgent`` leaves the shared counter's lock taken for good."""
    import multiprocessing

    from storage.db import share_urgency
    engine, _ = db
    with transaction(engine):
        pass   # the engine's writer turn exists now
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    share_urgency(engine, counter)
    counter.get_lock().acquire()   # taken, and its holder gone
    counter.get_obj().value = 1    # a front door was waiting when it died
    worker = threading.Thread(target=let_front_doors_go, args=(engine, 0.05), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    counter.get_obj().value = 0
    started = time.monotonic()
    let_front_doors_go(engine, most_seconds=5)
    assert time.monotonic() - started < 1
