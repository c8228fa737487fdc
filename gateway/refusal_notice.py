"""Refusals without SMTP: may a refused sender be told why, and the notice itself.

Over SMTP, LMTP or a pipe a refused sender is told by the sending server (550,
a bounce). Mail read from a mailbox was accepted long ago, so the gateway has to
answer itself — and an answer to a forged sender is backscatter. The notice
(template ``sender_refused``) therefore goes out only when every rule of
:data:`RULES` lets it: the refusal names a sender, the mail is not automatic or a
bounce, it does not come from our own domain, the receiving server vouches for
the sender (``sender_auth``: a trusted Authentication-Results field with DMARC
or aligned DKIM passing, or a DKIM signature of the From domain we verified), and the address got no notice within ``notice_interval_hours``.

``may_answer`` is pure; ``answer_refused`` writes the
notice into the outbox and notes the decision on the inbound record, in one
transaction. Nothing is sent here.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid

from gateway.classify import Classification, classify
from gateway.composer import compose
from gateway.config import ImapConfig
from gateway.intake import judge
from gateway.mailer import Deps
from gateway.parsing import HeaderSummary, parse_headers
from gateway.sender_auth import authenticate
from storage import queries
from storage.db import transaction
from storage.models import Inbound, Outbox

log = logging.getLogger(__name__)

TEMPLATE = "sender_refused"


@dataclass(frozen=True)
class Refusal:
    """The facts the rules look at."""

    address: str | None
    support_domain: str
    classification: Classification
    authenticated: bool
    last_notice_at: datetime | None
    now: datetime


@dataclass(frozen=True)
class NoticeCheck:
    send: bool
    rule: str
    reason: str


def _no_address(r: Refusal, c: ImapConfig) -> NoticeCheck | None:
    return None if r.address else NoticeCheck(False, "no-address", "no notice: the mail names no single sender")


def _disabled(r: Refusal, c: ImapConfig) -> NoticeCheck | None:
    return None if c.notify_refused else NoticeCheck(False, "disabled", "no notice: notices are switched off")


def _automatic(r: Refusal, c: ImapConfig) -> NoticeCheck | None:
    k = r.classification
    if k.auto_generated or k.bounce:
        return NoticeCheck(False, "auto-generated", f"no notice: automatic mail ({', '.join(k.signals)})")
    return None


def _own_domain(r: Refusal, c: ImapConfig) -> NoticeCheck | None:
    domain = (r.address or "").rpartition("@")[2].lower()
    if domain == r.support_domain:
        return NoticeCheck(False, "own-domain", "no notice: the sender is in the support domain")
    return None


def _unauthenticated(r: Refusal, c: ImapConfig) -> NoticeCheck | None:
    if c.require_authenticated_sender and not r.authenticated:
        return NoticeCheck(False, "unauthenticated", "no notice: the sender is not authenticated "
                                                     "(no DMARC or DKIM pass for the From domain)")
    return None


def _rate_limited(r: Refusal, c: ImapConfig) -> NoticeCheck | None:
    window = timedelta(hours=c.notice_interval_hours)
    if r.last_notice_at is not None and r.now - r.last_notice_at < window:
        return NoticeCheck(False, "rate-limited", f"no notice: {r.address} was answered at "
                                                  f"{r.last_notice_at.isoformat()} already")
    return None


RULES: tuple[Callable[[Refusal, ImapConfig], NoticeCheck | None], ...] = (
    _no_address, _disabled, _automatic, _own_domain, _unauthenticated, _rate_limited,
)


def may_answer(refusal: Refusal, config: ImapConfig) -> NoticeCheck:
    """The first rule that objects, or ``send``."""
    for rule in RULES:
        check = rule(refusal, config)
        if check is not None:
            return check
    return NoticeCheck(True, "notice-sent", f"notice sent to {refusal.address}")


# ---- the effect ----------------------------------------------------------------------------

def answer_refused(engine, deps: Deps, inbound_id: int, raw: bytes, now: datetime) -> NoticeCheck:
    """Decide about a notice for the refused inbound ``inbound_id``; queue it if allowed (one transaction)."""
    settings = deps.settings
    headers = parse_headers(raw)
    address = (headers.from_addr or "").lower() or None
    # before the transaction: a DKIM check may wait for DNS
    verdict = authenticate(raw, headers.headers, address, settings.auth).verdict if address else "none"
    with transaction(engine) as session:
        refusal = Refusal(address, settings.support_domain, classify(headers, None), verdict == "pass",
                          queries.last_outbox_to(session, TEMPLATE, address) if address else None, now)
        check = may_answer(refusal, settings.imap)
        if check.send:
            rule = judge(session, settings, headers, "", "imap").rule
            check = _queue_notice(session, deps, headers, rule, now) or check
        row = session.get(Inbound, inbound_id)
        if row is not None:
            row.reason = f"{row.reason}; {check.reason}"[:1000]
            session.add(row)
    log.info("inbound %s %s: %s", inbound_id, headers.message_id or "(no Message-ID)", check.reason)
    return check


def _queue_notice(session, deps: Deps, headers: HeaderSummary, rule: str, now: datetime) -> NoticeCheck | None:
    settings = deps.settings
    address, locale = headers.from_addr.lower(), settings.desk.default_locale
    name = _display_name(headers)
    context = {"recipient": {"name": name or address, "email": address, "locale": locale},
               "support_address": settings.smtp.support_address, "product_name": settings.desk.product_name,
               "rule": rule, "original_subject": headers.subject}
    rendered = deps.renderer.render(TEMPLATE, locale, context)
    message_id = make_msgid("refused", domain=settings.support_domain)
    original = [headers.message_id] if headers.message_id else []
    try:
        raw = compose(rendered, from_addr=settings.smtp.support_address, from_name=settings.outbound.from_name,
                      to_addr=address, to_name=name or None, reply_to=settings.smtp.support_address,
                      message_id=message_id, in_reply_to=headers.message_id, references=original, date=now,
                      auto_submitted="auto-replied")
    except ValueError as exc:
        return NoticeCheck(False, "address-unusable", f"no notice: cannot write to {address!r} ({exc})")
    # RFC 3834 §3.3: an automatic response goes out with the null reverse-path, so it never bounces back here.
    session.add(Outbox(created_at=now, template=TEMPLATE, locale=locale, recipients=json.dumps([address]),
                       envelope_from="", subject=rendered.subject, message_id=message_id, raw=raw,
                       next_attempt_at=now))
    return None


def _display_name(headers: HeaderSummary) -> str:
    from email.utils import getaddresses
    values = headers.headers.get("from", ())
    pairs = getaddresses(list(values[:1]))
    return " ".join(pairs[0][0].split()) if pairs and pairs[0][0] else ""
