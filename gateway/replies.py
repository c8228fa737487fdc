"""SMTP replies by meaning, each with its reply code and RFC 3463 enhanced code.

Handlers return these strings; tests check that code and enhanced code agree.
"""

OK = "250 2.0.0 OK: message accepted"
OK_DUPLICATE = "250 2.0.0 OK: message already received"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
MAILBOX_UNKNOWN = "550 5.1.1 No such mailbox here: this server only accepts mail for the support address"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TRY_AGAIN_LATER = "451 4.3.0 Temporary failure, please try again later"
SERVICE_SHUTTING_DOWN = "421 4.3.2 Service shutting down, please try again later"


def sender_refused(reason: str) -> str:
    """A permanent refusal of the author (550 5.7.1) with a reason a person understands."""
    return f"550 5.7.1 {' '.join(reason.split())}"


def message_refused(reason: str) -> str:
    """A permanent refusal of the message content (554 5.6.0)."""
    return f"554 5.6.0 {' '.join(reason.split())}"


# Refusals whose rule calls for a more precise code than 550 5.7.1 (RFC 3463, RFC 7372).
_REFUSAL_CODES = {
    "over-limit": "552 5.3.4",           # message too big for system: a MIME or header limit
    "sender-auth-failed": "550 5.7.26",  # DMARC: the authentication checks of the From domain failed
    "sender-dkim-failed": "550 5.7.22",  # no valid DKIM signature matching the author's domain
}


def refusal(rule: str, reason: str) -> str:
    """The permanent refusal for a policy or limits rule, with a one-line ASCII reason."""
    text = " ".join(reason.split()).encode("ascii", "replace").decode("ascii")[:400]
    return f"{_REFUSAL_CODES.get(rule, '550 5.7.1')} {text}"
