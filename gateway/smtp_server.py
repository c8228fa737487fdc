"""The SMTP edge (aiosmtpd): cheap checks in the dialogue, raw message stored before 250.

- RCPT: only the support address and its ``+token`` variants (550 5.1.1 otherwise).
- DATA: the sender is judged from the headers alone; an unknown, shared or list
  sender gets 550 5.7.1 with the reason. Everything else is stored through
  ``intake.receive`` (in a thread: the database is blocking) and only then
  answered 250 (on SQLite into the spool, ``storage/spool.py``, which a thread of
  ``serve`` files into the database). Any failure to store is 451 4.3.0, and
  aiosmtpd's default exception reply (a permanent 500 that leaks internals) is replaced.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import replies
from gateway.clock import Clock
from gateway.config import Settings
from gateway.intake import receive
from gateway.tokens import plus_token
from storage.spool import Spool

log = logging.getLogger(__name__)


class GatewayHandler:
    channel = "smtp"   # recorded on each inbound row; the LMTP edge reuses this handler

    def __init__(self, engine, settings: Settings, clock: Clock, on_stored: Callable[[], None] = lambda: None,
                 resolver: Callable | None = None, spool: Spool | None = None):
        self.engine, self.settings, self.clock, self.on_stored = engine, settings, clock, on_stored
        self.resolver = resolver   # DNS for DKIM verification (None: real DNS); tests inject one
        self.spool = spool         # SQLite: accepted messages go to the spool (storage/spool.py)
        self.in_flight = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if plus_token(address, self.settings.smtp.support_address) is None:
            log.info("RCPT refused for %s", _redact(address))
            return replies.MAILBOX_UNKNOWN
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.in_flight += 1
        try:
            result = await asyncio.to_thread(receive, self.engine, self.settings, raw, envelope.mail_from or "",
                                             list(envelope.rcpt_tos), self.clock.now(), self.channel,
                                             resolver=self.resolver, spool=self.spool)
        except Exception:  # noqa: BLE001 - any storage problem is temporary for the sender
            log.exception("storing a message from %s failed; answered 451", _redact(envelope.mail_from))
            return replies.TRY_AGAIN_LATER
        finally:
            self.in_flight -= 1
        if result.status == "refused":
            log.info("inbound %s refused: %s", result.inbound_id, result.reason)
            return replies.refusal(result.rule, _wire_reason(result.reason))
        self.on_stored()
        return replies.OK_DUPLICATE if result.status == "duplicate" else replies.OK

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return replies.TRY_AGAIN_LATER


def _wire_reason(reason: str) -> str:
    text = reason.removeprefix("refused: ")
    return text[:1].upper() + text[1:]


def _redact(address: str | None) -> str:
    if not address:
        return "<>"
    local, at, domain = address.partition("@")
    return f"{local[:2]}***{at}{domain}" if at else "***"


def make_server_factory(handler: GatewayHandler, settings: Settings) -> Callable[[], SMTP]:
    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=settings.smtp.max_message_bytes, enable_SMTPUTF8=True,
                    decode_data=False, hostname=settings.smtp.hostname, ident="Postdesk ESMTP")
    return factory
