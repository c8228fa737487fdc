"""`postdesk deliver` behind a mail server: exit codes by hand, then a real Postfix pipe transport.

The database outage is real: another connection holds SQLite's write lock
(``BEGIN EXCLUSIVE``) longer than the gateway's busy timeout, so storing fails the
way it fails when the database is down, and the mail must wait in Postfix's queue.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.config import load_settings
from gateway.mta_pipe import EX_NOPERM, EX_NOUSER, EX_OK, EX_TEMPFAIL, deliver, strip_mbox_from_line
from tests.conftest import SUPPORT, mail, write_config
from tests.mailservers import REPO, Postfix, _shared_dir, needs_postfix, pipe_python, wait_until


def raw(msg) -> bytes:
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def postdesk(config: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)], input=stdin,
                          capture_output=True, timeout=60, cwd=REPO)


def cli_json(config: Path, *args: str):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main([*args, "--json", "--config", str(config)]) == 0
    return json.loads(out.getvalue())


def setup_desk(folder: Path) -> Path:
    config = write_config(folder)
    cli_json(config, "init")
    cli_json(config, "org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    return config


def deliver_to(config: Path, raw_message: bytes, sender: str | None = None, recipients=()):
    return deliver(lambda: load_settings(config), raw_message, sender, list(recipients))


@contextlib.contextmanager
def database_locked(config: Path):
    """Hold SQLite's write locks — of the database and of serve's spool — : every writer waits, then gives up."""
    files = [config.parent / "postdesk.db", config.parent / "postdesk.spool.db"]
    connections = [sqlite3.connect(db, isolation_level=None, timeout=5) for db in files if db.exists()]
    for connection in connections:
        connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        for connection in connections:
            connection.execute("ROLLBACK")
            connection.close()


def test_mbox_from_line_is_dropped_when_procmail_adds_one():
    # procmail and Postfix's F flag start with "From sender date"; that line is no header.
    assert strip_mbox_from_line(b"From a@x Mon Mar  2 10:00:00 2026\r\nSubject: s\r\n\r\nb") == b"Subject: s\r\n\r\nb"
    assert strip_mbox_from_line(b"From: a@x\r\n\r\nb") == b"From: a@x\r\n\r\nb"


def test_deliver_command_stores_from_stdin_and_refuses_with_a_reason(tmp_path):
    # The real command: stdin in, exit 0 and silence when stored; 77 and one reason line when refused.
    config = setup_desk(tmp_path)
    message = raw(mail("alice@acme.example", "Piped in", "Hello through the pipe."))
    stored = postdesk(config, "deliver", "--sender", "alice@acme.example", "--recipient", SUPPORT,
                      stdin=b"From alice@acme.example Mon Mar  2 10:00:00 2026\n" + message)
    assert stored.returncode == EX_OK, stored.stderr
    assert stored.stderr == b""   # nothing for the MTA to copy into a log or bounce
    ticket = cli_json(config, "ticket", "show", "1")
    assert ticket["subject"] == "Piped in" and ticket["messages"][0]["text"].strip() == "Hello through the pipe."
    refused = postdesk(config, "deliver", "--sender", "eve@evil.example",
                       stdin=raw(mail("eve@evil.example", "Let me in", "x")))
    assert refused.returncode == EX_NOPERM
    lines = refused.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("postdesk: refused: sender eve@evil.example has no service")


def test_deliver_exit_codes_tell_the_mta_what_to_do(tmp_path):
    # 0 stored and 0 again for the same message, 77 refused or too large, 67 wrong recipient.
    config = setup_desk(tmp_path)
    message = raw(mail("alice@acme.example", "Once only", "x"))
    assert deliver_to(config, message).code == EX_OK
    assert deliver_to(config, message).code == EX_OK
    assert deliver_to(config, raw(mail("info@acme.example", "Shared", "x"))).code == EX_NOPERM
    big = deliver_to(config, message + b"x" * 26_214_400)
    assert big.code == EX_NOPERM and "larger than" in big.message
    wrong = deliver_to(config, message, recipients=["billing@desk.example.com"])
    assert wrong.code == EX_NOUSER and "billing@desk.example.com" in wrong.message
    assert deliver_to(config, message, recipients=["support+7-abc@desk.example.com"]).code == EX_OK
    outcomes = [r["outcome"] for r in cli_json(config, "inbound", "list")]
    assert outcomes == ["ticket_created", "duplicate", "refused", "duplicate"]
    assert len(cli_json(config, "ticket", "list")) == 1


def test_deliver_answers_tempfail_when_the_database_is_locked(tmp_path):
    # While storing is impossible the answer is 75 and nothing is half-written; afterwards 0.
    config = setup_desk(tmp_path)
    message = raw(mail("alice@acme.example", "During the outage", "x"))
    with database_locked(config):
        during = deliver_to(config, message)
    assert during.code == EX_TEMPFAIL
    assert "temporary failure" in during.message and "locked" in during.message
    assert cli_json(config, "inbound", "list") == []
    assert deliver_to(config, message).code == EX_OK
    assert [t["subject"] for t in cli_json(config, "ticket", "list")] == ["During the outage"]


def test_deliver_answers_tempfail_when_the_configuration_is_broken(tmp_path):
    # A config an admin is still fixing must not bounce mail: 75, with the config error as reason.
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nprot = 25\n")
    result = deliver_to(bad, raw(mail("alice@acme.example", "x", "y")))
    assert result.code == EX_TEMPFAIL and "unknown key 'prot'" in result.message


# ---- through a real Postfix --------------------------------------------------------------------

@pytest.fixture(scope="module")
def piped():
    """A Postfix whose pipe transport runs `postdesk deliver` (as nobody) into one desk for this module."""
    python, why_not = pipe_python()
    if python is None:
        pytest.skip(why_not)
    folder = _shared_dir("postdesk-pipe-desk-")
    config = setup_desk(folder)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, 65534, 65534)   # the pipe runs as nobody and writes the database
    postfix = Postfix("postdesk:", config)
    postfix.start()
    try:
        yield postfix, config
    finally:
        postfix.remove()
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


@needs_postfix
def test_postfix_pipe_transport_delivers_into_a_ticket(piped):
    # Mail to the support address travels Postfix -> pipe -> postdesk deliver -> ticket.
    postfix, config = piped
    postfix.send(raw(mail("alice@acme.example", "Via Postfix", "Sent through the MTA.")), "alice@acme.example")
    postfix.wait_log("status=sent")
    assert "Via Postfix" in [t["subject"] for t in cli_json(config, "ticket", "list")]
    assert "relay=postdesk" in postfix.log_text()
    wait_until(lambda: postfix.queued() == [], 10, 0.2, "queue empty")


@needs_postfix
def test_postfix_bounces_a_refused_sender_with_the_reason(piped):
    # Exit 77 makes Postfix bounce at once, quoting our reason; nothing stays queued.
    postfix, config = piped
    postfix.send(raw(mail("mallory@evil.example", "Hi", "x")), "mallory@evil.example")
    log = postfix.wait_log("status=bounced")
    assert "no service account" in log
    wait_until(lambda: postfix.queued() == [], 10, 0.2, "queue empty (the bounce itself is discarded here)")
    assert "Hi" not in [t["subject"] for t in cli_json(config, "ticket", "list")]
    assert cli_json(config, "inbound", "list", "--outcome", "refused")[0]["from"] == "mallory@evil.example"


@needs_postfix
def test_mail_waits_in_postfix_queue_while_the_database_is_down(piped):
    # 75 during the outage: the mail stays queued (deferred) and arrives once, when the database is back.
    postfix, config = piped
    before = postfix.log_text().count("status=sent")
    with database_locked(config):
        postfix.send(raw(mail("alice@acme.example", "Outage", "Please keep me.")), "alice@acme.example")
        postfix.wait_log("status=deferred")
        assert "temporary failure" in postfix.log_text()
        # the log line comes a moment before the queue file has moved from "active" to "deferred"
        wait_until(lambda: [q["queue_name"] for q in postfix.queued()] == ["deferred"], 10, 0.1,
                   "the mail waits in the deferred queue")
    postfix.flush()
    wait_until(lambda: postfix.log_text().count("status=sent") > before, 20, 0.2, "delivered after the outage")
    wait_until(lambda: postfix.queued() == [], 10, 0.2, "queue empty")
    assert [t["subject"] for t in cli_json(config, "ticket", "list")].count("Outage") == 1
