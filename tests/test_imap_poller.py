"""Reading a real IMAP mailbox (a private Dovecot): tickets, IDLE, restarts, crashes, poison, refusals.

Mail is put into the mailbox with IMAP APPEND by a second client, as the mail
provider's delivery would; the poller under test sees only what Dovecot shows it.
"""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading

import pytest

from gateway.imap_poller import Poller
from gateway.imap_source import ImapSource, MailboxError
from gateway.rendering import Renderer, default_template_dir
from gateway.refusal_notice import NoticeCheck, Refusal, may_answer
from gateway.classify import Classification
from gateway.config import ImapConfig
from tests.conftest import START, Desk, _running_desk, mail, write_config
from tests.mailservers import REPO, dovecot, needs_dovecot, wait_until  # noqa: F401 (fixture)

AUTH = '[auth]\ntrusted_authserv_ids = ["mx.test.example"]\nverify_dkim = false\n'
TRUSTED_PASS = "mx.test.example; dmarc=pass header.from={domain}; dkim=pass header.d={domain}"


def raw(msg) -> bytes:
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def make_desk(tmp_path, clock, dovecot, **imap) -> Desk:
    config = write_config(tmp_path, dovecot.imap_config(**imap) + AUTH)
    desk = Desk(config, clock)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example", "--no-mail")
    desk.cli("agent", "add", "sam@vendor.example", "--name", "Sam Agent")
    return desk


def poller_for(desk: Desk, **kwargs) -> Poller:
    return Poller(desk.runtime, lambda: ImapSource(desk.settings.imap), **kwargs)


def postdesk(config, *args):
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def outbox(desk: Desk, template: str) -> list[dict]:
    return [o for o in desk.json("outbox", "list") if o["template"] == template]


# ---- the refusal-notice rules (pure) ----------------------------------------------------------

HUMAN = Classification(False, False, False, False, ())
AUTOREPLY = Classification(True, False, True, False, ("auto-submitted",))


@pytest.mark.parametrize("refusal, config, rule", [
    (Refusal("eve@x.example", "desk.example.com", HUMAN, True, None, START), ImapConfig(), "notice-sent"),
    (Refusal(None, "desk.example.com", HUMAN, True, None, START), ImapConfig(), "no-address"),
    (Refusal("eve@x.example", "desk.example.com", HUMAN, True, None, START),
     ImapConfig(notify_refused=False), "disabled"),
    (Refusal("eve@x.example", "desk.example.com", AUTOREPLY, True, None, START), ImapConfig(), "auto-generated"),
    (Refusal("bot@desk.example.com", "desk.example.com", HUMAN, True, None, START), ImapConfig(), "own-domain"),
    (Refusal("eve@x.example", "desk.example.com", HUMAN, False, None, START), ImapConfig(), "unauthenticated"),
    (Refusal("eve@x.example", "desk.example.com", HUMAN, False, None, START),
     ImapConfig(require_authenticated_sender=False), "notice-sent"),
    (Refusal("eve@x.example", "desk.example.com", HUMAN, True, START, START.replace(hour=20)),
     ImapConfig(), "rate-limited"),
    (Refusal("eve@x.example", "desk.example.com", HUMAN, True, START, START.replace(day=3, hour=9)),
     ImapConfig(), "notice-sent"),
])
def test_refusal_notice_rules_when_deciding_whether_to_answer(refusal, config, rule):
    # Each rule of the table stops the notice on its own; only a clean case sends it.
    check = may_answer(refusal, config)
    assert check.rule == rule
    assert check.send is (rule == "notice-sent")
    assert isinstance(check, NoticeCheck)


# ---- against Dovecot --------------------------------------------------------------------------

@needs_dovecot
def test_new_ticket_and_threaded_reply_when_read_from_the_mailbox(tmp_path, clock, dovecot):
    # A mail in INBOX opens a ticket and moves to Processed; the reply threads onto it.
    desk = make_desk(tmp_path, clock, dovecot)
    dovecot.append(raw(mail("alice@acme.example", "Export fails", "Type: problem\n\nThe export fails.")))
    poller = poller_for(desk)
    try:
        report = poller.run_once()
        assert (report.seen, report.processed) == (1, 1)
        ticket = desk.ticket(1)
        assert (ticket["subject"], ticket["type"]) == ("Export fails", "problem")
        assert dovecot.messages("INBOX") == [] and len(dovecot.messages("Processed")) == 1
        assert dovecot.folder_exists("Failed") and dovecot.folder_exists("Rejected")   # created where missing
        ack = [m for m in desk.delivered("alice@acme.example")][0]
        dovecot.append(raw(mail("alice@acme.example", f"Re: {ack['Subject']}", "It still fails on Monday.",
                                in_reply_to=ack["Message-ID"])))
        assert poller.run_once().processed == 1
    finally:
        poller.close()
    inbound = [m for m in desk.ticket(1)["messages"] if m["direction"] == "inbound"]
    assert [m["text"].strip() for m in inbound] == ["The export fails.", "It still fails on Monday."]
    assert [i["outcome"] for i in desk.inbound()] == ["ticket_created", "reply"]
    assert len(dovecot.messages("Processed")) == 2 and dovecot.messages("INBOX") == []


