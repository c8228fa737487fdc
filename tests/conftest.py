"""Shared fixtures: a real gateway on a loopback port, a CLI runner, mail builders.

The gateway runs in-process (its own event loop in a thread) with an injected
FixedClock, so tests can move time; it listens on a real socket and tests talk
to it with smtplib or swaks.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import io
import json
import mailbox
import smtplib
import socket
import threading
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.clock import FixedClock
from gateway.config import load_settings
from gateway.service import build_runtime, serve
from storage.db import transaction
from storage.models import Inbound

SUPPORT = "support@desk.example.com"
START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
EML_DIR = Path(__file__).parent / "data" / "eml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, extra: str = "", port: int | None = None, db_url: str | None = None) -> Path:
    path = folder / "postdesk.toml"
    path.write_text(f"""
[database]
url = "{db_url or f"sqlite:///{folder / 'postdesk.db'}"}"
busy_timeout_seconds = 2.0

[smtp]
host = "127.0.0.1"
port = {port or free_port()}
support_address = "{SUPPORT}"

[outbound]
maildir = "{folder / 'maildir'}"

[desk]
worker_poll_seconds = 0.2
{extra}
""", encoding="utf-8")
    return path


class Desk:
    """A running gateway plus helpers to drive it like a person would."""

    def __init__(self, config: Path, clock: FixedClock) -> None:
        self.config, self.clock = config, clock
        self.settings = load_settings(config)
        self.runtime = build_runtime(self.settings, clock)
        self.port = self.settings.smtp.port
        self.setup_mail: set[str] | None = None   # Maildir keys delivered before the first send()

    # -- CLI -------------------------------------------------------------------------------
    def cli(self, *args: str, expect: int = 0) -> str:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main([*args, "--config", str(self.config)])
        assert code == expect, f"postdesk {' '.join(args)} exited {code}: {err.getvalue()}"
        self.last_stderr = err.getvalue()
        return out.getvalue()

    def json(self, *args: str):
        return json.loads(self.cli(*args, "--json"))

    def ticket(self, number: int) -> dict:
        return self.json("ticket", "show", str(number))

    def inbound(self) -> list[dict]:
        return self.json("inbound", "list")

    # -- SMTP ------------------------------------------------------------------------------
    def send(self, msg: EmailMessage | bytes, sender: str | None = None, rcpts: list[str] | None = None):
        """Send over SMTP; returns (code, text) of the end-of-DATA reply; waits until processed.

        The first send sets the setup's mail (invitations, welcome mails) aside: ``delivered()``
        then shows only what the test's own messages caused.
        """
        if self.setup_mail is None:
            self.setup_mail = set(self._maildir().keys())
        raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        if sender is None:
            sender = msg["From"] if isinstance(msg, EmailMessage) else "someone@example.net"
            sender = sender.split("<")[-1].strip(">") if sender else ""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            client.ehlo("client.example.net")
            code, text = client.mail(sender)
            assert code == 250, (code, text)
            for rcpt in rcpts or [SUPPORT]:
                code, text = client.rcpt(rcpt)
                if code != 250:
                    return code, text.decode()
            code, text = client.data(raw)
        self.wait_processed()
        return code, text.decode()

    def wait_processed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spool = self.runtime.spool   # SQLite: accepted messages reach ``inbound`` through the spool
            filed = spool is None or not spool.count()   # first: an entry is forgotten only once it is filed
            with transaction(self.runtime.engine) as session:
                if filed and not session.query(Inbound).filter(Inbound.outcome == "pending").count():
                    return
            time.sleep(0.05)
        raise AssertionError("inbound messages still pending")

    # -- outgoing mail ---------------------------------------------------------------------
    def flush(self) -> None:
        self.cli("outbox", "flush")

    def _maildir(self) -> mailbox.Maildir:
        self.flush()
        return mailbox.Maildir(self.settings.maildir_path, create=True,
                               factory=lambda f: email.message_from_binary_file(f, policy=email.policy.default))

    def delivered(self, to: str | None = None, include_setup: bool = False) -> list:
        """Messages in the Maildir (after a flush), optionally only those to ``to``; without
        ``include_setup``, not those set aside by the first ``send()``."""
        box = self._maildir()
        keys = [k for k in box.keys() if include_setup or k not in (self.setup_mail or ())]
        # file names start with "postdesk-<outbox id>-": sort in the order the mails were queued
        msgs = [box[key] for key in sorted(keys, key=lambda k: int(k.split("-")[1]))]
        return [m for m in msgs if to is None or to.lower() in (m["To"] or "").lower()]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def desk(tmp_path, clock):
    """A gateway listening on a loopback port, with one organisation and an agent."""
    yield from _running_desk(tmp_path, clock)


def _running_desk(tmp_path: Path, clock: FixedClock, extra: str = "", db_url: str | None = None, resolver=None):
    config = write_config(tmp_path, extra, db_url=db_url)
    d = Desk(config, clock)
    if resolver is not None:   # DNS for DKIM verification (tests/test_sender_auth.py)
        d.runtime.deps = dataclasses.replace(d.runtime.deps, resolver=resolver)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve(d.runtime, ready=ready, stop=stop))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "gateway did not start"
    try:
        yield d
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()
        d.runtime.engine.dispose()


@pytest.fixture
def acme(desk):
    """Organisation ACME (silver) with Alice (main contact, en), Carol (de); Globex with Bob; agent Sam."""
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    desk.cli("account", "add", "carol@acme.example", "--org", "ACME", "--name", "Carol Köhler", "--locale", "de")
    desk.cli("org", "add", "Globex", "--package", "bronze", "--main-contact", "bob@globex.example")
    desk.cli("agent", "add", "sam@vendor.example", "--name", "Sam Agent")
    return desk


def mail(sender: str, subject: str | None, body: str, *, to: str = SUPPORT, cc: str | None = None,
         in_reply_to: str | None = None, references: str | None = None, headers: dict | None = None,
         message_id: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if subject is not None:
        msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain=sender.split("@")[-1].strip(">"))
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0100"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg
