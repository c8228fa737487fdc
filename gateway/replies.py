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
