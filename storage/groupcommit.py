"""Group commit: the small writes of many threads in one transaction, one fsync.

Each caller hands in a unit of work (a function of a session) and blocks until a
transaction holding it has committed, so "returned" still means "on disk". Whoever
finds no write in progress becomes the leader and writes everything queued so far,
up to ``max_batch``; the others wait for it (leader/follower, as databases do with
their log). Under load this turns N fsyncs and N turns on SQLite's one write lock
into one; alone, a caller writes at once and waits for nobody.

A unit of work may run more than once: when the batch fails on a constraint (a row
another process committed just now) or on an error of one unit, the batch is rolled
back and every unit runs again in a transaction of its own, so one bad message never
costs the others their answer. Units must therefore build their rows inside the
function. A database that cannot be reached fails the whole batch at once.
"""
from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from storage.db import transaction

T = TypeVar("T")
Work = Callable[[Session], T]


class _Pending(Generic[T]):
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Work) -> None:
        self.work, self.done, self.result, self.error = work, False, None, None

    def finish(self, result=None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True


class GroupCommit:
    """``begin()`` opens the shared transaction (default: ``transaction(engine, urgent=True)``);
    each unit of work gets what it yields."""

    def __init__(self, engine: Engine | None, max_batch: int = 64,
                 begin: Callable[[], AbstractContextManager] | None = None) -> None:
        self.engine, self.max_batch = engine, max_batch
        self._begin = begin or (lambda: transaction(self.engine, urgent=True))
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()

    def run(self, work: Work[T]) -> T:
        """Run ``work`` in a committed transaction (shared with other callers); its result or its exception."""
        pending = _Pending(work)
        with self._queue_lock:
            self._queue.append(pending)
        while not pending.done:
            with self._leader:
                if pending.done:
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                if batch:
                    self._write(batch)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self._begin() as session:
                results = [pending.work(session) for pending in batch]
        except (OperationalError, sqlite3.OperationalError) as exc:   # the database itself: all would fail
            for pending in batch:
                pending.finish(error=exc)
            return
        except Exception as exc:  # noqa: BLE001 - one unit's problem: give each its own transaction
            if len(batch) == 1 and not isinstance(exc, IntegrityError):
                batch[0].finish(error=exc)
                return
            for pending in batch:
                self._alone(pending)
            return
        for pending, result in zip(batch, results):
            pending.finish(result)

    def _alone(self, pending: _Pending) -> None:
        for attempt in (1, 2):   # a constraint hit twice in a row is not a race any more
            try:
                with self._begin() as session:
                    result = pending.work(session)
            except IntegrityError as exc:
                if attempt == 2:
                    pending.finish(error=exc)
                continue
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who answers 451
                pending.finish(error=exc)
                return
            pending.finish(result)
            return


_SHARED: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared(engine: Engine) -> GroupCommit:
    """The one group commit of ``engine`` in this process (every front door shares it)."""
    with _SHARED_LOCK:
        committer = _SHARED.get(engine)
        if committer is None:
            committer = _SHARED[engine] = GroupCommit(engine)
        return committer
