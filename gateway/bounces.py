"""Bounces: delivery reports about mail Postdesk sent -> failed outbox rows and bouncing accounts.

Outbound mail leaves with a VERP envelope sender, ``support+bounce-<outbox id>-<signature>@domain``,
so a delivery report names the outbox row it is about in its recipient. Reports that lost
it are matched by the Message-ID of our mail in the returned headers (RFC 3464 §2:
``message/rfc822`` or ``text/rfc822-headers``; quoted header lines of non-standard bounces).
flufl.bounce reads the failed recipients and whether the failure is permanent; it runs only
on bounce-like mail and inside try/except (library-eval §2: ungated, it misreads quoted
replies; some detectors raise on odd headers).

A permanent failure marks the outbox row failed and the recipient's account bouncing, and
is noted on the ticket as a system event; no mail goes to a bouncing address (the mailer
and the dispatcher both check, and record the skip) until an admin runs
``postdesk account clear-bounce EMAIL`` or the address writes to us again. A delayed
(4.x.x) report is only noted. Nothing here opens a ticket or sends mail.

Only reports that match mail we sent act: the VERP token is signed and our Message-IDs are
unguessable and per recipient, so nobody can mark an address bouncing with a forged report.
"""
from __future__ import annotations

import email
import email.policy
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser

from flufl.bounce import all_failures
from sqlalchemy import bindparam
from sqlmodel import Session, select

from gateway.errors import AdminError
from gateway.limits import header_section
from gateway.tokens import Signer, plus_token
from storage import queries
from storage.models import Account, Outbox

log = logging.getLogger(__name__)

_VERP_RE = re.compile(r"^bounce-(?P<id>\d{1,12})-(?P<sig>[a-z2-7]{16})$")
_STATUS_RE = re.compile(rb"(?im)^\s*Status:\s*([245]\.\d{1,3}\.\d{1,3})")
_DIAGNOSTIC_RE = re.compile(rb"(?im)^\s*Diagnostic-Code:\s*(?:smtp;\s*)?([^\r\n]{1,300})")
_QUOTED_MID_RE = re.compile(rb"(?im)^[ \t>]*Message-ID:\s*(<[^<>\s]{3,250}>)")
_REPORT_PARTS = ("message/rfc822", "message/global")
_HEADER_PARTS = ("text/rfc822-headers", "message/global-headers")
_MAX_IDS = 20


@dataclass(frozen=True)
class BounceReport:
    """What a delivery report says, read without any database."""

    permanent: frozenset[str]
    temporary: frozenset[str]
    message_ids: tuple[str, ...]       # Message-IDs of the returned original(s)
    status: str | None                 # the first RFC 3463 status code, e.g. "5.1.1"
    diagnostic: str = ""

    @property
    def kind(self) -> str:
        """"permanent", "temporary" or "unknown" for the report as a whole."""
        if self.permanent or (self.status or "").startswith("5"):
            return "permanent"
        if self.temporary or (self.status or "").startswith("4"):
            return "temporary"
        return "unknown"


@dataclass(frozen=True)
class BounceResult:
    outcome: str               # "bounce" | "ignored"
    reason: str
    code: str                  # reason code stored with the inbound record
    ticket: int | None = None


# -- VERP ---------------------------------------------------------------------------------------


def verp_address(signer: Signer, support_address: str, outbox_id: int) -> str:
    """The envelope sender of outbox row ``outbox_id``.

    >>> verp_address(Signer(b"k"), "support@desk.example.com", 7).startswith("support+bounce-7-")
    True
    """
    local, _, domain = support_address.partition("@")
    return f"{local}+bounce-{outbox_id}-{signer.sign(f'bounce:{outbox_id}')}@{domain}"


def outbox_id_from_address(signer: Signer, address: str, support_address: str) -> int | None:
    """The outbox id of a correctly signed VERP address, else None."""
    match = _VERP_RE.match(plus_token(address, support_address) or "")
    if not match or not signer.verify(f"bounce:{match['id']}", match["sig"]):
        return None
    return int(match["id"])


def is_bounce_address(signer: Signer, addresses: Iterable[str], support_address: str) -> bool:
    return any(outbox_id_from_address(signer, a, support_address) is not None for a in addresses)


# -- reading a report (pure) --------------------------------------------------------------------


