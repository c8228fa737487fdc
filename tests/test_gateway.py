"""End to end over a real socket: mail in, tickets and outbox out.

Each test sends mail with smtplib to the gateway listening on loopback and
checks what a person would check: the SMTP reply, the ticket (`ticket show
--json`), the inbound record and the mails delivered to the Maildir.
"""
import email
import smtplib
from datetime import timedelta

import pytest

from tests.conftest import SUPPORT, mail


def open_ticket(desk, sender="alice@acme.example", subject="Export fails", body="The export fails.", **kw):
    code, text = desk.send(mail(sender, subject, body, **kw))
    assert code == 250, text
    return desk.inbound()[-1]["ticket"]


# ---- the SMTP dialogue ------------------------------------------------------------------------

def test_recipient_other_than_support_address_is_refused_at_rcpt(acme):
    with smtplib.SMTP("127.0.0.1", acme.port) as client:
        client.ehlo()
        client.mail("alice@acme.example")
        code, text = client.rcpt("sales@desk.example.com")
        assert code == 550 and text.startswith(b"5.1.1")
        assert client.rcpt("support@other.example")[0] == 550
        assert client.rcpt("SUPPORT@desk.example.com")[0] == 250
        assert client.rcpt("support+anything@desk.example.com")[0] == 250


def test_unknown_sender_is_refused_with_reason_and_nothing_is_created(acme):
    code, text = acme.send(mail("mallory@evil.example", "Hi", "Let me in"))
    assert code == 550
    assert text.startswith("5.7.1") and "has no service account" in text
    assert acme.json("ticket", "list") == []
    record = acme.inbound()[-1]
    assert record["outcome"] == "refused" and "no service account" in record["reason"]
    assert record["from"] == "mallory@evil.example"
    assert acme.delivered() == []


def test_shared_sender_is_refused_even_with_an_account_elsewhere(acme):
    code, text = acme.send(mail("info@acme.example", "Hi", "We are the office"))
    assert code == 550 and "shared address" in text
    code, text = acme.send(mail("alice@acme.example", "Digest", "x", headers={"List-Id": "<staff.acme.example>"}))
    assert code == 550 and "mailing list" in text
    assert acme.json("ticket", "list") == []


def test_refused_sender_is_judged_by_from_header_not_envelope(acme):
    code, _ = acme.send(mail("mallory@evil.example", "Hi", "x"), sender="alice@acme.example")
    assert code == 550


# ---- new tickets ------------------------------------------------------------------------------

def test_new_mail_opens_ticket_and_acknowledges(acme):
    number = open_ticket(acme, subject="Export fails", body="Hello,\nthe CSV export fails since today.\n")
    t = acme.ticket(number)
    assert (t["status"], t["type"], t["priority"], t["organization"], t["requester"]) == \
        ("open", "service_request", None, "ACME", "alice@acme.example")
    assert t["subject"] == "Export fails"
    inbound = [m for m in t["messages"] if m["direction"] == "inbound"]
    assert "CSV export fails" in inbound[0]["text"]
    ack = acme.delivered("alice@acme.example")
    assert len(ack) == 1 and f"[#{number}]" in ack[0]["Subject"]
    agents = acme.delivered("sam@vendor.example")
    assert len(agents) == 1 and "CSV export fails" in agents[0].get_body(("plain",)).get_content()


def test_acknowledgment_threads_and_is_marked_automatic(acme):
    msg = mail("alice@acme.example", "Login broken", "Cannot log in.")
    acme.send(msg)
    ack = acme.delivered("alice@acme.example")[0]
    assert ack["Auto-Submitted"] == "auto-generated"
    assert ack["In-Reply-To"] == msg["Message-ID"]
    assert msg["Message-ID"] in ack["References"]
    assert ack["Reply-To"].startswith("support+1-") and ack["Reply-To"].endswith("@desk.example.com")
    assert ack["Message-ID"] and ack["Message-ID"] != msg["Message-ID"]
    assert ack["From"].endswith("<support@desk.example.com>")


