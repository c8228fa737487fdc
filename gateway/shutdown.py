"""Graceful shutdown of the SMTP and LMTP listeners: finish the message in hand, turn the rest away.  [edge]

``serve`` stops on SIGTERM or Ctrl-C. Its listening sockets close first, so no new
connection arrives; then every open connection is looked at until none is left:

- between transactions (before MAIL, or after the reply to DATA): answered
  ``421 4.3.2`` and closed — RFC 5321 §3.8 lets a server that must shut down say
  421 to whatever comes next, and the client keeps its mail;
- in a transaction (after MAIL, while DATA arrives): may finish it until
  ``[smtp] shutdown_grace_seconds`` have passed, then gets its reply (250 once
  stored, or the refusal) and is closed like the first kind. Still receiving
  when the grace ends: answered 421 and closed, nothing stored, so the sending
  server retries;
- storing (the whole message arrived, intake is committing it): always waited
  for, since the commit decides the answer; cutting it short would turn a stored
  message into a redelivered duplicate.

No I/O besides the protocols' own transports; the phases are read from aiosmtpd's
envelope, not tracked by hand.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterator

from aiosmtpd.smtp import SMTP

from gateway import replies

log = logging.getLogger(__name__)

IDLE, RECEIVING, STORING, CLOSED = "idle", "receiving", "storing", "closed"


class Connections:
    """The open connections of one or more listeners, filled by wrapping their protocol factories."""

    def __init__(self) -> None:
        self._open: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def tracking(self, factory: Callable[[], SMTP]) -> Callable[[], SMTP]:
        def make() -> SMTP:
            protocol = factory()
            self._open.add(protocol)
            return protocol
        return make

    def __iter__(self) -> Iterator[SMTP]:
        return iter(list(self._open))


def phase(protocol: SMTP) -> str:
    """Where a connection stands: idle, receiving (MAIL given, DATA not complete), storing, or closed."""
    if protocol.transport is None or protocol.transport.is_closing():
        return CLOSED
    envelope = protocol.envelope
    if envelope is None or envelope.mail_from is None:
        return IDLE
    # aiosmtpd sets original_content once the final dot arrived and resets the envelope before it
    # writes the handler's reply: in between, intake is storing the message.
    return STORING if envelope.original_content is not None else RECEIVING


async def drain(connections: Connections, grace_seconds: float, poll_seconds: float = 0.05) -> None:
    """Close every connection as its transaction ends; after ``grace_seconds`` also those still receiving."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    while True:
        late = loop.time() >= deadline
        waiting = 0
        for protocol in connections:
            state = phase(protocol)
            if state == IDLE or (late and state == RECEIVING):
                if state == RECEIVING:
                    log.warning("%r still sending after %.0f s of shutdown grace: answered 421",
                                protocol.session.peer if protocol.session else None, grace_seconds)
                turn_away(protocol)
            elif state != CLOSED:
                waiting += 1
        if not waiting:
            return
        await asyncio.sleep(poll_seconds)


def turn_away(protocol: SMTP) -> None:
    """Answer 421 and close; the transport sends what is buffered (a reply to DATA just written) first."""
    transport = protocol.transport
    transport.write(replies.SERVICE_SHUTTING_DOWN.encode("ascii") + b"\r\n")
    transport.close()
