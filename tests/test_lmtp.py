"""The LMTP listener of `serve`: per-recipient replies by hand, then a real Postfix `lmtp:` transport."""
from __future__ import annotations

import socket

import pytest

from tests.conftest import SUPPORT, _running_desk, mail
from tests.mailservers import Postfix, free_port, needs_postfix, wait_until
from tests.test_mta_pipe import database_locked, raw


@pytest.fixture
def lmtp_desk(tmp_path, clock):
    """`serve` with the LMTP listener on, ACME registered."""
    port = free_port()
    gen = _running_desk(tmp_path, clock, f"[lmtp]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\n")
    desk = next(gen)
    desk.lmtp_port = port
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    try:
        yield desk
    finally:
        gen.close()


class LmtpClient:
    """A line-by-line LMTP client, to see every reply (smtplib.LMTP reads one reply after DATA)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.reply()   # greeting

    def reply(self) -> list[str]:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def command(self, text: str) -> list[str]:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def transaction(self, sender: str, rcpts: list[str], message: bytes) -> tuple[list[str], list[str]]:
        """(RCPT replies, DATA replies: one per accepted recipient)."""
        self.command("LHLO client.example.net")
        self.command(f"MAIL FROM:<{sender}>")
        rcpt_replies = [self.command(f"RCPT TO:<{r}>")[-1] for r in rcpts]
        self.command("DATA")
        self.sock.sendall(message.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        accepted = sum(r.startswith("250") for r in rcpt_replies)
        return rcpt_replies, [self.reply()[-1] for _ in range(accepted)]

    def close(self) -> None:
        self.command("QUIT")
        self.sock.close()


def test_lmtp_answers_once_per_recipient_after_data(lmtp_desk):
    # Two accepted recipients, two replies after DATA; the message is stored once; a stranger address is refused.
    client = LmtpClient(lmtp_desk.lmtp_port)
    message = raw(mail("alice@acme.example", "Over LMTP", "Hello"))
    rcpts, replies = client.transaction("alice@acme.example",
                                        [SUPPORT, "billing@desk.example.com", "support+anything@desk.example.com"],
                                        message)
    client.close()
    assert [r[:9] for r in rcpts] == ["250 2.1.5", "550 5.1.1", "250 2.1.5"]
    assert [r[:9] for r in replies] == ["250 2.0.0", "250 2.0.0"]
    lmtp_desk.wait_processed()
    assert [t["subject"] for t in lmtp_desk.json("ticket", "list")] == ["Over LMTP"]
    assert [i["outcome"] for i in lmtp_desk.inbound()] == ["ticket_created"]


def test_lmtp_refuses_unknown_sender_per_recipient(lmtp_desk):
    # A sender without an account gets 550 5.7.1 with the reason, for each recipient.
    client = LmtpClient(lmtp_desk.lmtp_port)
    _, replies = client.transaction("eve@evil.example", [SUPPORT, SUPPORT],
                                    raw(mail("eve@evil.example", "Hi", "x")))
    client.close()
    assert len(replies) == 2 and all(r.startswith("550 5.7.1") and "no service account" in r for r in replies)


def test_lmtp_answers_451_while_the_database_is_locked(lmtp_desk):
    # Storage fails: every recipient gets 451 4.3.0, so the MTA keeps the message.
    client = LmtpClient(lmtp_desk.lmtp_port)
    with database_locked(lmtp_desk.config):
        _, replies = client.transaction("alice@acme.example", [SUPPORT],
                                        raw(mail("alice@acme.example", "Locked out", "x")))
    client.close()
    assert [r[:9] for r in replies] == ["451 4.3.0"]
    assert lmtp_desk.json("ticket", "list") == []


@needs_postfix
def test_postfix_lmtp_transport_delivers_and_retries_after_a_database_outage(lmtp_desk):
    # Postfix hands mail over by LMTP; during an outage it keeps the mail queued, afterwards it arrives once.
    postfix = Postfix(f"lmtp:inet:127.0.0.1:{lmtp_desk.lmtp_port}")
    postfix.start()
    try:
        postfix.send(raw(mail("alice@acme.example", "Via Postfix LMTP", "one")), "alice@acme.example")
        postfix.wait_log("status=sent")
        assert "relay=127.0.0.1[127.0.0.1]:%d" % lmtp_desk.lmtp_port in postfix.log_text()
        with database_locked(lmtp_desk.config):
            postfix.send(raw(mail("alice@acme.example", "During the outage", "two")), "alice@acme.example")
            postfix.wait_log("status=deferred")
            assert "451 4.3.0" in postfix.log_text()
            assert [q["queue_name"] for q in postfix.queued()] == ["deferred"]
        postfix.flush()
        wait_until(lambda: postfix.log_text().count("status=sent") == 2, 20, 0.2, "delivered after the outage")
        wait_until(lambda: postfix.queued() == [], 10, 0.2, "queue empty")
    finally:
        postfix.remove()
    lmtp_desk.wait_processed()
    subjects = [t["subject"] for t in lmtp_desk.json("ticket", "list")]
    assert sorted(subjects) == ["During the outage", "Via Postfix LMTP"]
