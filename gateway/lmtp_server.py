"""The LMTP edge (RFC 2033, aiosmtpd's ``LMTP``): for a mail server that stays in front.  [edge]

Postfix (``lmtp:inet:host:port``), Exim or any MTA hands mail over with LMTP instead
of running ``postdesk deliver`` per message. The dialogue is the SMTP edge's —
the same RCPT check, the same judge-and-store before answering, channel ``lmtp``
— except that after DATA LMTP wants one reply per accepted recipient (RFC 2033
§4.2). Every recipient here is the support mailbox and the message is stored once,
so each gets the same reply: 250 when stored, 451 4.3.0 when storage failed (the
MTA keeps the message queued and retries), 550 5.7.1 with the reason when refused.
"""
from __future__ import annotations

from collections.abc import Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.config import Settings
from gateway.smtp_server import GatewayHandler


class LmtpHandler(GatewayHandler):
    channel = "lmtp"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        return "\r\n".join([reply] * max(1, len(envelope.rcpt_tos)))


def make_lmtp_factory(handler: LmtpHandler, settings: Settings) -> Callable[[], LMTP]:
    def factory() -> LMTP:
        return LMTP(handler, data_size_limit=settings.smtp.max_message_bytes, enable_SMTPUTF8=True,
                    decode_data=False, hostname=settings.smtp.hostname, ident="Postdesk LMTP")
    return factory
