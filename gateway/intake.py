"""Intake: judge the sender from the headers, then store the raw message once.

Runs at the edge (SMTP now, IMAP and pipes later), in one short transaction:
the answer ``accepted`` is returned only after the commit, so 250 means "on
disk". Refused deliveries are recorded too (headers only, no body), so
``inbound list`` answers "why did this not create a ticket?".

Dedupe key: the Message-ID plus a SHA-256 of the message with line endings
normalised. The same message twice is a recorded ``duplicate``; a different
message reusing a Message-ID has another key and is processed normally.
A refused message delivered again (same Message-ID and content) is refused
again but recorded as a ``duplicate`` of the first refusal, so a sender that
retries because we died before answering leaves one refusal, not two.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from gateway import policy, screening
from gateway.classify import classify
from gateway.config import Settings
from gateway.parsing import HeaderSummary, parse_headers
from gateway.sender_auth import Resolver
from gateway.tokens import Signer
from storage import groupcommit, queries
from storage.db import reading, transaction
from storage.models import Inbound, Meta
from storage.spool import Spool

log = logging.getLogger(__name__)


# Channels whose envelope sender comes from a live SMTP/LMTP dialogue and can be judged;
# mailbox (imap) and pipe deliveries rely on the headers, Return-Path included.
ENVELOPE_CHANNELS = ("smtp", "lmtp")


@dataclass(frozen=True)
class IntakeResult:
    status: str               # "accepted" (stored; maybe quarantined, see reason) | "duplicate" | "refused"
    reason: str
    inbound_id: int | None     # None: spooled, filed into ``inbound`` soon after (gateway/filing.py)
    rule: str = ""            # the rule behind a refusal or hold, for the SMTP reply code


def content_hash(raw: bytes) -> str:
    r"""SHA-256 of the message with line endings and trailing blank lines normalised.

    >>> content_hash(b"a\r\nb\r\n") == content_hash(b"a\nb\n\n")
    True
    """
    normalised = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip(b"\n")
    return hashlib.sha256(normalised).hexdigest()


def dedupe_key(message_id: str | None, digest: str) -> str:
    return hashlib.sha256(f"{message_id or ''}\n{digest}".encode("utf-8", "replace")).hexdigest()


def receive(engine: Engine, settings: Settings, raw: bytes, envelope_from: str, recipients: Sequence[str],
            now: datetime, channel: str = "smtp", resolver: Resolver | None = None,
            spool: Spool | None = None) -> IntakeResult:
    """Judge and store one delivered message; raises only when storage fails (the caller answers 451).

    The judging reads without a transaction's write lock and the DKIM check runs outside
    any transaction; only the insert takes the write lock, shared with the other
    deliveries of the moment (``storage.groupcommit``). ``resolver`` answers the DNS
    lookups of DKIM verification (default: real DNS). With a ``spool`` an accepted
    message goes there instead of into ``inbound`` (``storage/spool.py``;
    ``gateway/filing.py`` moves it on) and the result has no ``inbound_id``.
    """
    assessment = assess(engine, settings, raw, envelope_from, recipients, now, channel, resolver, spool)
    return store(engine, assessment, raw, now, spool)


@dataclass(frozen=True)
class Assessment:
    """The judging of one delivery, before anything is written."""

    fields: dict                 # the inbound row's columns
    decision: policy.Decision
    seen: bool                   # (spool) the same message is in ``inbound`` already

    @property
    def held(self) -> str | None:
        """Why the message is quarantined at once, or None."""
        return self.decision.reason if self.decision.verdict is policy.Verdict.QUARANTINE else None


def assess(engine: Engine, settings: Settings, raw: bytes, envelope_from: str, recipients: Sequence[str],
           now: datetime, channel: str = "smtp", resolver: Resolver | None = None, spool: Spool | None = None,
           headers: HeaderSummary | None = None) -> Assessment:
    """The first half of ``receive``: reads and checks only (DNS when DKIM is verified here, see
    ``screening.needs_network``). ``headers``: ``parse_headers(raw)``, when the caller has it."""
    headers = headers or parse_headers(raw)
    digest = content_hash(raw)
    key = dedupe_key(headers.message_id, digest)
    signer = _signer(engine, settings)
    with reading(engine) as session:
        person = queries.find_person(session, headers.from_addr)
        facts = screening.edge_facts(session, settings, headers, recipients, None, signer)
        seen = spool is not None and session.exec(select(Inbound.id).where(Inbound.dedupe_key == key)).first()
    checks = screening.screen(settings, raw, headers, person, resolver)   # limits, DKIM
    decision = decide(settings, headers, envelope_from, channel, person, {**facts, "authentication": checks.auth},
                      checks)
    fields = {"received_at": now, "channel": channel, "envelope_from": envelope_from,
              "envelope_to": json.dumps(list(recipients)), "message_id": headers.message_id,
              "from_addr": headers.from_addr, "subject": headers.subject[:500], "size": len(raw),
              "content_sha256": digest, "reason_code": decision.rule,
              "auth": checks.auth.to_json() if checks.auth else "", "dedupe_key": key}
    return Assessment(fields, decision, bool(seen))


def store(engine: Engine, assessment: Assessment, raw: bytes, now: datetime, spool: Spool | None = None
          ) -> IntakeResult:
    """The second half of ``receive``: record a refusal, or store the message (in the spool when given)."""
    decision, fields = assessment.decision, dict(assessment.fields)
    if decision.verdict is policy.Verdict.REFUSE:   # recorded at once, spool or not: rare, and nothing to process
        del fields["dedupe_key"]
        return groupcommit.shared(engine).run(lambda session: store_refusal(session, fields, decision.reason, now))
    if spool is not None:
        entry, result = spool_entry(assessment)
        spool.append(entry, raw)
        return result
    fields["raw"] = raw
    return groupcommit.shared(engine).run(lambda session: store_message(session, fields, assessment.held, now))


def spool_entry(assessment: Assessment) -> tuple[dict, IntakeResult]:
    """An accepted message's spool fields, and the answer once they (and the message) are in the spool."""
    held = assessment.held
    result = IntakeResult("duplicate" if assessment.seen else "accepted", held or "stored", None,
                          assessment.decision.rule)
    return {**assessment.fields, "held": held}, result