@pytest.mark.parametrize("lines, expected", [
    ("Type: problem\nPriority: high\nModule: Reporting", ("problem", "high", "Reporting")),
    ("TYP: Störung\nPriorität: hoch\nModul: reporting", ("problem", "high", "Reporting")),
    ("typ: störung\nprioritaet: blocker\nmodul: nicht sicher", ("problem", "blocker", None)),
    ("Type: service request\nPriority: high", ("service_request", None, None)),
    ("Priority: low", ("service_request", None, None)),
    ("", ("service_request", None, None)),
])
def test_type_priority_module_lines_in_english_and_german(acme, lines, expected):
    number = open_ticket(acme, body=f"{lines}\n\nThe report page shows an error.\n")
    t = acme.ticket(number)
    assert (t["type"], t["priority"], t["module"]) == expected
    assert "Type:" not in t["messages"][0]["text"] and "Priorit" not in t["messages"][0]["text"]


def test_priority_on_service_request_is_ignored_and_the_ack_says_so(acme):
    number = open_ticket(acme, body="Priority: blocker\n\nHow do I add a licence?")
    assert acme.ticket(number)["priority"] is None
    ack = acme.delivered("alice@acme.example")[0].get_body(("plain",)).get_content()
    assert "Priorities only apply to problems" in ack


def test_missing_subject_comes_from_first_line(acme):
    number = open_ticket(acme, subject=None, body="\n\nDashboard stays empty after login\nmore details")
    assert acme.ticket(number)["subject"] == "Dashboard stays empty after login"


def test_cc_of_same_organisation_is_added_others_left_off_and_told(acme):
    number = open_ticket(acme, cc="carol@acme.example, bob@globex.example, stranger@else.example, info@acme.example")
    t = acme.ticket(number)
    assert t["ccs"] == ["carol@acme.example"]
    ack = acme.delivered("alice@acme.example")[0].get_body(("plain",)).get_content()
    for address in ("bob@globex.example", "stranger@else.example", "info@acme.example"):
        assert address in ack
    assert len(acme.delivered("carol@acme.example")) == 1
    for outsider in ("bob@globex.example", "stranger@else.example", "info@acme.example"):
        assert acme.delivered(outsider) == []


def test_cc_acknowledgment_is_in_the_ccs_language(acme):
    open_ticket(acme, cc="carol@acme.example")
    carol = acme.delivered("carol@acme.example")[0]
    alice = acme.delivered("alice@acme.example")[0]
    assert carol["Content-Language"] in (None, "de") and carol.get_body(("plain",)).get_content() != \
        alice.get_body(("plain",)).get_content()


def test_attachments_are_stored_with_size_and_checksum(acme):
    msg = mail("alice@acme.example", "Screenshot", "See attached.")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    msg.add_attachment(png, maintype="image", subtype="png", filename="fehler ä.png")
    msg.add_attachment(b'{"log": {}}', maintype="application", subtype="json", filename="session.har")
    acme.send(msg)
    t = acme.ticket(1)
    files = {a["filename"]: a for a in t["attachments"]}
    assert files["fehler ä.png"]["size"] == len(png) and files["fehler ä.png"]["content_type"] == "image/png"
    import hashlib
    assert files["fehler ä.png"]["sha256"] == hashlib.sha256(png).hexdigest()
    assert files["session.har"]["size"] == 11


# ---- replies and threading ---------------------------------------------------------------------

def test_reply_threads_by_in_reply_to_of_our_acknowledgment(acme):
    number = open_ticket(acme)
    ack = acme.delivered("alice@acme.example")[0]
    acme.send(mail("alice@acme.example", "Re: whatever", "More info.", in_reply_to=ack["Message-ID"]))
    record = acme.inbound()[-1]
    assert (record["outcome"], record["ticket"]) == ("reply", number)
    assert "In-Reply-To" in record["reason"]


