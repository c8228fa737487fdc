"""Mail as real clients write it (tests/data/eml), delivered over SMTP to the running gateway.

The fixtures use the placeholder addresses of tests/data/eml/README.md; the
organisation "Customer" has accounts for alice@, carol@ and bob@customer.example.
"""
import re

import pytest

from tests.conftest import EML_DIR, SUPPORT


@pytest.fixture
def customer(desk):
    desk.cli("org", "add", "Customer", "--package", "silver", "--main-contact", "alice@customer.example",
             "--locale", "de")
    desk.cli("account", "add", "carol@customer.example", "--org", "Customer")
    desk.cli("account", "add", "bob@customer.example", "--org", "Customer")
    desk.cli("agent", "add", "sam@vendor.example")
    return desk


def eml(name: str, ticket: int | None = None) -> bytes:
    raw = (EML_DIR / name).read_bytes()
    if ticket is not None:   # point the fixture's ticket tag at a ticket of this test
        raw = re.sub(rb"\[#10\d\d\]", f"[#{ticket}]".encode(), raw)
        raw = re.sub(rb"=5B=2310\d\d=5D", f"=5B=23{ticket}=5D".encode(), raw)   # Q-encoded subject
        raw = re.sub(rb"=\?[Uu][Tt][Ff]-8\?[Bb]\?[^?]+\?=", lambda m: _retag_b64(m.group(0), ticket), raw)
    return raw


def _retag_b64(word: bytes, ticket: int) -> bytes:
    import base64
    text = base64.b64decode(word.split(b"?")[3]).decode("utf-8")
    text = re.sub(r"\[#10\d\d\]", f"[#{ticket}]", text)
    return b"=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")) + b"?="


def send_eml(desk, name: str, ticket: int | None = None):
    code, text = desk.send(eml(name, ticket), sender="alice@customer.example", rcpts=[SUPPORT])
    assert code == 250, text
    return desk.inbound()[-1]


@pytest.mark.parametrize("name, subject, fields, words", [
    ("new_outlook_de_quoted_printable.eml", "Export nach Excel schlägt fehl", ("problem", "high", "Reporting"),
     ["„Export nach Excel“"]),
    ("new_outlook_en_html_only.eml", "Nobody can log in (SSO)", ("problem", "blocker", None),
     ["nobody in our company can sign in"]),
    ("new_gmail_en_attachment_png.eml", "Invite user dialog is empty in Chrome", ("service_request", None, None),
     ["Invite user"]),
    ("new_apple_mail_de_inline_image.eml", "Dashboard-Kacheln überlappen", ("service_request", None, None),
     ["übereinander gezeichnet"]),
    ("new_thunderbird_en_format_flowed.eml", "Scheduled report arrives twice every Monday",
     ("problem", "low", "Reporting"), ["delivered twice every Monday"]),
    ("new_rfc2047_subject_iso8859.eml", "Rechnung für März – Position „Wartung“ doppelt",
     ("service_request", None, None), ["„Wartung“ doppelt"]),
    ("new_html_only_gmail_de.eml", "Upload großer PDF bricht ab", ("problem", "medium", None), ["99 %"]),
    ("new_winmail_dat.eml", "Print preview cuts off the last column", ("service_request", None, None),
     ["print preview"]),
    ("new_8bit_raw_headers_utf8.eml", "Spaltenbreite lässt sich nicht ändern", ("service_request", None, None),
     ["Spaltenbreite"]),
])
def test_new_mail_from_real_clients_opens_the_right_ticket(customer, name, subject, fields, words):
    record = send_eml(customer, name)
    assert record["outcome"] == "ticket_created", record["reason"]
    t = customer.ticket(record["ticket"])
    assert t["subject"] == subject
    assert (t["type"], t["priority"], t["module"]) == fields
    text = t["messages"][0]["text"]
    for word in words:
        assert word in text
    assert not text.lower().startswith(("typ:", "type:"))


