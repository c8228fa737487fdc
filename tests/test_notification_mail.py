"""What arrives in the Maildir: onboarding, followers, email commands, digests, signed Message-IDs.

Each test drives the running gateway (SMTP and CLI) and parses the delivered mails: recipients,
locale, subject, thread headers, Reply-To, Auto-Submitted, List-Unsubscribe, and that nobody
gets a copy they should not.
"""
from __future__ import annotations

import re
from email.utils import getaddresses, parseaddr

from gateway.tokens import Signer
from storage.db import transaction
from storage.models import MessageRecord
from tests.conftest import SUPPORT, mail

FOLLOW = "support+follow@desk.example.com"
UNFOLLOW = "support+unfollow@desk.example.com"
LIST = "support+list@desk.example.com"


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def command(desk, sender: str, address: str, subject: str = "", body: str = "", **kw):
    return desk.send(mail(sender, subject, body or " ", to=address, **kw), rcpts=[address])


def open_ticket(desk, sender="alice@acme.example", subject="Export fails", body="The export fails.", **kw) -> int:
    assert desk.send(mail(sender, subject, body, **kw))[0] == 250
    return desk.inbound()[-1]["ticket"]


def signer_of(desk) -> Signer:
    return desk.runtime.deps.signer


# --- onboarding -----------------------------------------------------------------------------


def test_main_contact_gets_invitation_in_org_locale_when_org_is_added(desk):
    # `org add` invites the main contact in the organisation's language, explaining the email commands.
    desk.cli("org", "add", "Müller GmbH", "--package", "bronze", "--main-contact", "jana@mueller.example",
             "--contact-name", "Jana Müller", "--locale", "de")
    [invite] = desk.delivered("jana@mueller.example")
    assert invite["Subject"] == "Müller GmbH ist beim Postdesk-Support eingerichtet – Ihre Einladung"
    assert parseaddr(invite["To"]) == ("Jana Müller", "jana@mueller.example")
    assert parseaddr(invite["Reply-To"])[1] == SUPPORT
    assert invite["Auto-Submitted"] == "auto-generated"
    assert signer_of(desk).verify_message_id(invite["Message-ID"], "jana@mueller.example") == 0
    body = text_of(invite)
    assert body.startswith("Guten Tag Jana Müller,")
    for needle in ("Typ: Störung", "Priorität: hoch", FOLLOW, UNFOLLOW, LIST, "Hauptansprechpartner", "3"):
        assert needle in body
    assert desk.json("outbox", "list")[0]["template"] == "invitation"