def test_reply_threads_by_references_to_the_customers_own_message(acme):
    first = mail("alice@acme.example", "Export", "Broken.")
    acme.send(first)
    acme.send(mail("carol@acme.example", "Re: Export", "Same here.", references=f"<x@y> {first['Message-ID']}"))
    assert acme.inbound()[-1]["ticket"] == 1
    assert acme.inbound()[-1]["outcome"] == "reply"


def test_reply_threads_by_token_when_headers_are_dropped(acme):
    number = open_ticket(acme)
    reply_to = acme.delivered("alice@acme.example")[0]["Reply-To"]
    code, _ = acme.send(mail("alice@acme.example", "no tag here", "Token only."), rcpts=[reply_to])
    assert code == 250
    record = acme.inbound()[-1]
    assert (record["outcome"], record["ticket"]) == ("reply", number)
    assert "token" in record["reason"]


def test_reply_threads_by_subject_tag(acme):
    open_ticket(acme)
    acme.send(mail("alice@acme.example", "AW: [#1] Export fails", "Subject only."))
    assert acme.inbound()[-1]["ticket"] == 1


def test_reply_from_another_organisation_never_lands_on_the_ticket(acme):
    number = open_ticket(acme)
    ack = acme.delivered("alice@acme.example")[0]
    acme.send(mail("bob@globex.example", "Re: [#1] Export fails", "Let me read this.",
                   in_reply_to=ack["Message-ID"]), rcpts=[ack["Reply-To"]])
    record = acme.inbound()[-1]
    assert record["ticket"] != number and record["outcome"] == "ticket_created"
    assert "another organisation" in record["reason"]
    t = acme.ticket(number)
    assert all(m["author"] != "bob@globex.example" for m in t["messages"])
    assert acme.ticket(record["ticket"])["organization"] == "Globex"
    bobs = acme.delivered("bob@globex.example")
    assert all("Export fails" not in m.get_body(("plain",)).get_content() or f"[#{number}]" not in m["Subject"]
               for m in bobs)


def test_colleague_of_same_organisation_may_reply(acme):
    open_ticket(acme)
    acme.send(mail("carol@acme.example", "Re: [#1] Export fails", "I see it too."))
    assert acme.inbound()[-1]["outcome"] == "reply"


def test_quoted_history_is_stripped_but_kept_in_full_text(acme):
    open_ticket(acme)
    body = ("Danke, jetzt klappt es.\n\nAm 02.03.2026 um 10:00 schrieb Postdesk Support <support@desk.example.com>:\n"
            "> Bitte aktualisieren Sie auf 4.2.\n")
    acme.send(mail("alice@acme.example", "AW: [#1] Export fails", body))
    message = [m for m in acme.ticket(1)["messages"] if m["direction"] == "inbound"][-1]
    assert message["text"] == "Danke, jetzt klappt es."
    assert "Bitte aktualisieren" in message["full_text"]


# ---- statuses ---------------------------------------------------------------------------------

def agent_reply(desk, number, body, in_reply_to=None):
    return desk.send(mail("sam@vendor.example", f"Re: [#{number}] Export fails", body, in_reply_to=in_reply_to))


def test_agent_reply_sets_awaiting_and_reaches_requester_and_ccs(acme):
    number = open_ticket(acme, cc="carol@acme.example")
    agent_reply(acme, number, "Please send a HAR file.")
    assert acme.ticket(number)["status"] == "awaiting_reply"
    for person in ("alice@acme.example", "carol@acme.example"):
        last = acme.delivered(person)[-1]
        assert "Please send a HAR file." in last.get_body(("plain",)).get_content()
    acme.send(mail("alice@acme.example", "Re: [#1] Export fails", "Here it is."))
    assert acme.ticket(number)["status"] == "open"


def test_agent_commands_set_fields_and_note_stays_internal(acme):
    number = open_ticket(acme, body="Type: problem\nPriority: low\n\nExport broken.")
    before = len(acme.delivered("alice@acme.example"))
    agent_reply(acme, number, "#priority blocker\n#module Billing\n#note\nCustomer is on an old build.")
    t = acme.ticket(number)
    assert (t["priority"], t["module"], t["status"]) == ("blocker", "Billing", "open")
    note = [m for m in t["messages"] if m["author"] == "sam@vendor.example"][-1]
    assert note["internal"] and note["text"] == "Customer is on an old build."
    assert len(acme.delivered("alice@acme.example")) == before


