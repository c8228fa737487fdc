"""Screening: the checks on mail nobody can trust, run by every front door and again by the worker.

At intake (SMTP, LMTP, IMAP, pipe, replay: anything that calls ``intake.receive``):

- the MIME limits (``gateway/limits.py``),
- sender authentication (``gateway/sender_auth.py``) of mail whose From names a known
  account or agent; its DNS lookups run outside any database transaction,
- Postdesk's own mail come back and signed VERP bounce addresses (``gateway/loops.py``,
  ``gateway/bounces.py``), so neither is ever refused (a refusal would bounce to us again).

In the worker: bounce-like mail goes to ``gateway/bounces.py`` before the sender rules
(a bounce never opens a ticket), and the rules get the same facts, with the
authentication verdict as stored at receipt (none once an admin released the message).

An unexpected error in a check is not a crash and not a 4xx loop: the message is stored
and quarantined with the reason code ``check-failed``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from gateway import bounces, limits, loops, policy
from gateway.classify import Classification
from gateway.config import Settings
from gateway.parsing import HeaderSummary, ParsedMessage
from gateway.sender_auth import AuthResult, Resolver, authenticate, may_ask_dns
from gateway.tokens import Signer
from storage import queries
from storage.models import Inbound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screening:
    """What the edge checks found before the sender rules run."""

    hold: policy.Decision | None = None       # over a limit, or a check failed
    auth: AuthResult | None = None


def screen(settings: Settings, raw: bytes, headers: HeaderSummary, person: policy.Person | None,
           resolver: Resolver | None = None) -> Screening:
    """Limits and sender authentication of one message from ``person`` (as looked up by the caller).

    Runs outside any transaction (DKIM asks DNS); a failure of a check itself becomes a
    ``check-failed`` hold, never an exception.
    """
    known = settings.auth.policy != "off" and person is not None and person.kind is not None
    try:
        hold = limits.hold(limits.violations(raw, settings.limits), settings.limits.action)
        auth = authenticate(raw, headers.headers, headers.from_addr, settings.auth, resolver) if known else None
        return Screening(hold, auth)
    except Exception as exc:  # noqa: BLE001 -- a check must never turn into a crash or endless 451s
        log.exception("intake checks failed on a message from %s", _redact(headers.from_addr))
        return Screening(policy.Decision(policy.Verdict.QUARANTINE, "check-failed",
                                         f"quarantined: the intake checks failed ({type(exc).__name__})"))


def needs_network(settings: Settings, headers: HeaderSummary) -> bool:
    """Whether ``screen`` may wait for DNS on this message (our own DKIM verification)."""
    return may_ask_dns(headers.headers, settings.auth)


def signer_for(session: Session, settings: Settings) -> Signer:
    """The installation's signer, as ``service.build_runtime`` makes it."""
    secret = os.environ.get(settings.security.secret_env, "").encode("utf-8")
    return Signer(secret or queries.signing_secret(session))


def edge_facts(session: Session, settings: Settings, headers: HeaderSummary, recipients: Iterable[str],
               checks: Screening | None, signer: Signer | None = None) -> dict:
    """The issue-5 fields of ``policy.Author`` at intake (reads only, when ``signer`` is given)."""
    support = settings.smtp.support_address
    return {
        "own_mail": loops.own_mail_reason(session, settings, headers.headers, headers.from_addr, headers.message_id),
        "bounce_address": bounces.is_bounce_address(signer or signer_for(session, settings), recipients, support),
        "authentication": checks.auth if checks else None,
        "auth_action": settings.auth.policy,
    }


def worker_facts(settings: Settings, inbound: Inbound, parsed: ParsedMessage, sent_by_us: bool) -> dict:
    """The issue-5 fields of ``policy.Author`` in the worker.

    ``sent_by_us``: whether the outbox holds the message's Message-ID, which the worker
    asks together with who the sender is (``queries.author_of``).
    """
    released = inbound.released_at is not None
    return {
        "own_mail": (loops.looped_reason(settings, parsed.headers, parsed.from_addr)
                     or loops.copy_reason(parsed.message_id, sent_by_us)),
        "authentication": None if released else AuthResult.from_json(inbound.auth),
        "auth_action": settings.auth.policy,
    }