@pytest.fixture
def served_mailbox(tmp_path, clock, dovecot):
    """`serve` with [imap] configured: the SMTP listener and the poller side by side."""
    extra = dovecot.imap_config(poll_interval_seconds=600.0) + AUTH
    gen = _running_desk(tmp_path, clock, extra)
    desk = next(gen)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    try:
        yield desk
    finally:
        gen.close()


def _ticket_count(desk: Desk) -> int:
    return len(desk.json("ticket", "list"))


@needs_dovecot
def test_idle_brings_new_mail_in_at_once_when_serve_polls(served_mailbox, dovecot):
    # With IDLE, a mail appended while the poller waits is processed within seconds, not at the 600 s poll.
    desk = served_mailbox
    wait_until(lambda: dovecot.folder_exists("Processed"), 10, what="poller connected")
    dovecot.append(raw(mail("alice@acme.example", "Arrives during IDLE", "Hello")))
    wait_until(lambda: _ticket_count(desk) == 1, 20, 0.1, "ticket from IDLE")   # well under the 600 s poll
    wait_until(lambda: len(dovecot.messages("Processed")) == 1, 5, what="moved to Processed")
    code, _ = desk.send(mail("alice@acme.example", "And one by SMTP", "Hi"))   # the listener still answers
    assert code == 250 and _ticket_count(desk) == 2


@needs_dovecot
def test_poller_reconnects_when_dovecot_restarts_during_polling(served_mailbox, dovecot, caplog):
    # Dovecot goes away under the IDLE connection and comes back; the poller reconnects and goes on.
    desk = served_mailbox
    caplog.set_level(logging.WARNING, logger="gateway.imap_poller")
    dovecot.append(raw(mail("alice@acme.example", "Before the restart", "one")))
    wait_until(lambda: _ticket_count(desk) == 1, 10, 0.1, "first ticket")
    dovecot.restart()
    dovecot.append(raw(mail("alice@acme.example", "After the restart", "two")))
    # a dropped IDLE connection is noticed at once, or at the latest when IDLE is re-issued (idle_seconds)
    wait_until(lambda: _ticket_count(desk) == 2, 45, 0.1, "ticket after the restart")
    assert any("retrying" in r.getMessage() for r in caplog.records)
    wait_until(lambda: dovecot.messages("INBOX") == [], 5, what="INBOX emptied")
    assert len(dovecot.messages("Processed")) == 2


CRASH_AFTER_COMMIT = """
import os, sys
from gateway.config import load_settings
from gateway.imap_poller import Poller
from gateway.imap_source import ImapSource
from gateway.service import build_runtime

class DiesBeforeMove(ImapSource):
    def move(self, uid, folder):
        os._exit(70)   # the process dies after the commit, before the message leaves INBOX

settings = load_settings(sys.argv[1])
Poller(build_runtime(settings), lambda: DiesBeforeMove(settings.imap)).run_once()
"""


@needs_dovecot
def test_no_duplicate_ticket_when_the_poller_crashes_between_commit_and_move(tmp_path, clock, dovecot):
    # A process killed after its commit leaves the mail in INBOX; the next pass only moves it.
    desk = make_desk(tmp_path, clock, dovecot)
    dovecot.append(raw(mail("alice@acme.example", "Crash test", "Please help.")))
    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_COMMIT, str(desk.config)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert crashed.returncode == 70, crashed.stderr
    assert len(dovecot.messages("INBOX")) == 1 and _ticket_count(desk) == 1
    again = postdesk(desk.config, "poll", "--once", "--json")
    assert again.returncode == 0, again.stderr
    assert '"duplicates": 1' in again.stdout
    assert _ticket_count(desk) == 1
    assert dovecot.messages("INBOX") == [] and len(dovecot.messages("Processed")) == 1
    assert [i["outcome"] for i in desk.inbound()] == ["ticket_created", "duplicate"]
    assert len(outbox(desk, "ticket_created")) == 1


class FragileRenderer(Renderer):
    """A renderer with a bug that only one message's subject triggers (a stand-in for any pipeline bug)."""

    def render(self, name, locale, context):
        if "POISON" in str(context.get("ticket", {}).get("subject", "")):
            raise RuntimeError("renderer crashed on this message")
        return super().render(name, locale, context)


