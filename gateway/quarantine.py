"""Quarantine administration: look at a held message, download it, release it.

A message is quarantined with a typed reason code (``Inbound.reason_code``):

- ``sender-auth-failed`` / ``sender-dkim-failed``: the From names a known person and its
  domain failed DMARC (trusted Authentication-Results) or DKIM; ``sender-auth-temperror``:
  the DKIM key could not be looked up;
- ``over-limit``: past a ``[limits]`` limit with ``action = "quarantine"`` (or a header
  section too large to drop anything from);
- ``check-failed``: an intake check itself failed; ``processing-failed``: the worker raised;
  ``filing-failed``: a spooled message could not be filed (``gateway/filing.py``).

``release`` is the admin's override: the message is processed as if the hold had not
applied (no authentication hold; parts past the limits are dropped and noted).
``requeue`` (``gateway/worker.py``) processes it again under the same rules.
Effects: database only; the CLI prints and writes files.
"""
from __future__ import annotations

from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy.engine import Engine

from gateway.errors import AdminError
from gateway.limits import header_section
from gateway.sender_auth import AuthResult
from storage import queries
from storage.db import transaction
from storage.models import Inbound


def find(session, inbound_id: int) -> Inbound:
    inbound = session.get(Inbound, inbound_id)
    if inbound is None:
        raise AdminError(f"no inbound message with id {inbound_id}")
    return inbound


def details(inbound: Inbound) -> dict:
    """The record, its typed reason, the authentication verdict and the header lines."""
    auth = AuthResult.from_json(inbound.auth)
    return {
        **queries.inbound_record(inbound),
        "authentication": auth.__dict__ if auth else None,
        "raw_available": inbound.raw is not None,
        "headers": header_lines(inbound.raw) if inbound.raw is not None else [],
    }


def header_lines(raw: bytes) -> list[list[str]]:
    """``[name, value]`` pairs in their order, values unfolded and as received (undecodable octets replaced)."""
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(header_section(raw))
        items = msg.raw_items()
    except Exception:  # noqa: BLE001 -- a header block the parser cannot read: show nothing, keep the raw
        return []
    return [[_text(name), " ".join(_text(value).split())] for name, value in items]


def _text(value) -> str:
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def release(engine: Engine, inbound_id: int, now: datetime) -> Inbound:
    """Take a quarantined message out of quarantine; the worker then processes it without the hold."""
    with transaction(engine) as session:
        inbound = find(session, inbound_id)
        if inbound.outcome != "quarantined":
            raise AdminError(f"inbound {inbound_id} is {inbound.outcome}, not quarantined")
        if inbound.raw is None:
            raise AdminError(f"inbound {inbound_id} has no stored content to process")
        inbound.outcome, inbound.error, inbound.released_at = "pending", None, now
        inbound.reason = f"released by an admin (was: {inbound.reason_code or 'quarantined'})"
        session.add(inbound)
        return inbound
