"""Email commands of customers: follow or unfollow the organisation, ask for ticket lists. Pure.

A customer writes to a command address, a plus-address of the support address
(``support+follow@…``). Input: the recipients of one message, its subject and text,
and the support address. Output: a :class:`Command`, or None when the message is no
command (then it is threaded or opens a ticket as usual).

=====================  ==================================================================
address                what it does
=====================  ==================================================================
``support+follow@``    the sender follows its organisation: a mail for every new ticket
``support+unfollow@``  the sender stops following
``support+list@``      a digest of tickets; words in the subject or the first line pick
                       the lists: ``mine``/``meine``, ``cc``/``kopie``,
                       ``org``/``organisation``/``firma``; no word: all three
=====================  ==================================================================

Who may run a command (an active account, never an automatic mail) is the caller's
rule (``selfservice.py``); this module only reads the message. No I/O here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.tokens import plus_token

FOLLOW, UNFOLLOW, LIST = "follow", "unfollow", "list"
COMMANDS = (FOLLOW, UNFOLLOW, LIST)
#: The lists a digest can hold, in the order they are shown (DESIGN §1 "views").
SCOPES = ("mine", "cc", "org")

_SCOPE_WORDS = {
    "mine": "mine", "my": "mine", "own": "mine", "meine": "mine", "mein": "mine", "eigene": "mine",
    "cc": "cc", "copy": "cc", "copied": "cc", "kopie": "cc",
    "org": "org", "organisation": "org", "organization": "org", "company": "org",
    "firma": "org", "unternehmen": "org", "team": "org",
}
_WORD_RE = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Command:
    """One email command: ``kind`` is follow, unfollow or list; ``scopes`` only for list."""

    kind: str
    address: str
    scopes: tuple[str, ...] = ()


def command_addresses(support_address: str) -> dict[str, str]:
    """The command addresses of a support address.

    >>> command_addresses("support@desk.example.com")["unfollow"]
    'support+unfollow@desk.example.com'
    """
    local, _, domain = support_address.partition("@")
    return {kind: f"{local}+{kind}@{domain}" for kind in COMMANDS}


def list_unsubscribe(support_address: str) -> str:
    """The ``List-Unsubscribe`` value of follower mail (RFC 2369 §3.2: a mailto: URL in angle brackets).

    >>> list_unsubscribe("support@desk.example.com")
    '<mailto:support+unfollow@desk.example.com?subject=unfollow>'
    """
    return f"<mailto:{command_addresses(support_address)[UNFOLLOW]}?subject={UNFOLLOW}>"


def find_command(recipients: Iterable[str], support_address: str, subject: str, text: str) -> Command | None:
    """The command named by the first command address among ``recipients``, or None.

    >>> find_command(["support+list@d.example"], "support@d.example", "Re: meine", "").scopes
    ('mine',)
    >>> find_command(["support@d.example"], "support@d.example", "follow", "") is None
    True
    """
    for address in recipients:
        token = plus_token(address or "", support_address)
        if token in COMMANDS:
            scopes = list_scopes(subject, text) if token == LIST else ()
            return Command(token, address.strip().strip("<>").lower(), scopes)
    return None


def list_scopes(subject: str, text: str) -> tuple[str, ...]:
    """The lists asked for by words of the subject and the first non-empty line; all when none.

    >>> list_scopes("org + cc", "")
    ('cc', 'org')
    >>> list_scopes("", "Bitte alle Anfragen")
    ('mine', 'cc', 'org')
    """
    first_line = next((line for line in (text or "").splitlines() if line.strip()), "")
    words = _WORD_RE.findall(f"{subject or ''} {first_line}".lower())
    wanted = {_SCOPE_WORDS[w] for w in words if w in _SCOPE_WORDS}
    return tuple(scope for scope in SCOPES if scope in wanted) or SCOPES
