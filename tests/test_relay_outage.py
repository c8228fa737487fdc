"""Relay down for a while: queued mail is delivered once it is back, exactly once.

The gateway runs with `[outbound] transport = "smtp"` against a loopback port where, at first,
nothing listens; then an aiosmtpd sink comes up that answers 451 to the first deliveries.
`serve`'s own dispatcher retries with backoff as the injected clock moves on.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from gateway.service import serve
from tests.conftest import Desk, free_port, mail, write_config


class FlakySink:
    """Answers 451 to the first ``refusals`` messages, then keeps what it is given."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.received: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook
        if self.refusals > 0:
            self.refusals -= 1
            return "451 4.3.0 Relay busy, try again later"
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"


@pytest.fixture
def relayed(tmp_path, clock):
    """A running gateway whose outbound transport is an SMTP relay on a port nobody listens on yet."""
    relay_port = free_port()
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "[outbound]\n", f'[outbound]\ntransport = "smtp"\nrelay_host = "127.0.0.1"\nrelay_port = {relay_port}\n'
                        "retry_base_seconds = 60\n", 1), encoding="utf-8")
    desk = Desk(config, clock)
    loop, stop, ready = asyncio.new_event_loop(), asyncio.Event(), threading.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(desk.runtime, ready=ready, stop=stop)),
                              daemon=True)
    thread.start()
    assert ready.wait(10)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example", "--no-mail")
    desk.cli("agent", "add", "sam@vendor.example", "--name", "Sam Agent")
    try:
        yield desk, relay_port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()
        desk.runtime.engine.dispose()


def wait_for_outbox(desk, predicate, what: str, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = desk.json("outbox", "list")
        if rows and predicate(rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"outbox never reached: {what}; last: {rows}")


def test_mail_queued_while_relay_is_down_is_delivered_once_when_it_is_back(relayed, clock):
    # Connection refused, then 451, then accepted: each mail arrives once, to its one recipient.
    desk, port = relayed
    assert desk.send(mail("alice@acme.example", "Export fails", "Type: problem\n\nThe export fails."))[0] == 250
    rows = wait_for_outbox(desk, lambda rs: len(rs) == 2 and all(r["attempts"] == 1 for r in rs), "first attempt")
    assert {r["status"] for r in rows} == {"queued"}
    assert all("not reachable" in r["last_error"] for r in rows)

    sink = FlakySink(refusals=2)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        clock.advance(seconds=61)   # first retry is due after 60 s: the relay answers 451 to both
        rows = wait_for_outbox(desk, lambda rs: all(r["attempts"] == 2 for r in rs), "second attempt")
        assert {r["status"] for r in rows} == {"queued"} and all(r["last_error"].startswith("451") for r in rows)
        clock.advance(seconds=60)   # backoff doubled to 120 s: nothing is due yet
        time.sleep(0.6)
        assert sink.received == [] and all(r["attempts"] == 2 for r in desk.json("outbox", "list"))
        clock.advance(seconds=61)
        rows = wait_for_outbox(desk, lambda rs: all(r["status"] == "sent" for r in rs), "delivery")
        assert all(r["attempts"] == 3 and r["last_error"] is None for r in rows)
        clock.advance(days=2)       # later passes send nothing again
        time.sleep(0.6)
    finally:
        controller.stop()
    assert len(sink.received) == 2
    by_rcpt = {tuple(rcpts): message for rcpts, message in sink.received}
    assert set(by_rcpt) == {("alice@acme.example",), ("sam@vendor.example",)}
    ack = by_rcpt[("alice@acme.example",)]
    assert ack["To"] == "alice@acme.example" and ack["Subject"] == "[#1] Your request: Export fails"
    assert ack["Auto-Submitted"] == "auto-generated" and ack["Reply-To"].startswith("support+1-")
    assert ack["In-Reply-To"] == desk.ticket(1)["messages"][0]["message_id"]
