"""The one place that reads the wall clock.

Everything else receives ``now`` (pure stages) or a :class:`Clock` (edges), so the
14-, 30- and 35-day rules can be tested and replayed with ``tick --now``.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, always aware and in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock for tests and replays that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = as_utc(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 moment for ``--now``; ``Z`` and offsets are honoured, naive means UTC."""
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
