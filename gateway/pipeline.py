"""The story of one inbound message: parse -> classify -> identify -> thread -> decide -> persist -> notify.

``process_one`` runs inside the worker's transaction for one inbound row and
returns the outcome to record; it sends nothing (notifications go to the
outbox in the same transaction) and reads no clock (``now`` is passed in).
What depends on the stored bytes alone (``prepare``: trimming, parsing,
classifying) may be done before that transaction, so the worker holds the
database's write lock for less time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from sqlmodel import Session

from gateway import arrival, limits, policy, screening
from gateway.bounces import clear_on_new_mail
from gateway.classify import Classification, classify
from gateway.commands import find_command
from gateway.intake import ENVELOPE_CHANNELS
from gateway.mailer import Deps
from gateway.parsing import ParsedMessage, parse_message
from gateway.quotes import visible_text
from gateway.threader import ThreadMatch, match_thread
from gateway.casework import Sender, on_existing_ticket, open_new_ticket
from gateway.selfservice import run_command
from storage import queries
from storage.models import Inbound


@dataclass(frozen=True)
class Outcome:
    outcome: str             # ticket_created | reply | followup_created | ignored | refused | bounce | quarantined
    #                          | deferred (waits for the message it answers; see gateway/arrival.py)
    reason: str
    ticket: int | None = None
    code: str = ""           # the rule behind it (Inbound.reason_code)
    missing: tuple[str, ...] = ()   # Message-IDs it names that nobody had stored (gateway/arrival.py)


@dataclass(frozen=True)
class Prepared:
    """The work on one stored message that needs no database."""

    raw: bytes                        # the message as stored
    parsed: ParsedMessage             # of the message with the parts past [limits] dropped
    dropped: list[str]
    classification: Classification


def prepare(raw: bytes, envelope_from: str, channel: str, deps: Deps) -> Prepared:
    trimmed, dropped = limits.trimmed(raw, deps.settings.limits)   # parts past [limits] dropped
    parsed = parse_message(trimmed)
    classification = classify(parsed, envelope_from if channel in ENVELOPE_CHANNELS else None)
    return Prepared(raw, parsed, dropped, classification)


def process_one(session: Session, inbound: Inbound, deps: Deps, now, prepared: Prepared | None = None) -> Outcome:
    if prepared is None or prepared.raw != (inbound.raw or b""):
        prepared = prepare(inbound.raw or b"", inbound.envelope_from, inbound.channel, deps)
    outcome = _process(session, inbound, deps, now, prepared)
    arrival.settle(session, inbound, outcome.outcome, outcome.ticket, outcome.missing, now)
    return outcome


def _process(session: Session, inbound: Inbound, deps: Deps, now, prepared: Prepared) -> Outcome:
    parsed, dropped, classification = prepared.parsed, prepared.dropped, prepared.classification
    early = screening.early_outcome(session, deps.settings, deps.signer, inbound, inbound.raw or b"", parsed,
                                    classification, now)
    if early is not None:   # held (limits) or a delivery report (matched to our outbox, never a ticket)
        return Outcome(early.outcome, early.reason, early.ticket, early.code)
    author = queries.author_of(session, parsed.from_addr, parsed.message_id)
    decision = policy.decide(policy.Author(parsed.from_addr, parsed.from_count, author.person, classification,
                                           deps.settings.desk.shared_local_parts,
                                           **screening.worker_facts(deps.settings, inbound, parsed,
                                                                    author.sent_by_us)))
    if decision.verdict is policy.Verdict.REFUSE:
        return Outcome("refused", decision.reason, code=decision.rule)
    if decision.verdict is policy.Verdict.IGNORE:
        return Outcome("ignored", decision.reason, code=decision.rule)
    if decision.verdict is policy.Verdict.QUARANTINE:   # e.g. failed sender authentication: never threaded
        return Outcome("quarantined", decision.reason, code=decision.rule)
    sender = Sender.load(session, parsed.from_addr, parsed.from_name, deps.settings, author.agent)
    automatic = classification.auto_generated or classification.bounce
    if not automatic:
        clear_on_new_mail(session, sender.account)   # a bouncing address that writes again works again
    command = find_command(_recipients(inbound, parsed), deps.settings.smtp.support_address,
                           parsed.subject, parsed.text or "")
    if command is not None:   # a mail to support+follow@… and the like is a command, never a ticket
        _, reason = run_command(session, deps, parsed, sender, classification, command, now)
        return Outcome("ignored", f"no ticket: {reason}")
    match = _thread(session, deps, inbound, parsed, sender)
    body = visible_text(parsed.text, parsed.html)
    if match.ticket_number is None:
        outcome = _without_ticket(session, deps, inbound, parsed, sender, classification, match, body, now)
        return replace(outcome, reason=outcome.reason + screening.note_dropped(session, outcome.ticket, dropped, now),
                       missing=match.missing)
    quiet = screening.quiet_reason(session, deps.settings, match.ticket_number, sender.email, automatic, now)
    if quiet:   # loop protection: kept as an internal note, nothing sent
        kind = "agent" if sender.is_agent else "customer"
        kept = screening.keep_quietly(session, inbound, parsed, sender.email, kind, match.ticket_number, body,
                                      quiet, now)
        return Outcome(kept.outcome, kept.reason, kept.ticket, kept.code, match.missing)
    outcome, reason, number = on_existing_ticket(session, deps, inbound, parsed, sender, classification,
                                                 match, body, now)
    return Outcome(outcome, reason + screening.note_dropped(session, number, dropped, now), number,
                   decision.rule, match.missing)


def _thread(session: Session, deps: Deps, inbound: Inbound, parsed: ParsedMessage, sender: Sender) -> ThreadMatch:
    lookup = queries.StoredThreads(session, deps.signer, deps.settings.smtp.support_address,
                                   sender.org_id, sender.is_agent, sender_email=sender.email)
    match = match_thread(_recipients(inbound, parsed), parsed.in_reply_to, parsed.references, parsed.subject, lookup,
                         message_id=parsed.message_id)
    missing = tuple(mid for mid in lookup.missing if mid != parsed.message_id)
    if missing:   # named but never seen: perhaps still on its way (gateway/arrival.py)
        match = replace(match, missing=missing)
    if lookup.unverified:   # our Message-ID shape with a signature that does not verify: never followed
        match = replace(match, skipped=(*match.skipped, *(f"Message-ID {mid} is not one we signed"
                                                           for mid in lookup.unverified)))
    return match


def _recipients(inbound: Inbound, parsed: ParsedMessage) -> list[str]:
    return [*json.loads(inbound.envelope_to or "[]"), *parsed.to, *parsed.cc]


def _without_ticket(session, deps, inbound, parsed, sender: Sender, classification: Classification,
                    match: ThreadMatch, body, now) -> Outcome:
    skipped = f" ({'; '.join(match.skipped)})" if match.skipped else ""
    automatic = classification.auto_generated or classification.bounce
    waiting = None if automatic else arrival.wait_for_parent(deps.settings, inbound, match, now)
    if waiting:   # it may have overtaken the message it answers: processed again when that arrives
        return Outcome(arrival.DEFERRED, waiting + skipped, code=arrival.RULE)
    if sender.is_agent:
        return Outcome("ignored", f"ignored: mail from agent {sender.email} names no ticket{skipped}")
    if automatic:
        return Outcome("ignored", f"ignored: automatic mail ({', '.join(classification.signals)}) "
                                  f"names no ticket{skipped}")
    number = open_new_ticket(session, deps, inbound, parsed, sender, body, now)
    return Outcome("ticket_created", f"new ticket #{number} for {sender.org_name}{skipped}", number)