def store_refusal(session, fields: dict, reason: str, now: datetime) -> IntakeResult:
    row = Inbound(**fields, outcome="refused", reason=reason, processed_at=now)
    earlier = queries.earlier_refusal(session, row.message_id, row.content_sha256)
    if earlier is not None:   # a retry by a sender that never heard our 550 (we died before answering)
        row.outcome = "duplicate"
        row.reason = f"duplicate of refused inbound #{earlier.id} (same Message-ID and content): {row.reason}"
    session.add(row)
    session.flush()
    return IntakeResult("refused", reason, row.id, row.reason_code)


def store_message(session, fields: dict, held: str | None, now: datetime) -> IntakeResult:
    """Insert the message, or record it as a duplicate of the one stored before.

    ``held``: the reason it is quarantined at once, or None. Raises IntegrityError when
    another process stored the same message since the check; the group commit then runs
    this again in a transaction of its own, which sees that row.
    """
    row = Inbound(**fields)
    original = queries.duplicate_of(session, row.dedupe_key)
    if original is not None:
        return _record_duplicate(session, row, original, now)
    if held is not None:   # kept for an admin: `postdesk inbound show|release ID`
        row.outcome, row.reason, row.processed_at = "quarantined", held, now
    session.add(row)
    session.flush()
    return IntakeResult("accepted", held or "stored", row.id, row.reason_code)


def judge(session, settings: Settings, headers: HeaderSummary, envelope_from: str, channel: str, *,
          recipients: Sequence[str] = (), checks: screening.Screening | None = None) -> policy.Decision:
    """The intake's verdict on a message, read through ``session``."""
    person = queries.find_person(session, headers.from_addr)
    facts = screening.edge_facts(session, settings, headers, recipients, checks)
    return decide(settings, headers, envelope_from, channel, person, facts, checks)


def decide(settings: Settings, headers: HeaderSummary, envelope_from: str, channel: str,
           person: policy.Person | None, facts: dict, checks: screening.Screening | None) -> policy.Decision:
    if checks is not None and checks.hold is not None:   # over a limit, or a check failed
        return checks.hold
    classification = classify(headers, envelope_from if channel in ENVELOPE_CHANNELS else None)
    return policy.decide(policy.Author(headers.from_addr, headers.from_count, person, classification,
                                       settings.desk.shared_local_parts, **facts))


_SECRETS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def _signer(engine: Engine, settings: Settings) -> Signer:
    """The installation's signer; its secret, once read (or created), never changes."""
    secret = os.environ.get(settings.security.secret_env, "").encode("utf-8") or _SECRETS.get(engine)
    if not secret:
        with reading(engine) as session:   # no write lock: the database may be busy (``serve`` made the secret)
            stored = session.get(Meta, "secret")
        if stored is not None:
            secret = _SECRETS[engine] = stored.value.encode("utf-8")
    if not secret:
        with transaction(engine) as session:
            secret = _SECRETS[engine] = queries.signing_secret(session)
    return Signer(secret)


def _record_duplicate(session, row: Inbound, original: Inbound, now: datetime) -> IntakeResult:
    reason = f"duplicate of inbound #{original.id} (same Message-ID and content)"
    duplicate = Inbound(**{**row.model_dump(exclude={"id", "raw", "dedupe_key"}),
                           "outcome": "duplicate", "reason": reason, "processed_at": now,
                           "ticket_number": original.ticket_number})
    session.add(duplicate)
    session.flush()
    log.info("inbound %s %s: duplicate of #%s", duplicate.id, row.message_id, original.id)
    return IntakeResult("duplicate", reason, duplicate.id)