@needs_dovecot
def test_poison_message_goes_to_failed_and_the_rest_go_on(tmp_path, clock, dovecot):
    # A message whose processing raises is quarantined and moved to Failed; the others are processed.
    desk = make_desk(tmp_path, clock, dovecot)
    renderer = FragileRenderer(default_template_dir())
    desk.runtime.deps = dataclasses.replace(desk.runtime.deps, renderer=renderer)
    for subject in ("First", "POISON pill", "Third"):
        dovecot.append(raw(mail("alice@acme.example", subject, "text")))
    poller = poller_for(desk)
    try:
        report = poller.run_once()
    finally:
        poller.close()
    assert (report.processed, report.failed) == (2, 1)
    assert [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in dovecot.messages("Failed")] == [b"POISON pill"]
    assert len(dovecot.messages("Processed")) == 2 and dovecot.messages("INBOX") == []
    assert sorted(t["subject"] for t in desk.json("ticket", "list")) == ["First", "Third"]
    quarantined = desk.json("inbound", "list", "--outcome", "quarantined")
    assert len(quarantined) == 1 and "renderer crashed" in quarantined[0]["reason"]


@needs_dovecot
def test_wrong_password_is_one_clear_line_and_nothing_moves(tmp_path, clock, dovecot):
    # A bad password ends `poll` with exit 1 and one line naming the login; the mail stays.
    desk = make_desk(tmp_path, clock, dovecot, password="wrong")
    dovecot.append(raw(mail("alice@acme.example", "Waiting", "x")))
    result = postdesk(desk.config, "poll", "--once")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "IMAP login as 'desk'" in lines[0] and "failed" in lines[0]
    assert len(dovecot.messages("INBOX")) == 1


@needs_dovecot
def test_missing_folder_is_one_clear_line_unless_it_may_be_created(tmp_path, clock, dovecot):
    # The folder to read must exist; a target folder is created only when allowed.
    desk = make_desk(tmp_path, clock, dovecot, folder="Support")
    result = postdesk(desk.config, "poll", "--once")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"postdesk: IMAP folder 'Support' does not exist on 127.0.0.1:{dovecot.port} (check [imap] folder)")
    assert "Traceback" not in result.stderr and not dovecot.folder_exists("Processed")
    (tmp_path / "strict").mkdir()
    strict = make_desk(tmp_path / "strict", clock, dovecot, create_folders=False)
    with pytest.raises(MailboxError, match="IMAP folder 'Processed' does not exist"):
        poller_for(strict).run_once()
    assert not dovecot.folder_exists("Processed")


@needs_dovecot
def test_refused_sender_goes_to_rejected_and_gets_one_notice_when_safe(tmp_path, clock, dovecot):
    # Unknown senders land in Rejected; only an authenticated person is told why, once per window.
    desk = make_desk(tmp_path, clock, dovecot)
    trusted = {"Authentication-Results": TRUSTED_PASS.format(domain="stranger.example")}
    dovecot.append(raw(mail("Erika Fremd <erika@stranger.example>", "Need help", "Hi", headers=trusted)))
    dovecot.append(raw(mail("erika@stranger.example", "Need help again", "Hi", headers=trusted)))
    dovecot.append(raw(mail("forged@elsewhere.example", "Unauthenticated", "Hi")))
    dovecot.append(raw(mail("robot@stranger.example", "Via a list", "Hi",
                            headers={**trusted, "List-Id": "<users.lists.stranger.example>"})))
    dovecot.append(raw(mail("daemon@stranger.example", "Automatic", "Hi",
                            headers={**trusted, "Auto-Submitted": "auto-generated"})))
    poller = poller_for(desk)
    try:
        report = poller.run_once()
    finally:
        poller.close()
    assert (report.rejected, report.processed) == (4, 1)   # automatic mail from a stranger is ignored, not refused
    assert len(dovecot.messages("Rejected")) == 4 and dovecot.messages("INBOX") == []
    assert report.outcomes[-1] == "ignored" and len(dovecot.messages("Processed")) == 1
    notices = outbox(desk, "sender_refused")
    assert [n["to"] for n in notices] == [["erika@stranger.example"]]
    sent = desk.delivered("erika@stranger.example")[0]
    assert sent["Auto-Submitted"] == "auto-replied" and "no service account" in sent.get_content()
    assert "Hello Erika Fremd," in sent.get_content()
    reasons = [i["reason"] for i in desk.inbound()]
    assert "notice sent" in reasons[0] and "was answered at" in reasons[1]
    assert "not authenticated" in reasons[2] and "no notice: automatic mail (list-id" in reasons[3]
    assert _ticket_count(desk) == 0


