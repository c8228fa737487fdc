"""Did every message end where it belongs? The corpus's expectations against the inbound table.

A new ticket must be ``ticket_created`` on a ticket of its own; a reply within the
run must be a ``reply`` on the ticket its thread's first message opened; a reply
to an existing ticket must be a ``reply`` on that ticket. Each accepted message
must be stored exactly once. A mismatch records whether the message was stored or
processed before a message it answers (out-of-order arrival, issue 7 item 6); a
wrong reply that did not arrive early usually follows one that did (its parent then
sits on the wrong ticket).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.corpus import Corpus
from bench.smtpclient import Sent


@dataclass(frozen=True)
class Row:
    id: int
    message_id: str | None
    outcome: str
    ticket: int | None
    reason: str
    processed_at: object = None    # comparable within one database (a datetime, or SQLite's ISO text)

    def before(self, other: "Row") -> bool:
        """Stored or processed earlier than ``other``."""
        if self.id < other.id:
            return True
        return None not in (self.processed_at, other.processed_at) and self.processed_at < other.processed_at


def check_threading(corpus: Corpus, sent: Sequence[Sent], rows: Iterable[Row], examples: int = 8) -> dict:
    by_mid: dict[str, list[Row]] = {}
    for row in rows:
        by_mid.setdefault(row.message_id or "", []).append(row)
    accepted = [corpus.messages[s.index] for s in sent if s.code == 250]
    stored = {m.message_id: by_mid[m.message_id][0] for m in accepted if len(by_mid.get(m.message_id, ())) == 1}
    problems: list[dict] = []
    out_of_order = 0
    for message in accepted:
        found = by_mid.get(message.message_id, [])
        if len(found) != 1:
            problems.append({"index": message.index, "kind": message.kind, "problem": f"stored {len(found)} times"})
            continue
        row = found[0]
        early = any(a in stored and row.before(stored[a]) for a in message.answers)
        out_of_order += early
        expected_outcome, expected_ticket = _expected(message, stored)
        if row.outcome != expected_outcome or (expected_ticket is not None and row.ticket != expected_ticket):
            problems.append({"index": message.index, "kind": message.kind, "arrived_before_parent": early,
                             "expected": f"{expected_outcome} on #{expected_ticket}" if expected_ticket
                             else expected_outcome,
                             "got": f"{row.outcome} on #{row.ticket}", "reason": row.reason[:200]})
    new_tickets = [stored[m.message_id].ticket for m in accepted if m.kind == "new" and m.message_id in stored]
    shared = len(new_tickets) - len(set(new_tickets))
    return {
        "checked": len(accepted),
        "mismatches": len(problems) + shared,
        "new_tickets_sharing_a_ticket": shared,
        "mismatches_by_kind": dict(Counter(p["kind"] for p in problems)),
        "mismatches_arrived_before_parent": sum(bool(p.get("arrived_before_parent")) for p in problems),
        "replies_arrived_before_parent": out_of_order,
        "outcomes": dict(Counter(r.outcome for r in stored.values())),
        "examples": problems[:examples],
    }


def _expected(message, stored: dict[str, Row]) -> tuple[str, int | None]:
    if message.kind == "new":
        return "ticket_created", None
    if message.kind == "existing":
        return "reply", message.existing_ticket
    root = stored.get(message.root)
    return "reply", root.ticket if root is not None else None
