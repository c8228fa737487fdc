"""The SMTP edge (aiosmtpd): cheap checks in the dialogue, raw message stored before 250.

- RCPT: only the support address and its ``+token`` variants (550 5.1.1 otherwise).
- DATA: the sender is judged from the headers alone; an unknown, shared or list
  sender gets 550 5.7.1 with the reason. Everything else is stored through
  ``intake.receive`` and only then answered 250: into the SQLite spool
  (``storage/spool.py``, filed into the database by a thread of ``serve``), the loop
  judging and a thread writing; without a spool (PostgreSQL) all in a thread.
  Any failure to store is 451 4.3.0, and aiosmtpd's default exception reply (a
  permanent 500 that leaks internals) is replaced.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import replies
from gateway.clock import Clock
from gateway.config import Settings
from gateway.intake import IntakeResult, assess, receive, spool_entry, store
from gateway.parsing import parse_headers
from gateway.policy import Verdict
from gateway.screening import needs_network
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
        self.spooler = SpoolBatches(spool) if spool is not None else None
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
            result = await self._receive(raw, envelope.mail_from or "", list(envelope.rcpt_tos))
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

    async def _receive(self, raw: bytes, mail_from: str, recipients: list[str]) -> IntakeResult:
        """``intake.receive``, with the blocking parts in a thread.

        With the spool (SQLite) the judging is CPU and reads of a local file, so the event
        loop does it itself, and the spool writes of the deliveries of the moment go to a
        thread together (``SpoolBatches``): a thread per delivery contended with the loop
        for the GIL and woke across cores, a third more CPU per message at 8 connections.
        Judging that may wait for DNS (our own DKIM verification) still runs in a thread.
        """
        now = self.clock.now()
        args = (self.engine, self.settings, raw, mail_from, recipients, now, self.channel)
        if self.spool is None:
            return await asyncio.to_thread(receive, *args, resolver=self.resolver)
        headers = parse_headers(raw)
        judge = functools.partial(assess, *args, resolver=self.resolver, spool=self.spool, headers=headers)
        assessment = await asyncio.to_thread(judge) if needs_network(self.settings, headers) else judge()
        if assessment.decision.verdict is Verdict.REFUSE:
            return await asyncio.to_thread(store, self.engine, assessment, raw, now)
        entry, result = spool_entry(assessment)
        await self.spooler.append(entry, raw)
        return result

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return replies.TRY_AGAIN_LATER


class SpoolBatches:
    """Spool writes from the event loop: one thread, one transaction and one fsync per batch.

    A delivery whose write finds another batch being committed waits for the next one,
    which takes every delivery waiting by then. ``append`` returns once its message is
    committed, or raises what the commit raised (the caller answers 451).
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._waiting: list[tuple[dict, bytes, asyncio.Future]] = []
        self._writing = False

    async def append(self, fields: dict, raw: bytes) -> None:
        committed = asyncio.get_running_loop().create_future()
        self._waiting.append((fields, raw, committed))
        if not self._writing:
            self._write_waiting()
        await committed

    def _write_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        self._writing = True
        write = asyncio.get_running_loop().run_in_executor(
            None, self.spool.append_many, [(fields, raw) for fields, raw, _ in batch])
        write.add_done_callback(lambda done: self._written(batch, done))

    def _written(self, batch: list[tuple[dict, bytes, asyncio.Future]], done: asyncio.Future) -> None:
        self._writing = False
        error = asyncio.CancelledError() if done.cancelled() else done.exception()
        for _, _, committed in batch:
            if committed.done():   # the delivery was given up meanwhile (connection lost)
                continue
            if error is None:
                committed.set_result(None)
            else:
                committed.set_exception(error)
        if self._waiting:
            self._write_waiting()


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