def test_solve_reopen_within_14_days(acme, clock):
    number = open_ticket(acme)
    agent_reply(acme, number, "#status solved\nFixed in 4.2.1.")
    assert acme.ticket(number)["status"] == "solved"
    solved_mail = acme.delivered("alice@acme.example")[-1]
    assert "Fixed in 4.2.1." in solved_mail.get_body(("plain",)).get_content()
    clock.advance(days=13, hours=23)
    acme.send(mail("alice@acme.example", "Re: [#1] Export fails", "Still broken after the update."))
    assert acme.ticket(number)["status"] == "open"
    assert acme.inbound()[-1]["outcome"] == "reply"


def test_reply_after_14_days_opens_linked_followup_even_before_tick(acme, clock):
    number = open_ticket(acme, body="Type: problem\nPriority: high\nModule: Reporting\n\nBroken.")
    agent_reply(acme, number, "#status solved\nFixed.")
    clock.advance(days=14, seconds=1)
    acme.send(mail("alice@acme.example", "Re: [#1] Export fails", "It is back."))
    record = acme.inbound()[-1]
    assert record["outcome"] == "followup_created"
    new = acme.ticket(record["ticket"])
    assert new["followup_of"] == number and new["status"] == "open"
    assert (new["type"], new["priority"], new["module"]) == ("problem", "high", "Reporting")
    assert acme.ticket(number)["status"] == "solved"
    assert "It is back." in new["messages"][0]["text"]


def test_tick_closes_solved_tickets_after_14_days_and_reply_then_opens_followup(acme, clock):
    number = open_ticket(acme)
    agent_reply(acme, number, "#status solved\nDone.")
    solved_at = clock.now()
    acme.cli("tick", "--now", (solved_at + timedelta(days=14) - timedelta(seconds=1)).isoformat())
    assert acme.ticket(number)["status"] == "solved"
    acme.cli("tick", "--now", (solved_at + timedelta(days=14, seconds=1)).isoformat())
    assert acme.ticket(number)["status"] == "closed"
    acme.cli("tick", "--now", (solved_at + timedelta(days=15)).isoformat())
    assert [e for e in acme.ticket(number)["events"] if e["kind"] == "reopen-window-ended"].__len__() == 1
    acme.send(mail("alice@acme.example", "Re: [#1] Export fails", "Hello again."))
    assert acme.inbound()[-1]["outcome"] == "followup_created"


def test_tick_dry_run_changes_nothing(acme, clock):
    number = open_ticket(acme)
    agent_reply(acme, number, "#status solved\nDone.")
    out = acme.json("tick", "--now", (clock.now() + timedelta(days=20)).isoformat(), "--dry-run")
    assert out["fired"][0]["ticket"] == number
    assert acme.ticket(number)["status"] == "solved"


# ---- duplicates and failures ------------------------------------------------------------------

def test_same_message_twice_creates_one_ticket(acme):
    msg = mail("alice@acme.example", "Twice", "Same bytes.")
    assert acme.send(msg)[0] == 250
    code, text = acme.send(msg.as_bytes().replace(b"\n", b"\r\n"))
    assert code == 250
    assert len(acme.json("ticket", "list")) == 1
    assert [r["outcome"] for r in acme.inbound()] == ["ticket_created", "duplicate"]
    assert acme.inbound()[-1]["ticket"] == 1


def test_different_message_reusing_a_message_id_is_not_dropped(acme):
    acme.send(mail("alice@acme.example", "First", "One.", message_id="<same@acme.example>"))
    acme.send(mail("alice@acme.example", "Second", "Two.", message_id="<same@acme.example>"))
    outcomes = [r["outcome"] for r in acme.inbound()]
    assert "duplicate" not in outcomes
    texts = [m["text"] for t in acme.json("ticket", "list") for m in acme.ticket(t["number"])["messages"]
             if m["direction"] == "inbound"]
    assert any("One." in t for t in texts) and any("Two." in t for t in texts)