@dataclass(frozen=True)
class Early:
    """An outcome decided before the sender rules (a bounce)."""

    outcome: str
    reason: str
    code: str
    ticket: int | None = None


def early_outcome(session: Session, settings: Settings, signer: Signer, inbound: Inbound, raw: bytes,
                  parsed: ParsedMessage, classification: Classification, now: datetime) -> Early | None:
    """Holds the worker re-applies (unless released), then bounces: neither reaches the sender rules."""
    if inbound.released_at is None:
        hold = limits.hold(limits.violations(raw, settings.limits), settings.limits.action)
        if hold is not None:   # accepted already, so a refusal becomes a hold
            return Early("quarantined", hold.reason.replace("refused:", "quarantined:", 1), hold.rule)
    return bounce_outcome(session, settings, signer, inbound, raw, parsed, classification, now)


def bounce_outcome(session: Session, settings: Settings, signer: Signer, inbound: Inbound, raw: bytes,
                   parsed: ParsedMessage, classification: Classification, now: datetime) -> Early | None:
    """Delivery reports (and anything sent to a VERP address) never reach the sender rules."""
    recipients = [*json.loads(inbound.envelope_to or "[]"), *parsed.to, *parsed.cc,
                  *_header_values(parsed.headers, ("delivered-to", "x-original-to"))]
    to_verp = bounces.is_bounce_address(signer, recipients, settings.smtp.support_address)
    if not (classification.bounce or to_verp):
        return None
    result = bounces.handle(session, signer, settings.smtp.support_address, inbound.id, raw, recipients, now)
    return Early(result.outcome, result.reason, result.code, result.ticket)


def _header_values(headers: Mapping[str, Sequence[str]], names: Sequence[str]) -> list[str]:
    return [value.strip().strip("<>") for name in names for value in headers.get(name, ())]


def note_dropped(session: Session, ticket: int | None, notes: Sequence[str], now: datetime) -> str:
    """Record parts dropped for the limits on the ticket; returns the text for the inbound reason."""
    if not notes:
        return ""
    if ticket is not None:
        for note in notes[:20]:
            queries.add_event(session, ticket, now, "system", "parts-dropped", note)
    more = f" and {len(notes) - 3} more" if len(notes) > 3 else ""
    return f"; dropped for the limits: {'; '.join(notes[:3])}{more}"


def _redact(address: str | None) -> str:
    if not address:
        return "<>"
    local, at, domain = address.partition("@")
    return f"{local[:2]}***{at}{domain}" if at else "***"


def quiet_reason(session: Session, settings: Settings, ticket: int, sender_email: str, automatic: bool,
                 now: datetime) -> str | None:
    """Why a person's mail on ``ticket`` is kept without an answer (the reply cap), or None."""
    if automatic:
        return None   # automatic mail is an internal note anyway
    return loops.reply_cap_reason(session, settings, ticket, sender_email, now)


def keep_quietly(session: Session, inbound: Inbound, parsed: ParsedMessage, sender_email: str, author_kind: str,
                 ticket_number: int, body, reason: str, now: datetime) -> Early:
    """Store the message on its ticket as an internal note: no status change, nothing sent."""
    from storage import tickets as store
    from storage.models import Ticket
    ticket = session.get(Ticket, ticket_number)
    store.add_message(session, ticket, author_email=sender_email, author_kind=author_kind,
                      message_id=parsed.message_id, in_reply_to=parsed.in_reply_to, references=parsed.references,
                      subject=parsed.subject, text=body.text, full_text=body.full_text, strip_rule=body.rule,
                      internal=True, inbound_id=inbound.id, now=now, attachments=parsed.attachments)
    queries.add_event(session, ticket_number, now, "system", "kept-quietly", reason)
    return Early("reply", f"threaded onto #{ticket_number} as an internal note, nothing sent ({reason})",
                 "reply-cap", ticket_number)