@needs_dovecot
def test_large_mailbox_is_processed_in_batches_with_progress(tmp_path, clock, dovecot, caplog):
    # 12 waiting mails, batches of 5: every one processed, progress logged per batch.
    desk = make_desk(tmp_path, clock, dovecot, batch_size=5)
    caplog.set_level(logging.INFO, logger="gateway.imap_poller")
    with dovecot.client() as client:
        for n in range(12):
            client.append("INBOX", raw(mail("alice@acme.example", f"Question {n}", "text")))
    poller = poller_for(desk)
    try:
        assert poller.run_once().processed == 12
    finally:
        poller.close()
    progress = [r.getMessage() for r in caplog.records if "messages handled" in r.getMessage()]
    assert progress == ["IMAP INBOX: 5 of 12 messages handled", "IMAP INBOX: 10 of 12 messages handled",
                        "IMAP INBOX: 12 of 12 messages handled"]
    assert _ticket_count(desk) == 12


@needs_dovecot
def test_folder_rebuilt_with_new_uidvalidity_is_rescanned(tmp_path, clock, dovecot, caplog):
    # The folder is deleted and created again (new UIDVALIDITY): the poller notices and reads it afresh.
    desk = make_desk(tmp_path, clock, dovecot, folder="Support")
    with dovecot.client() as client:
        client.create_folder("Support")
    dovecot.append(raw(mail("alice@acme.example", "Before", "x")), "Support")
    poller = poller_for(desk)
    caplog.set_level(logging.WARNING, logger="gateway.imap_poller")
    try:
        assert poller.run_once().processed == 1
        with dovecot.client() as client:
            client.delete_folder("Support")
            client.create_folder("Support")
        dovecot.append(raw(mail("alice@acme.example", "After", "y")), "Support")
        assert poller.run_once().processed == 1
    finally:
        poller.close()
    assert any("UIDVALIDITY changed" in r.getMessage() for r in caplog.records)
    assert _ticket_count(desk) == 2


def test_stop_event_ends_the_loop_when_no_server_is_reachable(tmp_path, clock):
    # With the server unreachable the loop backs off and still stops promptly when asked.
    config = write_config(tmp_path, "[imap]\nusername = \"x\"\nport = 1\nreconnect_initial_seconds = 0.1\n")
    desk = Desk(config, clock)
    stop = threading.Event()
    poller = poller_for(desk)
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


@needs_dovecot
def test_oauth2_token_is_refused_with_one_line_when_the_server_offers_no_oauth(tmp_path, clock, dovecot,
                                                                                monkeypatch):
    # With an access token configured but no OAUTHBEARER/XOAUTH2 on offer, the error says so instead of guessing.
    monkeypatch.setenv("POSTDESK_TEST_TOKEN", "ya29.token")
    desk = make_desk(tmp_path, clock, dovecot, oauth2_token_env="POSTDESK_TEST_TOKEN")
    with pytest.raises(MailboxError) as error:
        poller_for(desk).run_once()
    assert str(error.value) == (f"the IMAP server 127.0.0.1:{dovecot.port} offers no OAuth2 login "
                                "(OAUTHBEARER or XOAUTH2); use a password instead")


@needs_dovecot
def test_password_from_the_environment_wins_over_the_file(tmp_path, clock, dovecot, monkeypatch):
    # password_env names a variable; its value is used, so the file can hold no secret.
    from tests.mailservers import PASSWORD
    monkeypatch.setenv("POSTDESK_TEST_IMAP_PASSWORD", PASSWORD)
    desk = make_desk(tmp_path, clock, dovecot, password="not-this-one", password_env="POSTDESK_TEST_IMAP_PASSWORD")
    dovecot.append(raw(mail("alice@acme.example", "Env password", "x")))
    poller = poller_for(desk)
    try:
        assert poller.run_once().processed == 1
    finally:
        poller.close()


@needs_dovecot
def test_folder_created_by_another_client_between_check_and_create_is_used(tmp_path, clock, dovecot):
    # Two clients ensuring the same folder race: the loser's CREATE gets [ALREADYEXISTS]; that is no error.
    desk = make_desk(tmp_path, clock, dovecot)
    source = ImapSource(desk.settings.imap)
    source.open()
    try:
        client = source._client()
        real_exists, seen = client.folder_exists, []

        def exists_then_created_elsewhere(name):
            if not seen:   # the check finds nothing; right after it another client creates the folder
                seen.append(name)
                with dovecot.client() as other:
                    other.create_folder(name)
                return False
            return real_exists(name)

        client.folder_exists = exists_then_created_elsewhere
        source.ensure_folder("Archive", create=True)
    finally:
        source.close()
    assert seen == ["Archive"] and dovecot.folder_exists("Archive")
