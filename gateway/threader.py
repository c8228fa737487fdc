"""Which ticket does a message belong to? Pure, behind a small lookup protocol.

Evidence is tried in order, and the first piece that points at a ticket the
sender may write on wins:

1. a correctly signed token in a recipient address (``support+12-<sig>@…``);
2. In-Reply-To, then References newest first, against every Message-ID stored on
   a ticket (ours and the customers');
3. a ``[#12]`` tag in the subject.

Evidence pointing at a ticket the sender may not write on (another
organisation's) is skipped and reported, never followed: a forged header or
subject must not let anyone read or write another organisation's tickets.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.subjects import find_ticket_tags


class ThreadLookup(Protocol):
    def ticket_for_token(self, address: str) -> int | None: ...
    def tickets_for_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]: ...
    def ticket_exists(self, number: int) -> bool: ...
    def may_write(self, number: int) -> bool: ...


@dataclass(frozen=True)
class ThreadMatch:
    ticket_number: int | None
    via: str                          # "token" | "in-reply-to" | "references" | "subject-tag" | "none"
    skipped: tuple[str, ...] = ()     # evidence that pointed at a ticket the sender may not write on

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
}


def match_thread(recipients: Iterable[str], in_reply_to: Sequence[str], references: Sequence[str],
                 subject: str, lookup: ThreadLookup) -> ThreadMatch:
    skipped: list[str] = []
    for via, number in _candidates(recipients, in_reply_to, references, subject, lookup):
        if lookup.may_write(number):
            return ThreadMatch(number, via, tuple(skipped))
        skipped.append(f"{_VIA_TEXT[via]} points at #{number} of another organisation")
    return ThreadMatch(None, "none", tuple(dict.fromkeys(skipped)))


def _candidates(recipients, in_reply_to, references, subject, lookup):
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
