"""MTA edge: ``postdesk deliver`` takes one message on standard input.  [edge]

For a mail server that stays in front of Postdesk: a Postfix ``pipe`` transport,
procmail, or an alias ``|postdesk deliver``. The message goes through the same
``intake.receive`` as SMTP (channel ``pipe``) and is processed at once; the exit
code, from sysexits(3), tells the MTA what became of it:

- ``0`` (EX_OK): stored — or stored before (a duplicate);
- ``75`` (EX_TEMPFAIL): not stored, try again later — the database is down or
  locked, the configuration cannot be read, anything unexpected. The MTA keeps
  the message in its queue; nothing is ever lost by answering 75;
- ``77`` (EX_NOPERM): refused for good — unknown, shared or list sender, or too
  large; the reason (one line on stderr) goes into the MTA's bounce;
- ``67`` (EX_NOUSER): a recipient other than the support address.

After the commit the message is processed right away; a failure there cannot
change the answer (the message is stored and quarantined, or ``serve`` picks it up).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.tokens import plus_token

log = logging.getLogger(__name__)

EX_OK, EX_NOUSER, EX_TEMPFAIL, EX_NOPERM = 0, 67, 75, 77


@dataclass(frozen=True)
class DeliveryResult:
    code: int
    message: str


def strip_mbox_from_line(raw: bytes) -> bytes:
    r"""Drop the mbox ``From `` line that procmail and Postfix's ``F`` flag put first.

    >>> strip_mbox_from_line(b"From alice@x  Mon Mar  2 10:00:00 2026\nSubject: hi\n\nx")
    b'Subject: hi\n\nx'
    """
    if raw.startswith(b"From "):
        return raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    return raw


def deliver(load: Callable[[], Settings], raw: bytes, sender: str | None, recipients: Sequence[str],
            clock: Clock | None = None, process: bool = True) -> DeliveryResult:
    """Store (and process) one message; never raises."""
    try:
        return _deliver(load, strip_mbox_from_line(raw), sender, recipients, clock or SystemClock(), process)
    except GatewayError as exc:
        return DeliveryResult(EX_TEMPFAIL, f"temporary failure, try again later: {exc}")
    except Exception as exc:  # noqa: BLE001 - a database outage or a bug: the MTA keeps the message
        log.debug("delivery failed", exc_info=True)
        return DeliveryResult(EX_TEMPFAIL, f"temporary failure, try again later: {type(exc).__name__}: "
                                           f"{_first_line(exc)}")


def _deliver(load, raw: bytes, sender: str | None, recipients: Sequence[str], clock: Clock,
             process: bool) -> DeliveryResult:
    from gateway.intake import receive
    from gateway.service import build_runtime
    settings = load()
    support = settings.smtp.support_address
    for rcpt in recipients:
        if plus_token(rcpt, support) is None:
            return DeliveryResult(EX_NOUSER, f"no such mailbox here: {rcpt} (only {support} is served)")
    if not raw.strip():
        return DeliveryResult(EX_NOPERM, "refused: empty message")
    if len(raw) > settings.smtp.max_message_bytes:
        return DeliveryResult(EX_NOPERM, f"refused: message larger than {settings.smtp.max_message_bytes} bytes")
    runtime = build_runtime(settings, clock)
    try:
        result = receive(runtime.engine, settings, raw, sender or "", list(recipients) or [support],
                         clock.now(), "pipe")
        if result.status == "refused":
            return DeliveryResult(EX_NOPERM, result.reason)
        if result.status == "accepted" and process:
            _process(runtime, result.inbound_id, clock)
        return DeliveryResult(EX_OK, f"inbound {result.inbound_id}: {result.status}")
    finally:
        runtime.engine.dispose()


def _process(runtime, inbound_id: int, clock: Clock) -> None:
    from gateway.worker import process_inbound
    try:
        process_inbound(runtime.engine, runtime.deps, inbound_id, clock.now())
    except Exception:  # noqa: BLE001 - stored is stored: `serve` or `inbound requeue` finishes it
        log.warning("inbound %s stored; processing it failed and is left to the worker", inbound_id,
                    exc_info=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
