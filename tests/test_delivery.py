"""Delivery: a real aiosmtpd relay on loopback, and a Maildir read back with mailbox."""

from __future__ import annotations

import mailbox
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from gateway.composer import compose
from gateway.delivery import DeliveryError, deliver_to_maildir, deliver_via_smtp, maildir_key
from gateway.rendering import RenderedMail

SENDER = "bounces@desk.example.com"
RECIPIENT = "jana.mueller@kunde.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def message(subject: str = "[#1042] AW: Größe ändern", message_id: str = "<n1@desk.example.com>") -> bytes:
    rendered = RenderedMail(subject, "Guten Tag,\n\nÄnderung übernommen.\n.\n.leading dot\n", None)
    return compose(rendered, from_addr="support@desk.example.com", from_name="Postdesk Support",
                   to_addr=RECIPIENT, to_name="Jana Müller", reply_to="support+1042-ab@desk.example.com",
                   message_id=message_id, in_reply_to=None, references=[],
                   date=datetime(2026, 11, 27, 13, 5, tzinfo=timezone.utc))


# --- relays -------------------------------------------------------------------------


class Collecting:
    """Accepts everything and keeps the envelopes (aiosmtpd handler)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 2.0.0 Queued"


class RefuseRecipients(Collecting):
    """Answers ``reply`` at RCPT for every address in ``refused`` (all when None)."""

    def __init__(self, reply: str, refused: set[str] | None = None) -> None:
        super().__init__()
        self.reply, self.refused = reply, refused

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if self.refused is None or address in self.refused:
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"


class RefuseData(Collecting):
    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return self.reply


@pytest.fixture
def relay() -> Iterator[Any]:
    """Start a loopback relay with the given handler; stopped after the test."""
    started: list[Controller] = []

    def start(handler: Any) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


# --- SMTP ---------------------------------------------------------------------------


def test_relay_receives_message_and_envelope_when_it_accepts(relay: Any) -> None:
    # The relay gets exactly our bytes (dot-stuffing undone) and the envelope we gave.
    handler = Collecting()
    raw = message()
    deliver_via_smtp("127.0.0.1", relay(handler), SENDER, [RECIPIENT], raw, timeout=5)
    [envelope] = handler.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == [RECIPIENT]
    assert envelope.content.rstrip(b"\r\n") == raw.rstrip(b"\r\n")


def test_bare_lf_is_sent_as_crlf_when_raw_uses_unix_line_ends(relay: Any) -> None:
    # A message read back from a Maildir (LF) still goes out with CRLF only.
    handler = Collecting()
    deliver_via_smtp("127.0.0.1", relay(handler), SENDER, [RECIPIENT], message().replace(b"\r\n", b"\n"))
    content = handler.envelopes[0].content
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert b"Subject: [#1042] AW:" in content


def test_null_sender_is_allowed(relay: Any) -> None:
    # The null reverse-path is allowed for mail that must not bounce.
    handler = Collecting()
    deliver_via_smtp("127.0.0.1", relay(handler), "", [RECIPIENT], message())
    assert handler.envelopes[0].mail_from in ("", "<>")


def test_temporary_error_when_relay_answers_451(relay: Any) -> None:
    # A 4xx at RCPT means: keep the mail and retry later.
    port = relay(RefuseRecipients("451 4.3.0 Try again later"))
    with pytest.raises(DeliveryError) as caught:
        deliver_via_smtp("127.0.0.1", port, SENDER, [RECIPIENT], message())
    assert caught.value.permanent is False
    assert "451 4.3.0 Try again later" in caught.value.reason
    assert caught.value.recipients == (RECIPIENT,)


def test_permanent_error_with_server_reply_when_relay_answers_550(relay: Any) -> None:
    # A 5xx is final, and the relay's words are kept as the reason.
    port = relay(RefuseRecipients("550 5.1.1 No such user here"))
    with pytest.raises(DeliveryError) as caught:
        deliver_via_smtp("127.0.0.1", port, SENDER, [RECIPIENT], message())
    assert caught.value.permanent is True
    assert caught.value.reason == f"{RECIPIENT}: 550 5.1.1 No such user here"


@pytest.mark.parametrize("reply,permanent", [("451 4.3.0 Queue full", False), ("554 5.6.0 Rejected", True)])
def test_error_class_follows_reply_when_relay_refuses_data(relay: Any, reply: str, permanent: bool) -> None:
    # After DATA too, 4xx is temporary and 5xx permanent.
    with pytest.raises(DeliveryError) as caught:
        deliver_via_smtp("127.0.0.1", relay(RefuseData(reply)), SENDER, [RECIPIENT], message())
    assert caught.value.permanent is permanent
    assert caught.value.reason == reply


def test_only_refused_recipients_are_reported_when_some_are_accepted(relay: Any) -> None:
    # The accepted recipient has the mail; the error names only the refused one.
    handler = RefuseRecipients("550 5.1.1 Unknown", refused={"gone@kunde.example"})
    port = relay(handler)
    with pytest.raises(DeliveryError) as caught:
        deliver_via_smtp("127.0.0.1", port, SENDER, [RECIPIENT, "gone@kunde.example"], message())
    assert caught.value.recipients == ("gone@kunde.example",)
    assert caught.value.permanent is True
    assert handler.envelopes[0].rcpt_tos == [RECIPIENT]


def test_temporary_error_when_relay_is_down() -> None:
    # Connection refused is temporary: the relay may come back.
    with pytest.raises(DeliveryError) as caught:
        deliver_via_smtp("127.0.0.1", free_port(), SENDER, [RECIPIENT], message(), timeout=2)
    assert caught.value.permanent is False


@pytest.mark.parametrize("bad", ["evil@x.example\r\nRCPT TO:<other@x.example>", "a b@x.example",
                                 "<jana@kunde.example>", "jana@kunde.example>"])
def test_crlf_or_malformed_envelope_is_refused_before_connecting(relay: Any, bad: str) -> None:
    # Nothing reaches the relay: the address check comes before the dialogue.
    handler = Collecting()
    port = relay(handler)
    for sender, rcpts in ((SENDER, [bad]), (bad, [RECIPIENT])):
        with pytest.raises(DeliveryError) as caught:
            deliver_via_smtp("127.0.0.1", port, sender, rcpts, message())
        assert caught.value.permanent is True
    assert handler.envelopes == []


def test_no_recipients_is_a_permanent_error() -> None:
    # An empty recipient list cannot succeed on retry.
    with pytest.raises(DeliveryError) as caught:
        deliver_via_smtp("127.0.0.1", free_port(), SENDER, [], message())
    assert caught.value.permanent is True


# --- Maildir ------------------------------------------------------------------------


def test_maildir_is_created_and_message_readable_when_delivered(tmp_path: Path) -> None:
    # cur/new/tmp appear; the message reads back with the stdlib; tmp/ is left empty.
    folder = tmp_path / "outbox"
    path = deliver_to_maildir(folder, "outbox-1", message())
    assert {p.name for p in folder.iterdir()} == {"cur", "new", "tmp"}
    assert path.parent == folder / "new" and path.name.startswith("outbox-1.")
    assert list((folder / "tmp").iterdir()) == []
    box = mailbox.Maildir(folder, create=False)
    [stored] = list(box)
    assert stored["Message-ID"] == "<n1@desk.example.com>"
    assert b"\r\n" not in path.read_bytes()


def test_same_key_is_delivered_once_when_retried(tmp_path: Path) -> None:
    # A retry after a crash finds the earlier file and writes nothing new.
    first = deliver_to_maildir(tmp_path, "outbox-7", message())
    again = deliver_to_maildir(tmp_path, "outbox-7", message(subject="[#1] changed"))
    assert again == first
    assert len(mailbox.Maildir(tmp_path, create=False)) == 1


def test_same_key_is_delivered_once_when_already_read(tmp_path: Path) -> None:
    # A mail client moved it to cur/ with flags; the key still matches.
    first = deliver_to_maildir(tmp_path, "outbox-8", message())
    read = tmp_path / "cur" / f"{first.name}:2,S"
    os.rename(first, read)
    assert deliver_to_maildir(tmp_path, "outbox-8", message()) == read
    assert len(mailbox.Maildir(tmp_path, create=False)) == 1


def test_keys_that_share_a_prefix_are_distinct(tmp_path: Path) -> None:
    # "12" must not be mistaken for "123" nor "12.5" for "12".
    for key in ("123", "12", "12.5", "12-5"):
        deliver_to_maildir(tmp_path, key, message(message_id=f"<{key}@desk.example.com>"))
    box = mailbox.Maildir(tmp_path, create=False)
    assert sorted(m["Message-ID"] for m in box) == sorted(
        f"<{k}@desk.example.com>" for k in ("123", "12", "12.5", "12-5"))


def test_unsafe_key_becomes_a_safe_file_name(tmp_path: Path) -> None:
    # Slashes, colons and dots in a key cannot escape new/ or confuse Maildir.
    path = deliver_to_maildir(tmp_path, "<a/b:c@x>/../..", message())
    assert path.parent == tmp_path / "new"
    stem = path.name.split(".")[0]
    assert stem == maildir_key("<a/b:c@x>/../..")
    assert all(ch.isalnum() or ch in "=_-" for ch in stem)
    assert deliver_to_maildir(tmp_path, "<a/b:c@x>/../..", message()) == path


def test_very_long_key_is_shortened_and_stays_idempotent(tmp_path: Path) -> None:
    # Keys longer than a file name allows still map to one file.
    key = "<" + "x" * 400 + "@desk.example.com>"
    path = deliver_to_maildir(tmp_path, key, message())
    assert len(path.name) < 200
    assert deliver_to_maildir(tmp_path, key, message()) == path


def test_temporary_error_when_maildir_cannot_be_created(tmp_path: Path) -> None:
    # A folder that cannot be written is a temporary failure.
    blocker = tmp_path / "outbox"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(DeliveryError) as caught:
        deliver_to_maildir(blocker, "outbox-1", message())
    assert caught.value.permanent is False
