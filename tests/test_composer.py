"""Composer: the raw bytes parse back, with every header and both MIME parts intact."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from gateway.composer import check_address, compose, make_thread_index
from gateway.rendering import RenderedMail, Renderer, default_template_dir, sample_context

DATE = datetime(2026, 11, 27, 13, 5, tzinfo=timezone.utc)
ROOT_ID = "<root-1@customer.example>"
PARENT_ID = "<parent-7@customer.example>"


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def content(part: EmailMessage) -> str:
    """A part's decoded text with the wire's CRLF turned back into LF."""
    return part.get_content().replace("\r\n", "\n")


def build(rendered: RenderedMail | None = None, **overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "from_addr": "support@desk.example.com", "from_name": "Postdesk Support",
        "to_addr": "jana.mueller@kunde.example", "to_name": "Jana Müller",
        "reply_to": "support+1042-5f2c9a1e@desk.example.com",
        "message_id": "<n1042.3@desk.example.com>", "in_reply_to": PARENT_ID,
        "references": [ROOT_ID, PARENT_ID], "date": DATE,
        "thread_topic": "Export nach Excel bricht ab",
        "thread_index": make_thread_index("ticket-1042", DATE, 2),
        "extra_headers": {"X-Postdesk-Ticket": "1042"},
    }
    arguments.update(overrides)
    mail = rendered or RenderedMail(
        subject="[#1042] AW: Export nach Excel bricht ab – Größe",
        text="Guten Tag Jana Müller,\n\nÄnderungen übernommen.\n",
        html="<p>Guten Tag Jana Müller,</p><p>Änderungen übernommen.</p>",
    )
    return compose(mail, **arguments)


def test_every_header_round_trips_when_parsed_back() -> None:
    # Each header we set comes back with the value we meant.
    msg = parse(build())
    assert msg["From"].addresses[0].display_name == "Postdesk Support"
    assert msg["From"].addresses[0].addr_spec == "support@desk.example.com"
    assert msg["To"].addresses[0].display_name == "Jana Müller"
    assert msg["To"].addresses[0].addr_spec == "jana.mueller@kunde.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "support+1042-5f2c9a1e@desk.example.com"
    assert msg["Subject"] == "[#1042] AW: Export nach Excel bricht ab – Größe"
    assert msg["Message-ID"] == "<n1042.3@desk.example.com>"
    assert msg["In-Reply-To"] == PARENT_ID
    assert msg["References"].split() == [ROOT_ID, PARENT_ID]
    assert msg["Date"].datetime == DATE
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Thread-Topic"] == "Export nach Excel bricht ab"
    assert msg["Thread-Index"] == make_thread_index("ticket-1042", DATE, 2)
    assert msg["X-Postdesk-Ticket"] == "1042"
    assert msg["MIME-Version"] == "1.0"
    assert "Precedence" not in msg


def test_text_and_html_are_alternatives_when_html_given() -> None:
    # multipart/alternative with text/plain first, both UTF-8 and decodable.
    msg = parse(build())
    assert msg.get_content_type() == "multipart/alternative"
    text, html = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain" and text.get_content_charset() == "utf-8"
    assert html.get_content_type() == "text/html" and html.get_content_charset() == "utf-8"
    assert content(text) == "Guten Tag Jana Müller,\n\nÄnderungen übernommen.\n"
    assert content(html).startswith("<p>Guten Tag Jana Müller,</p>")
    assert "MIME-Version" not in text and "MIME-Version" not in html


def test_single_text_part_when_no_html() -> None:
    # Without HTML the mail is one plain-text part, 7-bit when ASCII.
    msg = parse(build(RenderedMail("[#1] Hi", "plain ascii text\n", None)))
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert content(msg) == "plain ascii text\n"


def test_output_is_seven_bit_with_crlf_line_ends() -> None:
    # Non-ASCII is encoded (RFC 2047 headers, quoted-printable bodies) for any relay.
    raw = build()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert "Größe".encode() not in raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_german_subject_with_umlauts_round_trips() -> None:
    # RFC 2047 encoding of umlauts decodes to the same subject.
    subject = "[#7] Ihre Anfrage: Übersicht öffnet nicht – Größenänderung schlägt fehl ÄÖÜäöüß"
    msg = parse(build(RenderedMail(subject, "x\n", None)))
    assert msg["Subject"] == subject


def header_lines(raw: bytes, name: str) -> list[str]:
    """The raw lines of one header: its first line and its folded continuation lines."""
    lines = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def test_header_is_folded_only_when_longer_than_78_characters() -> None:
    # "X-Note: " plus 70 characters is one line of 78; one character more folds at the last space.
    fits = "word " * 13 + "abcde"
    assert header_lines(build(extra_headers={"X-Note": fits}), "X-Note") == [f"X-Note: {fits}"]
    folded = header_lines(build(extra_headers={"X-Note": fits + "f"}), "X-Note")
    assert folded == ["X-Note:" + " word" * 13, " abcdef"]


def test_display_names_stay_with_their_mail_when_an_address_recurs() -> None:
    # The same address under two names, and two addresses under one name, each as given.
    for name in ("Jana Müller", "Jana Mueller", None, "Jana Müller"):
        to = parse(build(to_name=name))["To"].addresses[0]
        assert (to.display_name, to.addr_spec) == (name or "", "jana.mueller@kunde.example")
    to = parse(build(to_addr="max@kunde.example", to_name="Jana Müller"))["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Jana Müller", "max@kunde.example")


def test_same_words_in_text_and_html_keep_their_own_part_types() -> None:
    # A text that is also the HTML (or recurs in the next mail) still makes two typed parts.
    words = "Grüße aus Köln\n"
    for _ in range(2):
        text, html = list(parse(build(RenderedMail("[#1] x", words, words))).iter_parts())
        assert (text.get_content_type(), content(text)) == ("text/plain", words)
        assert (html.get_content_type(), content(html)) == ("text/html", words)


def test_long_body_round_trips_when_far_larger_than_a_notification() -> None:
    # A body of 100 000 characters is encoded whole, 7-bit clean, and decodes to itself.
    body = "Zeile mit Umlauten äöü und einem sehr langen Rest " * 2000 + "\n"
    raw = build(RenderedMail("[#1] x", body, None))
    assert raw.isascii() and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert content(parse(raw)) == body


def test_rendered_template_composes_into_a_mail_when_used_end_to_end() -> None:
    # Renderer output goes straight into the composer and parses back.
    rendered = Renderer(default_template_dir()).render(
        "ticket_created", "de", sample_context("ticket_created", "de"))
    msg = parse(build(rendered))
    assert msg["Subject"] == "[#1042] Ihre Anfrage: Export nach Excel bricht ab"
    text, html = list(msg.iter_parts())
    assert "vielen Dank für Ihre Nachricht" in content(text)
    assert "Müller &amp; Söhne" not in content(text)
    assert "Ihr Postdesk-Support" in content(html)


# --- header injection ---------------------------------------------------------------


def header_names(raw: bytes) -> list[str]:
    return [name.lower() for name in parse(raw).keys()]


def test_injection_in_subject_adds_no_header() -> None:
    # "x\r\nBcc: evil@x" in the subject stays inside the Subject header.
    raw = build(RenderedMail("[#1] x\r\nBcc: evil@x\nX-Injected: 1", "body\n", None))
    names = header_names(raw)
    assert "bcc" not in names and "x-injected" not in names
    assert names.count("subject") == 1
    assert parse(raw)["Subject"] == "[#1] x Bcc: evil@x X-Injected: 1"


@pytest.mark.parametrize("field", ["to_name", "from_name"])
def test_injection_in_display_name_adds_no_header(field: str) -> None:
    # CR/LF in a display name is flattened inside the address header.
    raw = build(**{field: "Mallory\r\nBcc: evil@x\r\n\r\nbody"})
    names = header_names(raw)
    assert "bcc" not in names
    header = "To" if field == "to_name" else "From"
    assert parse(raw)[header].addresses[0].display_name == "Mallory Bcc: evil@x body"


def test_injection_in_extra_header_value_adds_no_header() -> None:
    # Extra header values are flattened like the subject.
    raw = build(extra_headers={"X-Postdesk-Ticket": "1\r\nBcc: evil@x"})
    assert "bcc" not in header_names(raw)


def test_injection_in_thread_topic_adds_no_header() -> None:
    # Thread-Topic is free text and flattened too.
    raw = build(thread_topic="topic\r\nBcc: evil@x")
    assert "bcc" not in header_names(raw)


@pytest.mark.parametrize("bad", [
    "jana@kunde.example\r\nBcc: evil@x",
    "jana@kunde.example\nRCPT TO:<evil@x>",
    "Jana <jana@kunde.example>",
    "jana@kunde.example, evil@x",
    "a@evil.example@good.example",
    "jana @kunde.example",
    "<jana@kunde.example>",
    "\"quoted local\"@kunde.example",
    "jörg@kunde.example",
    "jana@",
    "@kunde.example",
    "",
])
@pytest.mark.parametrize("field", ["to_addr", "from_addr", "reply_to"])
def test_address_is_refused_when_not_one_addr_spec(field: str, bad: str) -> None:
    # Anything but one plain addr-spec is refused before a header is built.
    with pytest.raises(ValueError):
        build(**{field: bad})


def test_international_domain_is_encoded_when_address_is_otherwise_plain() -> None:
    # Umlaut domains go out as IDNA (punycode).
    assert check_address("jana@müller.example") == "jana@xn--mller-kva.example"
    assert parse(build(to_addr="jana@müller.example"))["To"].addresses[0].domain == "xn--mller-kva.example"


@pytest.mark.parametrize("bad", ["<a b@x>", "<a@x>\r\nBcc: evil@x", "no-at-sign", ""])
def test_own_message_id_is_refused_when_malformed(bad: str) -> None:
    # Our own Message-ID must be <left@right>; a bad one is a bug.
    with pytest.raises(ValueError):
        build(message_id=bad)


def test_malformed_foreign_ids_are_left_out_when_threading() -> None:
    # A bad id from a customer's mail never stops the notification nor adds a header.
    raw = build(in_reply_to="<x@y>\r\nBcc: evil@x", references=[ROOT_ID, "<has space@x>", "<ok@x>"])
    msg = parse(raw)
    assert "In-Reply-To" not in msg and "bcc" not in header_names(raw)
    assert msg["References"].split() == [ROOT_ID, "<ok@x>"]


# --- threading ----------------------------------------------------------------------


def test_references_keep_root_and_last_nine_when_longer_than_ten() -> None:
    # Long threads keep their root and the newest ids.
    ids = [f"<m{i}@customer.example>" for i in range(15)]
    msg = parse(build(in_reply_to=ids[-1], references=ids[:-1]))
    assert msg["References"].split() == [ids[0], *ids[-9:]]
    assert msg["In-Reply-To"] == ids[-1]


def test_in_reply_to_is_added_to_references_when_missing() -> None:
    # A parent without References still threads by References.
    msg = parse(build(in_reply_to=PARENT_ID, references=[]))
    assert msg["References"] == PARENT_ID


def test_no_threading_headers_when_starting_a_thread() -> None:
    # The first mail of a thread has neither header.
    msg = parse(build(in_reply_to=None, references=[]))
    assert "In-Reply-To" not in msg and "References" not in msg


def test_long_message_ids_are_folded_not_encoded() -> None:
    # Gmail-style ids are long; they must survive as-is (no =?utf-8?q?...?= words).
    ids = [f"<CAF{'x' * 60}{i}@mail.gmail.example.com>" for i in range(5)]
    raw = build(in_reply_to=ids[-1], references=ids)
    unparsed = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    for name in ("References", "In-Reply-To", "Message-ID", "Thread-Index"):
        assert "=?" not in unparsed[name]
    msg = parse(raw)
    assert msg["References"].split() == ids
    assert msg["In-Reply-To"] == ids[-1]


def test_auto_replied_is_allowed_and_garbage_refused() -> None:
    # Auto-Submitted takes RFC 3834 values, nothing with line breaks.
    assert parse(build(auto_submitted="auto-replied"))["Auto-Submitted"] == "auto-replied"
    with pytest.raises(ValueError):
        build(auto_submitted="no\r\nBcc: evil@x")


def test_reserved_extra_header_is_refused() -> None:
    # Extra headers cannot replace what the composer sets, nor add a Bcc.
    for name in ("Bcc", "Subject", "message-id", "Content-Type", "Bad Name", "X-A:B"):
        with pytest.raises(ValueError):
            build(extra_headers={name: "x"})


def test_naive_date_is_refused() -> None:
    # A Date without a zone is ambiguous; callers pass aware UTC.
    with pytest.raises(ValueError):
        build(date=datetime(2026, 11, 27, 13, 5))


# --- Outlook Thread-Index -----------------------------------------------------------


def decoded(seed: str, children: int, date: datetime = DATE) -> bytes:
    return base64.b64decode(make_thread_index(seed, date, children))


def test_thread_index_has_header_block_and_child_blocks() -> None:
    # 22-byte header (0x01, 5 bytes of FILETIME, 16-byte GUID) plus 5 bytes per child.
    for children in range(4):
        assert len(decoded("ticket-1042", children)) == 22 + 5 * children
    header = decoded("ticket-1042", 0)
    assert header[0] == 0x01
    filetime = int((DATE - datetime(1601, 1, 1, tzinfo=timezone.utc)).total_seconds()) * 10_000_000
    assert header[1:6] == (filetime >> 24).to_bytes(5, "big")


def test_thread_index_shares_the_root_when_same_ticket() -> None:
    # Every mail of a ticket extends the same root; another ticket gets another GUID.
    first, third = decoded("ticket-1042", 0), decoded("ticket-1042", 2)
    assert third.startswith(decoded("ticket-1042", 1)) and third.startswith(first)
    assert decoded("ticket-1043", 0)[6:22] != first[6:22]
    assert decoded("ticket-1042", 3) == decoded("ticket-1042", 3)
    assert decoded("ticket-1042", 2) < decoded("ticket-1042", 3)


def test_thread_index_treats_naive_date_as_utc_and_refuses_negative_children() -> None:
    # A naive creation time (as SQLite returns it) means UTC; a negative count is a bug.
    assert make_thread_index("t", datetime(2026, 11, 27, 13, 5), 1) == make_thread_index("t", DATE, 1)
    with pytest.raises(ValueError):
        make_thread_index("t", DATE, -1)


def test_thread_index_stays_bounded_when_ticket_is_very_long() -> None:
    # Hundreds of mails on one ticket still compose; order is kept by the last block.
    deep, deeper = decoded("ticket-1042", 300), decoded("ticket-1042", 301)
    assert len(deep) == len(deeper) == 22 + 5 * 64
    assert deep < deeper
    compose(RenderedMail("[#1] x", "y\n", None), from_addr="a@x.example", from_name="A",
            to_addr="b@x.example", to_name=None, reply_to="a@x.example", message_id="<1@x.example>",
            in_reply_to=None, references=[], date=DATE,
            thread_index=make_thread_index("ticket-1042", DATE, 300))