def read_report(raw: bytes) -> BounceReport:
    """Failed recipients (flufl.bounce), returned Message-IDs and the status; never raises."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # noqa: BLE001
        msg = None
    temporary, permanent = _failures(msg)
    body = raw[len(header_section(raw)):]
    status = _STATUS_RE.search(body)
    diagnostic = _DIAGNOSTIC_RE.search(body)
    return BounceReport(
        permanent=permanent, temporary=temporary - permanent, message_ids=_returned_ids(msg, body),
        status=status.group(1).decode() if status else None,
        diagnostic=diagnostic.group(1).decode("utf-8", "replace").strip() if diagnostic else "",
    )


def _failures(msg) -> tuple[frozenset[str], frozenset[str]]:
    if msg is None:
        return frozenset(), frozenset()
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # noqa: BLE001 -- flufl's detectors re-raise on odd input
        log.info("flufl.bounce could not read a report: %s", type(exc).__name__)
        return frozenset(), frozenset()
    return _addresses(temporary), _addresses(permanent)


def _addresses(found) -> frozenset[str]:
    out = set()
    for item in found:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        text = text.strip().strip("<>").lower()
        if "@" in text and " " not in text:
            out.add(text)
    return frozenset(out)


def _returned_ids(msg, body: bytes) -> tuple[str, ...]:
    ids: list[str] = []
    try:
        for part in (msg.walk() if msg is not None else ()):
            ids += _ids_of_part(part)
    except Exception:  # noqa: BLE001 -- RecursionError on absurd nesting, header errors
        pass
    ids += [m.decode("ascii", "replace") for m in _QUOTED_MID_RE.findall(body)]
    return tuple(dict.fromkeys("".join(i.split()) for i in ids if i))[:_MAX_IDS]


def _ids_of_part(part) -> list[str]:
    ctype = part.get_content_type()
    if ctype in _REPORT_PARTS:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        return [str(inner.get("message-id", ""))] if inner is not None else []
    if ctype in _HEADER_PARTS:
        data = part.get_payload(decode=True) or b""
        return [str(BytesHeaderParser().parsebytes(data).get("message-id", ""))]
    return []


# -- acting on a report (effects) ---------------------------------------------------------------


def handle(session: Session, signer: Signer, support_address: str, inbound_id: int, raw: bytes,
           recipients: Iterable[str], now: datetime) -> BounceResult:
    """Match a bounce-like message to our outbox and act on it; never opens a ticket."""
    report = read_report(raw)
    rows = _matching_rows(session, signer, support_address, recipients, report.message_ids)
    if not rows:
        return BounceResult("ignored", "ignored: delivery report that matches no mail Postdesk sent "
                            f"({report.kind})", "bounce-unmatched")
    notes = [_apply(session, row, report, inbound_id, now) for row in rows]
    ticket = next((row.ticket_id for row in rows if row.ticket_id is not None), None)
    return BounceResult("bounce", "; ".join(notes), f"bounce-{report.kind}", ticket)


def _matching_rows(session: Session, signer: Signer, support_address: str, recipients: Iterable[str],
                   message_ids: tuple[str, ...]) -> list[Outbox]:
    ids = {i for i in (outbox_id_from_address(signer, a, support_address) for a in recipients) if i is not None}
    rows = {row.id: row for row in (session.get(Outbox, i) for i in ids) if row is not None}
    if message_ids:
        for row in session.exec(select(Outbox).where(Outbox.message_id.in_(list(message_ids)))):
            rows.setdefault(row.id, row)
    return [rows[key] for key in sorted(rows)]


def _apply(session: Session, row: Outbox, report: BounceReport, inbound_id: int, now: datetime) -> str:
    recipient = (json.loads(row.recipients or "[]") or ["?"])[0]
    kind = "temporary" if recipient in report.temporary else report.kind
    detail = " ".join(filter(None, [report.status, report.diagnostic]))[:300] or "no status given"
    if kind == "permanent":
        row.status, row.last_error = "failed", f"bounced (inbound #{inbound_id}): {detail}"[:500]
        session.add(row)
        _mark_bouncing(session, recipient, f"{detail} (outbox #{row.id})", now)
        note = f"mail to {recipient} bounced ({detail}); outbox #{row.id} failed, further mail to it stopped"
    elif kind == "temporary":
        note = f"delivery of outbox #{row.id} to {recipient} is delayed ({detail})"
    else:
        note = f"delivery report about outbox #{row.id} to {recipient} names no failure"
    if row.ticket_id is not None:
        queries.add_event(session, row.ticket_id, now, "system", f"bounce-{kind}", note)
    log.info("inbound %s: %s", inbound_id, note)
    return note


def _mark_bouncing(session: Session, address: str, reason: str, now: datetime) -> None:
    account = queries.account_by_email(session, address)
    if account is None:
        return
    account.bouncing, account.bounced_at, account.bounce_reason = True, now, reason[:300]
    session.add(account)


# -- not sending to bouncing addresses ----------------------------------------------------------


_BOUNCING = (select(Account.email, Account.bounced_at)
             .where(Account.email.in_(bindparam("addresses", expanding=True)), Account.bouncing))


def bouncing_reasons(session: Session, addresses: Iterable[str]) -> dict[str, str]:
    """Why mail to each bouncing one of ``addresses`` must not be sent now, by lowercased address.

    One statement for a whole batch of recipients; an address missing from the result may be mailed.
    Plain columns, read as stored: a caller with account changes pending writes them first.
    """
    wanted = sorted({address.lower() for address in addresses})
    if not wanted:
        return {}
    rows = session.connection().execute(_BOUNCING, {"addresses": wanted})
    reasons = {}
    for email_address, bounced_at in rows:
        since = bounced_at.date().isoformat() if bounced_at else "?"
        reasons[email_address] = (f"{email_address} is bouncing since {since}; "
                                  f"clear with `postdesk account clear-bounce {email_address}`")
    return reasons


def hold_if_bouncing(session: Session, row: Outbox, now: datetime) -> bool:
    """Dispatcher hook: mark a queued row ``suppressed`` when a recipient bounces (and say so)."""
    recipients = json.loads(row.recipients or "[]")
    found = bouncing_reasons(session, recipients)
    reasons = [found[a.lower()] for a in recipients if a.lower() in found]
    if not reasons:
        return False
    row.status, row.last_error = "suppressed", f"not sent: {reasons[0]}"[:500]
    session.add(row)
    if row.ticket_id is not None:
        queries.add_event(session, row.ticket_id, now, "system", "notification-suppressed",
                          f"{row.template} not sent: {reasons[0]}")
    return True


def clear_on_new_mail(session: Session, account: Account | None) -> bool:
    """A person's own (not automatic) mail proves the address works again."""
    if account is None or not account.bouncing:
        return False
    account.bouncing, account.bounce_reason = False, ""
    session.add(account)
    return True


def clear_bounce(session: Session, address: str) -> Account:
    """Admin: allow mail to ``address`` again."""
    account = queries.account_by_email(session, address.strip())
    if account is None:
        raise AdminError(f"no account with address {address.strip()}")
    account.bouncing, account.bounce_reason = False, ""
    session.add(account)
    return account
