"""Signed reply addresses and recognisable Message-IDs.

A reply address ``support+<number>-<signature>@domain`` threads a reply even when
the mail client drops In-Reply-To and References; the signature (HMAC-SHA256 with
the installation's secret) means nobody can make one up for another
organisation's ticket. Outbound Message-IDs carry a signature too, so Postdesk
recognises its own mail when it comes back.

Examples (pure helpers)::

    >>> signer = Signer(b"k")
    >>> address = signer.reply_address("support@desk.example.com", 12)
    >>> signer.ticket_from_address(address, "support@desk.example.com")
    12
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_TOKEN_RE = re.compile(r"^(?P<number>\d{1,12})-(?P<sig>[a-z2-7]{16})$")
_MID_RE = re.compile(r"^<?pd\.(?P<number>\d{1,12})\.(?P<key>[a-z0-9]{8,32})\.(?P<sig>[a-z2-7]{16})@", re.I)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, text: str) -> str:
        digest = hmac.new(self._secret, text.encode("utf-8"), hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii").lower()[:16]

    def verify(self, text: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(text), signature.lower())

    def reply_address(self, support_address: str, number: int) -> str:
        local, _, domain = support_address.partition("@")
        return f"{local}+{number}-{self.sign(f'ticket:{number}')}@{domain}"

    def ticket_from_address(self, address: str, support_address: str) -> int | None:
        """The ticket number of a correctly signed plus-address of the support address, else None."""
        token = plus_token(address, support_address)
        match = _TOKEN_RE.match(token or "")
        if not match or not self.verify(f"ticket:{match['number']}", match["sig"]):
            return None
        return int(match["number"])

    def message_id(self, number: int, recipient: str, domain: str) -> str:
        key = secrets.token_hex(8)
        return f"<pd.{number}.{key}.{self.sign(f'mid:{number}:{key}:{recipient.lower()}')}@{domain}>"

    def is_own_message_id(self, message_id: str) -> bool:
        """Whether ``message_id`` has our shape (the signature is checked against the stored recipient elsewhere)."""
        return bool(_MID_RE.match(message_id.strip()))

    def verify_message_id(self, message_id: str, recipient: str) -> int | None:
        """The ticket number of one of our Message-IDs when it was signed for ``recipient``, else None.

        Account mails (invitations, digests) carry number 0: they name no ticket.

        >>> signer = Signer(b"k")
        >>> mid = signer.message_id(7, "Jane@Example.com", "desk.example.com")
        >>> signer.verify_message_id(mid, "jane@example.com"), signer.verify_message_id(mid, "eve@example.com")
        (7, None)
        """
        match = _MID_RE.match((message_id or "").strip())
        if not match or not recipient:
            return None
        number, key = match["number"], match["key"]
        if not self.verify(f"mid:{number}:{key}:{recipient.strip().lower()}", match["sig"]):
            return None
        return int(number)


def plus_token(address: str, support_address: str) -> str | None:
    """``"12-abc"`` for ``support+12-abc@domain``; ``""`` for the bare address; None for other addresses."""
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    s_local, _, s_domain = support_address.lower().rpartition("@")
    if domain != s_domain:
        return None
    if local == s_local:
        return ""
    base, plus, token = local.partition("+")
    return token if plus and base == s_local else None
