"""Classify stage: is this message automated, a bounce, list mail?

Input is a :class:`~gateway.parsing.ParsedMessage` or a
:class:`~gateway.parsing.HeaderSummary` (any object with ``headers``,
``from_addr`` and ``subject``) and the SMTP envelope sender; output is a
frozen :class:`Classification` naming every rule that fired. Pure: no I/O
here. The policy stage decides what to do with the answer.

The rules are the header classifier measured in the research notes
(library-eval §3): RFC 3834 ``Auto-Submitted``, the Microsoft and vacation
headers, ``Precedence``, RFC 2369/2919 list headers, null senders, system
sender local parts, delivery reports, and subject phrases only as anchored
prefixes, because free words such as "Urlaub" appear in real customer mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

ROLE_LOCAL_PARTS: frozenset[str] = frozenset({
    "info", "support", "team", "office", "sales", "kontakt", "contact", "admin",
    "service", "hello", "mail", "buchhaltung", "billing", "help", "hilfe",
    "marketing", "noreply", "no-reply", "postmaster", "webmaster", "hostmaster",
    "abuse", "mailer-daemon", "jobs", "hr", "verwaltung", "zentrale", "empfang",
    "vertrieb", "einkauf", "it", "helpdesk", "newsletter", "root",
})

# Local parts of machines, not people: RFC 2142 mailboxes, list-manager
# addresses (``x-bounces``, ``x-request``, fml's ``x-admin``) and any
# no-reply form (``noreply``, ``gmail-noreply``, ``do-not-reply``).
_SYSTEM_LOCAL = re.compile(
    r"^(?:mailer-daemon|postmaster|post_master|bounces?|.+-bounces|.+-request|.+-admin)$"
    r"|(?:^|[-_.])(?:no|do[-_.]?not)[-_.]?reply(?:$|[-_.])",
    re.IGNORECASE,
)
_SYSTEM_NAME = re.compile(r"\b(?:mailer-daemon|postmaster|mail delivery (?:sub)?system)\b", re.I)
_OOO_PREFIX = re.compile(
    r"^\s*(?:automatische antwort|automatic reply|auto[- ]?reply|autoreply|out of (?:the )?office"
    r"|abwesenheitsnotiz|abwesend|nicht im büro|réponse automatique|risposta automatica"
    r"|respuesta automática|automatisch antwoord|autosvar|automaattinen vastaus)\b",
    re.IGNORECASE,
)
_BOUNCE_PREFIX = re.compile(
    r"^\s*(?:undeliverable|undelivered mail|unzustellbar|nicht zustellbar"
    r"|delivery status notification|mail delivery failed|mail delivery failure"
    r"|returned mail|failure notice|delivery failure|delivery has failed"
    r"|zustellung fehlgeschlagen|non remis|message not delivered|warning: could not send"
    r"|unable to deliver)\b",
    re.IGNORECASE,
)
_SUPPRESS_TOKENS = frozenset({"all", "oof", "autoreply"})
_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


class Classifiable(Protocol):
    """The parts of a parsed message or header summary that classification reads."""

    @property
    def headers(self) -> Mapping[str, tuple[str, ...]]: ...

    @property
    def from_addr(self) -> str | None: ...

    @property
    def subject(self) -> str: ...


@dataclass(frozen=True)
class Classification:
    """Why a message must (not) be answered automatically."""

    auto_generated: bool
    bounce: bool
    out_of_office: bool
    list_mail: bool
    signals: tuple[str, ...]


def _local_part(addr: str | None) -> str:
    """Local part of an address, without any ``+tag``, lower-cased."""
    addr = (addr or "").strip().strip("<>")
    local = addr.rpartition("@")[0] if "@" in addr else addr
    return local.split("+", 1)[0].lower()


def is_role_address(addr: str, extra_local_parts: Iterable[str] = ()) -> bool:
    """True if ``addr`` is a shared/role mailbox such as ``info@`` or ``Support+x@``.

    >>> is_role_address("Info+de@customer.example")
    True
    >>> is_role_address("alice@customer.example", ["alice"])
    True
    """
    local = _local_part(addr)
    extra = {part.strip().lower() for part in extra_local_parts}
    return bool(local) and (local in ROLE_LOCAL_PARTS or local in extra)


def _first(headers: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    """First value of a header, or None when it is absent."""
    values = headers.get(name)
    return values[0] if values else None


def _token(value: str | None) -> str:
    """First word of a header value, lower-cased, comments and parameters dropped."""
    return re.split(r"[\s;(]", (value or "").strip().lower(), maxsplit=1)[0]


def _header_signals(msg: Classifiable, envelope_sender: str | None) -> list[str]:
    """Signals from RFC 3834, Microsoft, Precedence and list headers."""
    headers = msg.headers
    found = []
    if _token(_first(headers, "auto-submitted")) not in ("no", ""):
        found.append("auto-submitted")
    if any(name in headers for name in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        found.append("x-autoreply")
    suppress = re.split(r"[\s,;]+", (_first(headers, "x-auto-response-suppress") or "").lower())
    if _SUPPRESS_TOKENS.intersection(suppress):
        found.append("x-auto-response-suppress")
    precedence = _token(_first(headers, "precedence"))
    if precedence in _PRECEDENCE:
        found.append(f"precedence-{precedence}")
    found += [name for name in ("list-id", "list-unsubscribe") if name in headers]
    return found


def _sender_signals(msg: Classifiable, envelope_sender: str | None) -> list[str]:
    """Signals from null and system senders (envelope, Return-Path, From, Sender)."""
    headers = msg.headers
    found = []
    if envelope_sender is not None and envelope_sender.strip() in ("", "<>"):
        found.append("null-sender")
    if (_first(headers, "return-path") or "").replace(" ", "") == "<>":
        found.append("null-return-path")
    if re.search(r"<\s*>", _first(headers, "from") or ""):
        found.append("null-from")
    senders = [msg.from_addr, _first(headers, "sender"), envelope_sender]
    if any(_SYSTEM_LOCAL.search(_local_part(_bare(addr))) for addr in senders if addr):
        found.append("system-sender")
    elif _SYSTEM_NAME.search(_first(headers, "from") or ""):
        found.append("system-sender")
    return found


def _bare(value: str) -> str:
    """The address inside ``Name <addr>``, or the value itself."""
    match = re.search(r"<([^<>]*)>", value)
    return match.group(1) if match else value


def _report_signals(msg: Classifiable, envelope_sender: str | None) -> list[str]:
    """Signals from delivery and feedback reports (RFC 3462/3464, RFC 5965)."""
    ctype = (_first(msg.headers, "content-type") or "").lower()
    found = []
    if _token(ctype) == "multipart/report":
        found.append("multipart-report")
    report_type = re.search(r'report-type\s*=\s*"?delivery-status', ctype)
    parts = [a.content_type for a in getattr(msg, "attachments", ())]
    if report_type or _token(ctype) == "message/delivery-status" or "message/delivery-status" in parts:
        found.append("delivery-status")
    return found


def _subject_signals(msg: Classifiable, envelope_sender: str | None) -> list[str]:
    """Anchored out-of-office and bounce subject prefixes."""
    subject = msg.subject or ""
    found = []
    if _OOO_PREFIX.match(subject):
        found.append("subject-out-of-office")
    if _BOUNCE_PREFIX.match(subject):
        found.append("subject-bounce")
    return found


# The rule table, in the order the signals are reported.
_RULES: tuple[Callable[[Classifiable, str | None], list[str]], ...] = (
    _header_signals,
    _sender_signals,
    _report_signals,
    _subject_signals,
)


def classify(msg: Classifiable, envelope_sender: str | None) -> Classification:
    """Classify one message; ``envelope_sender`` None means "not known".

    A bounce is a delivery report, or a null/system sender with a failure
    subject. Out of office is an anchored subject prefix, a vacation header,
    or ``Auto-Submitted: auto-replied`` on something that is not a bounce.
    """
    signals = tuple(dict.fromkeys(s for rule in _RULES for s in rule(msg, envelope_sender)))
    fired = set(signals)
    machine_sender = bool(fired & {"null-sender", "null-return-path", "null-from", "system-sender"})
    bounce = "delivery-status" in fired or (machine_sender and "subject-bounce" in fired)
    auto_replied = _token(_first(msg.headers, "auto-submitted")) == "auto-replied"
    out_of_office = not bounce and (
        auto_replied or bool(fired & {"subject-out-of-office", "x-autoreply"})
    )
    return Classification(
        auto_generated=bool(signals),
        bounce=bounce,
        out_of_office=out_of_office,
        list_mail=bool(fired & {"list-id", "list-unsubscribe", "precedence-list"}),
        signals=signals,
    )