def test_locked_database_is_answered_451_and_nothing_written(acme):
    from tests.test_mta_pipe import database_locked
    with database_locked(acme.config):   # the database and the spool
        with smtplib.SMTP("127.0.0.1", acme.port, timeout=30) as client:
            client.ehlo()
            client.mail("alice@acme.example")
            client.rcpt(SUPPORT)
            code, text = client.data(mail("alice@acme.example", "Locked", "x").as_bytes())
        assert code == 451 and text.startswith(b"4.3.0")
        assert b"Traceback" not in text and b"sqlite" not in text.lower()
    assert acme.inbound() == [] and acme.runtime.spool.count() == 0
    code, _ = acme.send(mail("alice@acme.example", "Locked", "x"))
    assert code == 250 and len(acme.json("ticket", "list")) == 1


def test_message_that_breaks_processing_is_quarantined_and_can_be_requeued(acme, monkeypatch):
    import gateway.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("renderer exploded")
    monkeypatch.setattr(pipeline, "visible_text", broken)
    code, _ = acme.send(mail("alice@acme.example", "Poison", "x"))
    assert code == 250
    record = acme.inbound()[-1]
    assert record["outcome"] == "quarantined" and "renderer exploded" in record["reason"]
    assert acme.json("ticket", "list") == []
    monkeypatch.undo()
    out = acme.json("inbound", "requeue", str(record["id"]))
    assert out["outcome"] == "ticket_created"
    assert len(acme.json("ticket", "list")) == 1


def test_auto_reply_to_a_ticket_is_kept_as_internal_note_without_status_change(acme):
    number = open_ticket(acme)
    agent_reply(acme, number, "Question for you.")
    before = len(acme.delivered())
    acme.send(mail("alice@acme.example", "Automatische Antwort: [#1] Export fails", "Ich bin im Urlaub.",
                   headers={"Auto-Submitted": "auto-replied"}))
    t = acme.ticket(number)
    assert t["status"] == "awaiting_reply"
    last = [m for m in t["messages"] if m["direction"] == "inbound"][-1]
    assert last["internal"] is True and "Urlaub" in last["text"]
    assert len(acme.delivered()) == before


def test_out_of_office_from_unknown_sender_is_ignored_not_refused(acme):
    code, _ = acme.send(mail("someone@else.example", "Out of Office: hello", "Away.",
                             headers={"Auto-Submitted": "auto-replied"}))
    assert code == 250
    assert acme.inbound()[-1]["outcome"] == "ignored"
    assert acme.delivered() == []


def test_agent_answer_threads_into_the_conversation_the_customer_sees(acme):
    first = mail("alice@acme.example", "Export fails", "Broken.")
    acme.send(first)
    ack = acme.delivered("alice@acme.example")[0]
    agent_reply(acme, 1, "Which browser?")
    answer = acme.delivered("alice@acme.example")[-1]
    assert answer["In-Reply-To"] == ack["Message-ID"]
    assert answer["References"].split()[0] == first["Message-ID"]
    assert answer["Message-ID"] not in (ack["Message-ID"], first["Message-ID"])
    assert "[#1]" in answer["Subject"] and answer["Reply-To"] == ack["Reply-To"]
    assert answer["Auto-Submitted"] == "no"          # an agent wrote it (RFC 3834 §5)
    assert ack["Auto-Submitted"] == "auto-generated"


def test_account_without_name_takes_the_display_name_of_its_mail(acme):
    acme.send(mail("Alice Adler <alice@acme.example>", "Hello", "Question."))
    ack = acme.delivered("alice@acme.example")[0]
    text = ack.get_body(("plain",)).get_content()
    assert "Alice Adler" in text and "Hello alice@acme.example" not in text
    assert not text.rstrip().endswith(">")
