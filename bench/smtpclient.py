"""The load generator: a small asyncio SMTP client over persistent connections.

``drive`` opens ``concurrency`` connections (greeting and EHLO before the clock
starts), then each connection takes the next message of the corpus and runs
MAIL FROM / RCPT TO / DATA on it, one transaction at a time. Latency is measured
per message from sending MAIL FROM to reading the reply after the final dot. The
payloads are prepared beforehand, so the client's own cost per message is a few
socket writes and reads, the same for every server it drives.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.corpus import BenchMessage
from bench.people import SUPPORT

COMMAND_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Sent:
    """What happened to one message: its reply code and when (``time.time()`` seconds)."""

    index: int
    code: int
    reply: str
    started: float       # MAIL FROM written
    finished: float      # reply to the end of data read (or the failure noticed)

    @property
    def latency(self) -> float:
        return self.finished - self.started


class SmtpError(Exception):
    """The server closed the connection or did not answer in time."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), COMMAND_TIMEOUT_SECONDS)
        connection = cls(reader, writer)
        code, text = await connection.read_reply()
        if code != 220:
            raise SmtpError(f"greeting {code} {text}")
        code, text = await connection.command(b"EHLO bench-client.example\r\n")
        if code != 250:
            raise SmtpError(f"EHLO {code} {text}")
        return connection

    async def read_reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), COMMAND_TIMEOUT_SECONDS)
            if not line:
                raise SmtpError("connection closed by the server")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            return int(lines[-1][:3]), "\n".join(lines)
        except ValueError:
            raise SmtpError(f"unreadable reply {lines[-1]!r}") from None

    async def command(self, line: bytes) -> tuple[int, str]:
        self.writer.write(line)
        return await self.read_reply()

    async def transaction(self, message: BenchMessage) -> tuple[int, str]:
        """One MAIL/RCPT/DATA transaction; a refusal before DATA is answered with RSET."""
        size = len(message.wire)
        code, text = await self.command(f"MAIL FROM:<{message.envelope_from}> SIZE={size} BODY=8BITMIME\r\n"
                                        .encode())
        if code == 250:
            code, text = await self.command(f"RCPT TO:<{SUPPORT}>\r\n".encode())
        if code == 250:
            code, text = await self.command(b"DATA\r\n")
            if code == 354:
                self.writer.write(message.wire)
                return await self.read_reply()
        await self.command(b"RSET\r\n")
        return code, text

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.command(b"QUIT\r\n"), 5)
        except (SmtpError, OSError, asyncio.TimeoutError):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def drive(host: str, port: int, messages: Sequence[BenchMessage], concurrency: int,
                deadline_seconds: float) -> list[Sent]:
    """Send every message once over ``concurrency`` connections; returns one ``Sent`` per message."""
    connections = await asyncio.gather(*(Connection.open(host, port) for _ in range(concurrency)))
    queue = iter(range(len(messages)))
    results: list[Sent] = []
    stop_at = time.monotonic() + deadline_seconds

    async def worker(connection: Connection | None) -> None:
        for index in queue:
            started = time.time()
            if time.monotonic() > stop_at:
                results.append(Sent(index, 0, "not sent: time limit of the run reached", started, started))
                continue
            try:
                if connection is None:
                    connection = await Connection.open(host, port)
                code, text = await connection.transaction(messages[index])
            except (SmtpError, OSError, asyncio.TimeoutError) as exc:
                code, text = 0, f"{type(exc).__name__}: {exc}"
                if connection is not None:
                    connection.writer.close()
                connection = None
            results.append(Sent(index, code, text, started, time.time()))
        if connection is not None:
            await connection.close()

    await asyncio.gather(*(worker(c) for c in connections))
    return sorted(results, key=lambda s: s.index)