def test_missing_subject_is_taken_from_the_text(customer):
    record = send_eml(customer, "new_no_subject.eml")
    assert customer.ticket(record["ticket"])["subject"].startswith("The nightly import stopped")


def test_attachments_and_inline_images_are_listed(customer):
    t = customer.ticket(send_eml(customer, "new_gmail_en_attachment_png.eml")["ticket"])
    assert [(a["filename"], a["size"], a["inline"]) for a in t["attachments"]] == [("invite-dialog-empty.png", 83, False)]
    t = customer.ticket(send_eml(customer, "new_apple_mail_de_inline_image.eml")["ticket"])
    assert [(a["filename"], a["size"], a["inline"]) for a in t["attachments"]] == \
        [("Fehlermeldung Übersicht.png", 89, True)]
    t = customer.ticket(send_eml(customer, "new_winmail_dat.eml")["ticket"])
    assert t["attachments"][0]["filename"] == "winmail.dat" and t["attachments"][0]["size"] == 808


def test_ccs_of_real_clients_become_ticket_ccs(customer):
    t = customer.ticket(send_eml(customer, "new_gmail_en_attachment_png.eml")["ticket"])
    assert t["ccs"] == ["carol@customer.example", "bob@customer.example"]
    t = customer.ticket(send_eml(customer, "new_8bit_raw_headers_utf8.eml")["ticket"])
    assert sorted(t["ccs"]) == ["bob@customer.example", "carol@customer.example"]


@pytest.mark.parametrize("name, visible_start, quoted", [
    ("reply_outlook_de_aw.eml", "Hallo Herr Schulz,\n\ndanke, der Export funktioniert jetzt wieder.", "Gesendet:"),
    ("reply_gmail_en_on_wrote.eml", "Hi Tom,\n\nyes, clearing the browser cache fixed it", "wrote:"),
    ("reply_apple_mail_de_am_schrieb.eml", "Hallo Herr Schulz,\n\nvielen Dank, die neue Lizenzdatei", "schrieb"),
    ("reply_thunderbird_en_fwd_prefix.eml", "Carol's laptop has the same crash", "Forwarded Message"),
])
def test_replies_from_real_clients_thread_and_lose_their_quotes(customer, name, visible_start, quoted):
    number = send_eml(customer, "new_outlook_de_quoted_printable.eml")["ticket"]
    record = send_eml(customer, name, ticket=number)
    assert (record["outcome"], record["ticket"]) == ("reply", number), record["reason"]
    message = [m for m in customer.ticket(number)["messages"] if m["direction"] == "inbound"][-1]
    assert message["text"].startswith(visible_start)
    assert quoted not in message["text"] and quoted in message["full_text"]


def test_out_of_office_reply_is_an_internal_note_and_answered_by_nobody(customer):
    number = send_eml(customer, "new_outlook_de_quoted_printable.eml")["ticket"]
    customer.send(b"From: sam@vendor.example\r\nTo: support@desk.example.com\r\nSubject: Re: [#%d] x\r\n"
                  b"Message-ID: <agent-1@vendor.example>\r\n\r\nBitte testen Sie erneut.\r\n" % number,
                  sender="sam@vendor.example")
    assert customer.ticket(number)["status"] == "awaiting_reply"
    sent_before = len(customer.delivered())
    record = send_eml(customer, "autoreply_outlook_de_abwesenheit.eml", ticket=number)
    assert record["ticket"] == number and "internal note" in record["reason"]
    t = customer.ticket(number)
    assert t["status"] == "awaiting_reply"
    assert len(customer.delivered()) == sent_before


def test_bounce_opens_no_ticket_and_is_not_answered(customer):
    record = send_eml(customer, "bounce_postfix_dsn_5_1_1.eml")
    assert record["outcome"] == "ignored" and record["ticket"] is None
    assert customer.json("ticket", "list") == []
    assert customer.delivered() == []
