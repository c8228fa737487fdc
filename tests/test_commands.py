"""Pure pieces of notifications: email commands, follower audience, template files, reply prefixes."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway.commands import Command, find_command, list_scopes, list_unsubscribe
from gateway.notifications import MessageFacts, Recipient, TicketFacts, plan
from gateway.subjects import single_reply_prefix
from gateway.template_files import format_template, merge, parse_template
from gateway.tokens import Signer

SUPPORT = "support@desk.example.com"


@pytest.mark.parametrize("recipients,subject,expected", [
    (["support+follow@desk.example.com"], "", Command("follow", "support+follow@desk.example.com")),
    (["Support+UNFOLLOW@Desk.Example.com"], "x", Command("unfollow", "support+unfollow@desk.example.com")),
    ([SUPPORT, "support+list@desk.example.com"], "meine", Command("list", "support+list@desk.example.com",
                                                                   ("mine",))),
    ([SUPPORT], "follow", None),                                  # a subject alone is no command
    (["support+12-abcdefghijklmnop@desk.example.com"], "", None),  # a ticket token
    (["support+follow@other.example"], "", None),                  # another domain
    (["support+followme@desk.example.com"], "", None),
])
def test_command_is_found_only_at_a_command_address(recipients, subject, expected):
    # Only the documented plus-addresses of our own support address are commands.
    assert find_command(recipients, SUPPORT, subject, "") == expected


@pytest.mark.parametrize("subject,text,scopes", [
    ("", "", ("mine", "cc", "org")),
    ("mine", "", ("mine",)),
    ("Re: my requests please", "", ("mine",)),
    ("CC", "", ("cc",)),
    ("Kopie und Firma", "", ("cc", "org")),
    ("", "\n\n  organisation\nmine", ("org",)),      # only the first non-empty line of the text counts
    ("Liste", "Bitte meine Anfragen", ("mine",)),
    ("organization-wide list", "", ("org",)),
])
def test_list_scopes_come_from_subject_and_first_line(subject, text, scopes):
    # English and German words pick the lists; no word means all three.
    assert list_scopes(subject, text) == scopes


def test_list_unsubscribe_is_a_mailto_url_of_the_unfollow_address():
    # RFC 2369: angle brackets around a mailto: URL; the subject makes the intent plain.
    assert list_unsubscribe(SUPPORT) == "<mailto:support+unfollow@desk.example.com?subject=unfollow>"


def person(email: str, kind: str = "follower") -> Recipient:
    return Recipient(email, "", "en", kind)


def facts(followers: tuple[Recipient, ...], ccs: tuple[Recipient, ...] = ()) -> TicketFacts:
    return TicketFacts(number=7, subject="S", status="open", type="problem", priority=None, module=None,
                       organization="ACME", requester=person("req@acme.example", "requester"), ccs=ccs,
                       created_at=datetime(2026, 3, 2, tzinfo=timezone.utc), followup_of=None,
                       reply_address="support+7-x@desk.example.com", followers=followers)


@pytest.mark.parametrize("followers,ccs,author,told", [
    (("f1@acme.example",), (), "req@acme.example", ["f1@acme.example"]),
    (("REQ@acme.example", "f1@acme.example"), (), "req@acme.example", ["f1@acme.example"]),   # the author
    (("cc@acme.example",), ("cc@acme.example",), "req@acme.example", []),                     # already a CC
    (("f1@acme.example", "F1@acme.example"), (), "req@acme.example", ["f1@acme.example"]),   # once
    (("f1@acme.example",), (), "f1@acme.example", []),      # a follower who wrote it themselves
])
def test_followers_are_told_once_and_never_the_author_or_a_ticket_participant(followers, ccs, author, told):
    # The follower audience leaves out whoever already gets the ticket's mail or caused it.
    ticket = facts(tuple(person(f) for f in followers), tuple(person(c, "cc") for c in ccs))
    notes = plan(["follower_new_ticket"], ticket, MessageFacts(author, "", "text"), [],
                 author=person(author, "customer"))
    assert [n.recipient.email for n in notes] == told
    assert all(n.template == "follower_new_ticket" and n.context["message"]["text"] == "text" for n in notes)


def test_automatic_author_is_told_nothing():
    # Whatever the notices, nobody answers an automatic mail's author.
    ticket = facts(())
    notes = plan(["ticket_created"], ticket, MessageFacts("req@acme.example", "", "x"), [],
                 author=person("req@acme.example", "requester"), author_automatic=True)
    assert notes == []


@pytest.mark.parametrize("text,expected", [
    ("=== subject ===\nS\n=== text ===\nT\n=== html ===\n<p>H</p>\n",
     {"subject.txt": "S\n", "body.txt": "T\n", "body.html": "<p>H</p>\n"}),
    ("=== subject ===\nOnly the subject\n", {"subject.txt": "Only the subject\n", "body.txt": None, "body.html": None}),
    ("Subject: Hi\nBody\n", {"subject.txt": "Hi\n", "body.txt": "Body\n", "body.html": ""}),
    ("Body only\r\nline 2\r\n", {"subject.txt": None, "body.txt": "Body only\nline 2\n", "body.html": ""}),
    ("=== text ===\nT\n=== html ===\n", {"subject.txt": None, "body.txt": "T\n", "body.html": ""}),
])
def test_template_file_parts(text, expected):
    # Markers, a Subject: line or a bare body; a text without HTML means no HTML part.
    assert parse_template(text) == expected


@pytest.mark.parametrize("text", ["junk\n=== text ===\nT\n", "=== text ===\nA\n=== text ===\nB\n"])
def test_template_file_with_stray_text_or_a_part_twice_is_refused(text):
    # An ambiguous file is an error, never a guess.
    with pytest.raises(ValueError):
        parse_template(text)


def test_template_file_round_trips_and_merges_over_what_is_in_force():
    # What format_template writes, parse_template reads back; parts not given keep the old ones.
    parts = {"subject.txt": "[#{{ ticket.number }}] S\n", "body.txt": "T\n", "body.html": "<p>H</p>\n"}
    assert parse_template(format_template(parts)) == parts
    assert merge(parts, parse_template("=== subject ===\nNew\n")) == {**parts, "subject.txt": "New\n"}


@pytest.mark.parametrize("subject,expected", [
    ("[#3] Re: Export", "[#3] Re: Export"),
    ("[#3] Re: AW: RE: Export", "[#3] Re: Export"),
    ("AW: WG: Antwort: Export", "AW: Export"),
    ("[#3] Solved: Re: Export", "[#3] Solved: Re: Export"),
    ("Export", "Export"),
])
def test_single_reply_prefix(subject, expected):
    # Stacked reply markers after the tag collapse to the first; other words stay.
    assert single_reply_prefix(subject) == expected


def test_message_id_verifies_only_for_its_recipient():
    # The signature binds ticket number, random key and recipient; account mails carry number 0.
    signer = Signer(b"secret")
    mid = signer.message_id(12, "Alice@ACME.example", "desk.example.com")
    assert signer.verify_message_id(mid, "alice@acme.example") == 12
    assert signer.verify_message_id(mid, "carol@acme.example") is None
    assert signer.verify_message_id(mid.replace("<pd.12.", "<pd.13."), "alice@acme.example") is None
    assert Signer(b"other").verify_message_id(mid, "alice@acme.example") is None
    assert signer.verify_message_id(signer.message_id(0, "a@b.example", "d.example"), "a@b.example") == 0
    assert signer.verify_message_id("<abc@example.com>", "alice@acme.example") is None
