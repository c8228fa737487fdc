"""Who wrote a message, and may they? Pure rules -> a Decision.

The same rules run at the SMTP edge (from the headers alone, before answering)
and in the worker (again, because accounts can change in between). Rules are
small named functions tried in the order of :data:`RULES`; the first that
returns a decision wins, and its name is stored with the inbound record.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.classify import Classification, is_role_address
from gateway.sender_auth import AuthResult


class Verdict(StrEnum):
    ACCEPT = "accept"
    IGNORE = "ignore"
    REFUSE = "refuse"
    QUARANTINE = "quarantine"    # kept with a typed reason until an admin releases it


@dataclass(frozen=True)
class Person:
    """What the directory knows about an address."""

    email: str
    kind: str | None            # "agent" | "account" | None (unknown)
    active: bool = True
    marked_shared: bool = False
    organization: str | None = None


@dataclass(frozen=True)
class Author:
    """The facts the rules look at."""

    from_addr: str | None
    from_count: int
    person: Person | None
    classification: Classification
    shared_local_parts: tuple[str, ...]
    # issue 5: loops and sender authentication (filled by intake and pipeline; defaults = not checked)
    own_mail: str | None = None           # why the message is Postdesk's own mail come back, if it is
    bounce_address: bool = False          # sent to a signed VERP bounce address of our outbound mail
    authentication: AuthResult | None = None
    auth_action: str = "quarantine"       # [auth] policy: "refuse" | "quarantine"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str


def decide(author: Author) -> Decision:
    for rule in RULES:
        decision = rule(author)
        if decision is not None:
            return decision
    return Decision(Verdict.ACCEPT, "sender-known", "sender has an account")


def _automatic(author: Author) -> Decision | None:
    c = author.classification
    if (c.auto_generated or c.bounce) and not _list_only(c):
        what = "delivery report" if c.bounce else "automatic reply" if c.out_of_office else "automatic mail"
        if author.person is not None and author.person.kind is not None and author.person.active:
            return None   # may still thread onto a ticket as an internal note
        return Decision(Verdict.IGNORE, "auto-generated", f"ignored: {what} ({', '.join(c.signals)})")
    return None


def _list_only(c: Classification) -> bool:
    return c.list_mail and not c.bounce and set(c.signals) <= {"list-id", "list-unsubscribe", "precedence-list"}


def _no_author(author: Author) -> Decision | None:
    if author.from_addr is None:
        detail = "several addresses" if author.from_count > 1 else "no valid address"
        return Decision(Verdict.REFUSE, "from-invalid",
                        f"refused: the From header has {detail}; write from your personal account")
    return None


def _agent(author: Author) -> Decision | None:
    p = author.person
    if p is not None and p.kind == "agent" and p.active:
        return Decision(Verdict.ACCEPT, "sender-agent", "sender is an agent")
    return None


def _shared(author: Author) -> Decision | None:
    p = author.person
    if (p is not None and p.marked_shared) or is_role_address(author.from_addr or "", author.shared_local_parts):
        return Decision(Verdict.REFUSE, "sender-shared",
                        f"refused: {author.from_addr} is a shared address; tickets can only be opened "
                        "from a personal service account")
    if author.classification.list_mail:
        return Decision(Verdict.REFUSE, "sender-list",
                        "refused: mail that arrives through a mailing list is treated as shared; "
                        "write from your personal service account")
    return None


def _unknown(author: Author) -> Decision | None:
    p = author.person
    if p is None or p.kind is None:
        return Decision(Verdict.REFUSE, "sender-unknown",
                        f"refused: sender {author.from_addr} has no service account; "
                        "ask your organisation's main contact or support to register you")
    if not p.active:
        return Decision(Verdict.REFUSE, "sender-inactive",
                        f"refused: the service account of {author.from_addr} has been deactivated")
    return None


def _own_mail(author: Author) -> Decision | None:
    # Our own notification come back (a forward-all rule, a list, a misconfigured relay): never a
    # ticket, never an answer, and never a refusal either (that would bounce to us again).
    if author.own_mail:
        return Decision(Verdict.IGNORE, "own-mail", f"ignored: {author.own_mail}")
    return None


def _to_bounce_address(author: Author) -> Decision | None:
    if author.bounce_address:
        return Decision(Verdict.IGNORE, "delivery-report", "sent to a bounce address of our outbound mail")
    return None


def _forged(author: Author) -> Decision | None:
    """A known person's address whose domain does not vouch for the message (RFC 7489, RFC 6376)."""
    auth, p = author.authentication, author.person
    if auth is None or p is None or p.kind is None or auth.verdict not in ("fail", "temperror"):
        return None
    if auth.verdict == "temperror":
        return Decision(Verdict.QUARANTINE, "sender-auth-temperror",
                        f"quarantined: the sender could not be authenticated now ({auth.reason})")
    rule = "sender-auth-failed" if auth.method == "authentication-results" else "sender-dkim-failed"
    reason = f"the sender {author.from_addr} could not be authenticated: {auth.reason}"
    if author.auth_action == "refuse":
        return Decision(Verdict.REFUSE, rule, f"refused: {reason}")
    return Decision(Verdict.QUARANTINE, rule, f"quarantined: {reason}")


RULES: tuple[Callable[[Author], Decision | None], ...] = (
    _own_mail, _to_bounce_address, _automatic, _no_author, _forged, _agent, _shared, _unknown,
)