def test_new_accounts_are_welcomed_when_added_or_imported_and_not_with_no_mail(desk, tmp_path):
    # Every new account hears what it can do by email; `--no-mail` and a failed import send nothing.
    desk.cli("org", "add", "ACME", "--package", "gold", "--main-contact", "alice@acme.example", "--no-mail")
    desk.cli("account", "add", "carol@acme.example", "--org", "ACME", "--name", "Carol", "--locale", "de")
    desk.cli("account", "add", "quiet@acme.example", "--org", "ACME", "--no-mail")
    good = tmp_path / "good.csv"
    good.write_text("email,name,locale\ndan@acme.example,Dan,en\nerin@acme.example,Erin,de\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("fay@acme.example,Fay,en\ninfo@acme.example,Team,en\n", encoding="utf-8")
    desk.cli("account", "import", str(good), "--org", "ACME")
    desk.cli("account", "import", str(bad), "--org", "ACME", expect=1)
    sent = {m["To"].addresses[0].addr_spec: m for m in desk.delivered()}
    assert set(sent) == {"carol@acme.example", "dan@acme.example", "erin@acme.example"}
    assert sent["carol@acme.example"]["Subject"] == "Ihr Servicekonto beim Postdesk-Support für ACME"
    assert sent["dan@acme.example"]["Subject"] == "Your service account at Postdesk Support for ACME"
    assert "alice@acme.example" in text_of(sent["dan@acme.example"])   # the main contact is named
    assert "Follow your organisation" in text_of(sent["dan@acme.example"])


# --- followers ------------------------------------------------------------------------------


def test_follower_gets_new_tickets_with_list_headers_and_never_a_second_copy(acme):
    # Carol follows ACME: a colleague's new ticket reaches her once, in German, unsubscribable;
    # the author, a CC and other organisations get no follower copy.
    acme.cli("account", "follow", "carol@acme.example")
    acme.cli("account", "follow", "bob@globex.example")
    acme.cli("account", "add", "dave@acme.example", "--org", "ACME", "--name", "Dave")
    acme.cli("account", "follow", "dave@acme.example")
    acme.cli("account", "follow", "alice@acme.example")
    number = open_ticket(acme, body="Type: problem\nPriority: high\n\nThe export shows a red error.",
                         cc="dave@acme.example")
    [carol] = acme.delivered("carol@acme.example")
    assert carol["Subject"] == f"[#{number}] Neues Ticket von ACME: Export fails"
    assert carol["List-Unsubscribe"] == f"<mailto:{UNFOLLOW}?subject=unfollow>"
    assert re.fullmatch(r"ACME new tickets <org-\d+\.followers\.desk\.example\.com>", carol["List-Id"])
    assert carol["Auto-Submitted"] == "auto-generated"
    assert parseaddr(carol["Reply-To"])[1].startswith(f"support+{number}-")   # the ticket's signed address
    assert "red error" in text_of(carol) and "Guten Tag Carol Köhler," in text_of(carol)
    # Dave is CC: one mail (the acknowledgment), no follower copy; Alice wrote it: acknowledgment only.
    assert [m["Subject"] for m in acme.delivered("dave@acme.example")] == [f"[#{number}] Your request: Export fails"]
    assert [m["Subject"] for m in acme.delivered("alice@acme.example")] == [f"[#{number}] Your request: Export fails"]
    assert acme.delivered("bob@globex.example") == []
    assert {o["template"] for o in acme.json("outbox", "list")} >= {"follower_new_ticket"}


def test_follower_reply_to_the_announcement_joins_the_ticket(acme):
    # The follower mail threads like any ticket mail: a reply lands on the ticket and reopens nothing odd.
    acme.cli("account", "follow", "carol@acme.example")
    number = open_ticket(acme)
    [note] = acme.delivered("carol@acme.example")
    acme.send(mail("carol@acme.example", f"Re: {note['Subject']}", "We see it too.", in_reply_to=note["Message-ID"]))
    record = acme.inbound()[-1]
    assert (record["outcome"], record["ticket"]) == ("reply", number)
    assert "In-Reply-To" in record["reason"]


def test_follow_and_unfollow_by_email_are_confirmed_and_open_no_ticket(acme):
    # A mail to the follow address sets the flag and is answered; the unfollow address from the
    # List-Unsubscribe header clears it again; neither becomes a ticket.
    command(acme, "carol@acme.example", FOLLOW, message_id="<follow-1@acme.example>")
    assert acme.json("account", "list", "--org", "ACME")[1]["follows"] is True
    [confirmation] = acme.delivered("carol@acme.example")
    assert confirmation["Subject"] == "Sie folgen ACME"
    assert confirmation["In-Reply-To"] == "<follow-1@acme.example>"
    assert confirmation["Auto-Submitted"] == "auto-replied"
    assert parseaddr(confirmation["Reply-To"])[1] == SUPPORT
    record = acme.inbound()[-1]
    assert record["ticket"] is None and "command-follow: carol@acme.example now follows ACME" in record["reason"]
    number = open_ticket(acme)
    announcement = acme.delivered("carol@acme.example")[-1]
    target = re.fullmatch(r"<mailto:([^?>]+)\?subject=(\w+)>", announcement["List-Unsubscribe"])
    command(acme, "carol@acme.example", target[1], subject=target[2])
    assert acme.json("account", "list", "--org", "ACME")[1]["follows"] is False
    assert acme.delivered("carol@acme.example")[-1]["Subject"] == "Sie folgen ACME nicht mehr"
    open_ticket(acme, subject="Second question")
    assert len(acme.delivered("carol@acme.example")) == 3   # no announcement of the second ticket
    assert [t["number"] for t in acme.json("ticket", "list")] == [number, number + 1]


def test_commands_are_not_run_for_automatic_mail_or_agents(acme):
    # An auto-reply to a command address changes nothing and is not answered; agents have no lists.
    command(acme, "carol@acme.example", FOLLOW, subject="Automatische Antwort: Abwesend",
            headers={"Auto-Submitted": "auto-replied"})
    command(acme, "sam@vendor.example", LIST, subject="mine")
    assert acme.json("account", "list", "--org", "ACME")[1]["follows"] is False
    assert acme.delivered() == []
    reasons = [r["reason"] for r in acme.inbound()]
    assert "command-automatic" in reasons[0] and "command-agent" in reasons[1]
    assert acme.json("ticket", "list") == []


# --- digests --------------------------------------------------------------------------------


def test_digest_lists_my_cc_and_org_requests_with_status_and_last_activity(acme, clock):
    # The list address answers with the views asked for, in the sender's language, own organisation only.
    first = open_ticket(acme, subject="Export fails")
    clock.advance(hours=2)
    second = open_ticket(acme, sender="carol@acme.example", subject="Neue Benutzer", cc="alice@acme.example")
    other = open_ticket(acme, sender="bob@globex.example", subject="Globex secret")
    acme.send(mail("sam@vendor.example", f"Re: [#{first}] Export fails", "#status solved\nFixed."))
    command(acme, "alice@acme.example", LIST, subject="mine", message_id="<list-1@acme.example>")
    digest = acme.delivered("alice@acme.example")[-1]
    body = text_of(digest)
    assert digest["Subject"] == "Your list: your requests"
    assert digest["In-Reply-To"] == "<list-1@acme.example>" and digest["Auto-Submitted"] == "auto-replied"
    assert f"#{first}  Export fails" in body and "Solved" in body and "last activity 2 Mar 2026" in body
    assert f"#{second}" not in body
    command(acme, "alice@acme.example", LIST, subject="cc")
    assert f"#{second}  Neue Benutzer" in text_of(acme.delivered("alice@acme.example")[-1])
    command(acme, "carol@acme.example", LIST, subject="Liste bitte", body="firma\n")
    german = acme.delivered("carol@acme.example")[-1]
    assert german["Subject"] == "Ihre Liste: Anfragen von ACME"
    assert f"#{first}" in text_of(german) and f"#{second}" in text_of(german) and "Gelöst" in text_of(german)
    command(acme, "alice@acme.example", LIST)
    everything = text_of(acme.delivered("alice@acme.example")[-1])
    for title in ("Your requests", "Requests you are in copy of", "All requests of ACME"):
        assert title in everything
    for message in acme.delivered():   # no one of ACME ever reads about Globex's ticket
        if "@acme.example" in str(message["To"]):
            assert "Globex secret" not in text_of(message)
    assert acme.delivered("bob@globex.example")[-1]["Subject"].startswith(f"[#{other}]")


# --- Message-IDs, subjects, automatic senders ------------------------------------------------


def test_our_message_id_threads_only_when_its_signature_verifies(acme):
    # A reply naming our Message-ID threads by it; an altered signature does not, and says why.
    number = open_ticket(acme, subject="Signed ids")
    ack = acme.delivered("alice@acme.example")[0]
    mid = ack["Message-ID"]
    forged = re.sub(r"\.([a-z2-7]{16})@", lambda m: "." + ("a" if m[1][0] != "a" else "b") + m[1][1:] + "@", mid)
    assert forged != mid and signer_of(acme).is_own_message_id(forged)
    acme.send(mail("alice@acme.example", "Re: something", "forged reference", in_reply_to=forged))
    record = acme.inbound()[-1]
    assert record["outcome"] == "ticket_created" and record["ticket"] != number
    assert f"Message-ID {forged} is not one we signed" in record["reason"]
    acme.send(mail("alice@acme.example", "Re: something", "genuine reference", in_reply_to=mid))
    assert (acme.inbound()[-1]["outcome"], acme.inbound()[-1]["ticket"]) == ("reply", number)
    with transaction(acme.runtime.engine) as session:   # the record says it went to someone else
        for row in session.query(MessageRecord).filter(MessageRecord.message_id == mid):
            row.recipient = "carol@acme.example"
    acme.send(mail("alice@acme.example", "Re: something", "same id, other recipient", in_reply_to=mid))
    assert acme.inbound()[-1]["outcome"] == "ticket_created"
    assert f"Message-ID {mid} is not one we signed" in acme.inbound()[-1]["reason"]


def test_signed_message_id_identifies_ticket_and_recipient_when_the_record_is_gone(acme):
    # Even without the stored copy, an id signed for the sender names the ticket; for another
    # person it does not.
    number = open_ticket(acme, subject="Lost record")
    ack = acme.delivered("alice@acme.example")[0]
    with transaction(acme.runtime.engine) as session:
        for row in session.query(MessageRecord).filter(MessageRecord.message_id == ack["Message-ID"]):
            session.delete(row)
    acme.send(mail("carol@acme.example", "Re: x", "not mine", in_reply_to=ack["Message-ID"]))
    assert acme.inbound()[-1]["ticket"] != number
    acme.send(mail("alice@acme.example", "Re: x", "mine", in_reply_to=ack["Message-ID"]))
    assert (acme.inbound()[-1]["outcome"], acme.inbound()[-1]["ticket"]) == ("reply", number)


def test_stacked_reply_prefixes_become_one_clean_re(acme):
    # However the customer's client prefixed the subject, our answer says "Re:" once.
    number = open_ticket(acme, subject="AW: RE: Re: Fwd: Export fails")
    acme.send(mail("alice@acme.example", f"AW: RE: Re: [#{number}] AW: Export fails", "More details."))
    acme.send(mail("sam@vendor.example", f"RE: AW: [#{number}] Export fails", "Please try 4.2.1."))
    answer = acme.delivered("alice@acme.example")[-1]
    assert answer["Subject"] == f"[#{number}] Re: Export fails"
    assert answer["Thread-Topic"] == "Export fails"
    assert answer["References"].split()[0] == acme.ticket(number)["messages"][0]["message_id"]


def test_agent_out_of_office_reply_reaches_no_customer(acme):
    # An agent's automatic reply threads as an internal note: no mail, no status change.
    number = open_ticket(acme)
    notice = acme.delivered("sam@vendor.example")[0]
    before = len(acme.delivered())
    acme.send(mail("sam@vendor.example", f"Automatic reply: {notice['Subject']}", "I am out until Monday.",
                   in_reply_to=notice["Message-ID"], headers={"Auto-Submitted": "auto-replied"}))
    ticket = acme.ticket(number)
    assert ticket["status"] == "open" and ticket["messages"][-1]["internal"] is True
    assert len(acme.delivered()) == before


# --- header injection -----------------------------------------------------------------------


def test_crlf_in_subject_and_display_name_never_makes_a_header(acme):
    # Encoded CR/LF in a customer's subject and name, and in an account name, stay inside one header.
    raw = (b"From: =?utf-8?q?Alice=0D=0ABcc:_evil@evil.example?= <alice@acme.example>\r\n"
           b"To: support@desk.example.com\r\nCc: carol@acme.example\r\n"
           b"Subject: =?utf-8?q?Export=0D=0ABcc:_evil@evil.example=0D=0A=0D=0Abody?=\r\n"
           b"Message-ID: <inject-1@acme.example>\r\n\r\nHello\r\n")
    acme.send(raw, sender="alice@acme.example")
    acme.cli("account", "add", "eve@acme.example", "--org", "ACME", "--name", "Eve\r\nBcc: evil@evil.example")
    acme.cli("account", "follow", "eve@acme.example")
    open_ticket(acme, subject="Second")
    sent = acme.delivered(include_setup=True)
    assert sent
    for message in sent:
        assert message["Bcc"] is None
        recipients = [addr for _, addr in getaddresses(message.get_all("To", []) + message.get_all("Cc", []))]
        assert "evil@evil.example" not in recipients
        assert "\n" not in message["Subject"] and "\n" not in str(message["To"])
