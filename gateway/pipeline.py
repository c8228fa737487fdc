"""The story of one inbound message: parse -> classify -> identify -> thread -> decide -> persist -> notify.

``process_one`` runs inside the worker's transaction for one inbound row and
returns the outcome to record; it sends nothing (notifications go to the
outbox in the same transaction) and reads no clock (``now`` is passed in).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlmodel import Session

from gateway import lifecycle, policy
from gateway.classify import Classification, classify
from gateway.mailer import Deps
from gateway.parsing import ParsedMessage, parse_message
from gateway.quotes import visible_text
from gateway.threader import ThreadMatch, match_thread
from gateway.casework import Sender, on_existing_ticket, open_new_ticket
from storage import queries
from storage.models import Inbound


@dataclass(frozen=True)
class Outcome:
    outcome: str             # ticket_created | reply | followup_created | ignored | refused
    reason: str
    ticket: int | None = None


def process_one(session: Session, inbound: Inbound, deps: Deps, now) -> Outcome:
    parsed = parse_message(inbound.raw or b"")
    classification = classify(parsed, inbound.envelope_from if inbound.channel == "smtp" else None)
    person = queries.find_person(session, parsed.from_addr)
    decision = policy.decide(policy.Author(parsed.from_addr, parsed.from_count, person, classification,
                                           deps.settings.desk.shared_local_parts))
    if decision.verdict is policy.Verdict.REFUSE:
        return Outcome("refused", decision.reason)
    if decision.verdict is policy.Verdict.IGNORE:
        return Outcome("ignored", decision.reason)
    sender = Sender.load(session, parsed.from_addr, parsed.from_name, deps.settings)
    match = _thread(session, deps, inbound, parsed, sender)
    body = visible_text(parsed.text, parsed.html)
    if match.ticket_number is None:
        return _without_ticket(session, deps, inbound, parsed, sender, classification, match, body, now)
    outcome, reason, number = on_existing_ticket(session, deps, inbound, parsed, sender, classification,
                                                 match, body, now)
    return Outcome(outcome, reason, number)


def _thread(session: Session, deps: Deps, inbound: Inbound, parsed: ParsedMessage, sender: Sender) -> ThreadMatch:
    lookup = queries.StoredThreads(session, deps.signer, deps.settings.smtp.support_address,
                                   sender.org_id, sender.is_agent)
    recipients = [*json.loads(inbound.envelope_to or "[]"), *parsed.to, *parsed.cc]
    return match_thread(recipients, parsed.in_reply_to, parsed.references, parsed.subject, lookup)


def _without_ticket(session, deps, inbound, parsed, sender: Sender, classification: Classification,
                    match: ThreadMatch, body, now) -> Outcome:
    skipped = f" ({'; '.join(match.skipped)})" if match.skipped else ""
    if sender.is_agent:
        return Outcome("ignored", f"ignored: mail from agent {sender.email} names no ticket{skipped}")
    if classification.auto_generated or classification.bounce:
        return Outcome("ignored", f"ignored: automatic mail ({', '.join(classification.signals)}) "
                                  f"names no ticket{skipped}")
    number = open_new_ticket(session, deps, inbound, parsed, sender, body, now)
    return Outcome("ticket_created", f"new ticket #{number} for {sender.org_name}{skipped}", number)
