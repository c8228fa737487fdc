"""Which ticket does a message belong to? Pure, behind a small lookup protocol.

Evidence is tried in order, and the first piece that points at a ticket the
sender may write on wins:

1. a correctly signed token in a recipient address (``support+12-<sig>@…``);
2. In-Reply-To, then References newest first, against every Message-ID stored on
   a ticket (ours and the customers');
3. a ``[#12]`` tag in the subject;
4. a stored message that named this message's Message-ID before it arrived (a reply
   that overtook its parent under concurrency: the late parent joins the reply's ticket).

Evidence pointing at a ticket the sender may not write on (another
organisation's) is skipped and reported, never followed: a forged header or
subject must not let anyone read or write another organisation's tickets.

A message that finds no ticket but names Message-IDs nobody has stored may have
overtaken its parent; :func:`parent_wait_until` says how long it waits for it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from gateway.subjects import find_ticket_tags


class ThreadLookup(Protocol):
    def ticket_for_token(self, address: str) -> int | None: ...
    def tickets_for_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]: ...
    def ticket_exists(self, number: int) -> bool: ...
    def may_write(self, number: int) -> bool: ...
    def tickets_answering(self, message_id: str) -> list[int]: ...


@dataclass(frozen=True)
class ThreadMatch:
    ticket_number: int | None
    via: str                          # "token" | "in-reply-to" | "references" | "subject-tag" | "none"
    skipped: tuple[str, ...] = ()     # evidence that pointed at a ticket the sender may not write on
    missing: tuple[str, ...] = ()     # Message-IDs it names that no stored message carries (from the lookup)

    @property
    def reason(self) -> str:
        if self.ticket_number is None:
            return "no thread reference"
        return f"threaded onto #{self.ticket_number} by {_VIA_TEXT[self.via]}"


_VIA_TEXT = {
    "token": "the reply address token",
    "in-reply-to": "In-Reply-To",
    "references": "References",
    "subject-tag": "the subject tag",
    "answered-by": "a reply to it that arrived first",
}


def match_thread(recipients: Iterable[str], in_reply_to: Sequence[str], references: Sequence[str],
                 subject: str, lookup: ThreadLookup, message_id: str | None = None) -> ThreadMatch:
    """The ticket the message belongs to; ``message_id`` (its own) enables the late-parent evidence."""
    skipped: list[str] = []
    for via, number in _candidates(recipients, in_reply_to, references, subject, lookup, message_id):
        if lookup.may_write(number):
            return ThreadMatch(number, via, tuple(skipped))
        skipped.append(f"{_VIA_TEXT[via]} points at #{number} of another organisation")
    return ThreadMatch(None, "none", tuple(dict.fromkeys(skipped)))


def _candidates(recipients, in_reply_to, references, subject, lookup, message_id):
    for address in recipients:
        number = lookup.ticket_for_token(address)
        if number is not None and lookup.ticket_exists(number):
            yield "token", number
    header_ids = [("in-reply-to", mid) for mid in in_reply_to]
    header_ids += [("references", mid) for mid in reversed(references)]
    if header_ids:
        found = lookup.tickets_for_message_ids([mid for _, mid in header_ids])
        for via, mid in header_ids:
            if mid in found:
                yield via, found[mid]
    for number in find_ticket_tags(subject):
        if lookup.ticket_exists(number):
            yield "subject-tag", number
    if message_id:
        for number in lookup.tickets_answering(message_id):
            yield "answered-by", number


def parent_wait_until(match: ThreadMatch, waiting_until: datetime | None, may_start: bool, now: datetime,
                      wait: timedelta) -> datetime | None:
    """Until when a message that found no ticket waits for the messages it answers; None: not at all.

    A reply whose In-Reply-To/References name Message-IDs nobody has stored may have
    overtaken its parent (issue 7 item 6). It waits at most ``wait`` from the first time
    it is looked at (``may_start``: a first pass), and keeps ``waiting_until`` when it is
    looked at again before then. A message that found a ticket, or names nothing unknown,
    never waits.

    >>> t = datetime(2026, 3, 2, 9, 0)
    >>> parent_wait_until(ThreadMatch(None, "none", missing=("<p@x>",)), None, True, t, timedelta(seconds=5))
    datetime.datetime(2026, 3, 2, 9, 0, 5)
    >>> parent_wait_until(ThreadMatch(None, "none", missing=("<p@x>",)), t, True, t, timedelta(seconds=5)) is None
    True
    """
    if match.ticket_number is not None or not match.missing or wait <= timedelta(0):
        return None
    if waiting_until is None:
        if not may_start:
            return None
        waiting_until = now + wait
    return waiting_until if now < waiting_until else None
