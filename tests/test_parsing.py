"""Parse stage: real client mail from tests/data/eml and hostile or broken bytes."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path

import mailparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.parsing import ParsedMessage, parse_headers, parse_message

EML_DIR = Path(__file__).parent / "data" / "eml"
ALICE = "alice@customer.example"
CAROL = "carol@customer.example"
BOB = "bob@customer.example"
SUPPORT = "support@desk.example.com"


def eml(name: str) -> ParsedMessage:
    """Parse one fixture by name."""
    return parse_message((EML_DIR / name).read_bytes())


def mail(*headers: str, body: str = "Hello\r\n") -> bytes:
    """A small message from header lines and a body."""
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")


# -- fixtures: one row per client case -----------------------------------------

FIXTURE_ROWS = [
    # name, subject, from_name, to, cc, text words (None: no text/plain), has_html
    ("new_outlook_de_quoted_printable.eml", "Export nach Excel schlägt fehl", "Müller, Alice",
     (SUPPORT,), (CAROL,), ["Typ: Störung", "„Export nach Excel“", "48.300 €", "Fehler 500 – Export"],
     True),
    ("new_outlook_en_html_only.eml", "Nobody can log in (SSO)", "Alice Walker",
     (SUPPORT,), (), None, True),
    ("new_gmail_en_attachment_png.eml", "Invite user dialog is empty in Chrome", "Alice Walker",
     (SUPPORT,), (CAROL, BOB), ["Invite user", "uBlock Origin"], True),
    ("new_apple_mail_de_inline_image.eml", "Dashboard-Kacheln überlappen", "Alice Müller",
     (SUPPORT,), (), ["Kacheln seit heute früh", "Safari 17.3"], True),
    ("new_thunderbird_en_format_flowed.eml", "Scheduled report arrives twice every Monday", "Alice Walker",
     (SUPPORT,), (), ["Type: problem", "job id (4711)"], False),
    ("reply_outlook_de_aw.eml", "AW: [#1042] Export nach Excel schlägt fehl", "Müller, Alice",
     ("support+1042-k3j9x2@desk.example.com",), (CAROL,),
     ["funktioniert jetzt wieder", "Gesendet: Mittwoch"], True),
    ("reply_gmail_en_on_wrote.eml", "Re: [#1043] Login page shows error 500", "Alice Walker",
     ("support+1043-p0q7zr@desk.example.com",), (),
     ["clearing the browser cache", "> Hello Alice,"], True),
    ("reply_apple_mail_de_am_schrieb.eml", "Re: [#1044] Lizenz verlängern", "Alice Müller",
     ("support+1044-m2v8tt@desk.example.com",), (CAROL,),
     ["Lizenzdatei", "> Am 12.03.2025 um 11:47 schrieb"], True),
    ("reply_thunderbird_en_fwd_prefix.eml", "Re: Fwd: [#1045] VPN client crashes on start",
     "Alice Walker", ("support+1045-d4h1ns@desk.example.com",), (CAROL,),
     ["%APPDATA%\\VPNClient\\logs", "-------- Forwarded Message"], False),
    ("new_rfc2047_subject_iso8859.eml", "Rechnung für März – Position „Wartung“ doppelt", "Alice Weiß",
     (SUPPORT,), (), ["Position „Wartung“ doppelt", "Alice Weiß"], False),
    ("new_no_subject.eml", "", "Alice Walker", (SUPPORT,), (), ["nightly import stopped"], False),
    ("new_html_only_gmail_de.eml", "Upload großer PDF bricht ab", "Alice Weber", (SUPPORT,), (), None, True),
    ("new_winmail_dat.eml", "Print preview cuts off the last column", "Alice Walker",
     (SUPPORT,), (), ["last column (Q4) is cut off"], False),
    ("new_thunderbird_en_forward_as_attachment.eml", "Fwd: Your invoice 2025-0311 could not be delivered",
     "Alice Walker", (SUPPORT,), (), ["I attach the original mail"], False),
    ("new_broken_base64_attachment.eml", "Export file for the audit", "Alice Walker",
     (SUPPORT,), (), ["audit team could not open"], False),
    ("new_8bit_raw_headers_utf8.eml", "Spaltenbreite lässt sich nicht ändern", "Alice Müller",
     (SUPPORT,), (CAROL, BOB), ["Spaltenbreite nicht mehr ändern"], False),
    ("autoreply_outlook_de_abwesenheit.eml", "Automatische Antwort: [#1042] Export nach Excel schlägt fehl",
     "Müller, Alice", ("support+1042-k3j9x2@desk.example.com",), (), ["nicht im Büro"], False),
]


@pytest.mark.parametrize(
    ("name", "subject", "from_name", "to", "cc", "words", "has_html"),
    FIXTURE_ROWS,
    ids=[row[0] for row in FIXTURE_ROWS],
)
def test_fixture_fields_when_real_client_mail_is_parsed(
    name: str, subject: str, from_name: str, to: tuple[str, ...], cc: tuple[str, ...],
    words: list[str] | None, has_html: bool,
) -> None:
    """Each client's mail yields exact subject, sender, recipients and body text."""
    parsed = eml(name)
    assert parsed.subject == subject
    assert (parsed.from_addr, parsed.from_name, parsed.from_count) == (ALICE, from_name, 1)
    assert (parsed.to, parsed.cc) == (to, cc)
    assert (parsed.html is not None) == has_html
    if words is None:
        assert parsed.text is None
    else:
        assert parsed.text is not None
        for word in words:
            assert word in parsed.text
        assert "\r" not in parsed.text
    assert isinstance(parsed.date, datetime) and parsed.date.tzinfo is not None
    assert parsed.message_id and parsed.message_id.startswith("<")


def test_every_fixture_is_listed_when_readme_describes_the_folder() -> None:
    """The README names each fixture, and each fixture uses CRLF line ends."""
    readme = (EML_DIR / "README.md").read_text(encoding="utf-8")
    for path in sorted(EML_DIR.glob("*.eml")):
        assert f"`{path.name}`" in readme, path.name
        data = path.read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), path.name


def test_threading_headers_when_outlook_replies() -> None:
    """In-Reply-To and References keep angle brackets and order; Thread-Index is a header."""
    parsed = eml("reply_outlook_de_aw.eml")
    assert parsed.in_reply_to == ("<ticket-1042.2.5d0e92@desk.example.com>",)
    assert parsed.references == (
        "<ticket-1042.1.a81f3c@desk.example.com>",
        "<ticket-1042.2.5d0e92@desk.example.com>",
    )
    assert parsed.headers["thread-index"] == ("AQHbjZ3xK8yqN0W7dEaH2p5mU9rL1wABc3Ew",)
    assert parsed.headers["thread-topic"] == ("[#1042] Export nach Excel schlägt fehl",)
    assert parsed.date == datetime(2025, 3, 6, 8, 5, 9, tzinfo=timezone.utc)


def test_html_only_when_outlook_sends_no_text_part() -> None:
    """HTML-only mail has html and no text; quoted-printable is decoded."""
    parsed = eml("new_outlook_en_html_only.eml")
    assert parsed.text is None
    assert parsed.html is not None and "<b>Type:</b>&nbsp;Problem" in parsed.html
    assert parsed.attachments == ()


def test_attachment_when_gmail_attaches_a_png() -> None:
    """A Gmail attachment keeps its name and bytes; a Content-ID alone does not make it inline."""
    (png,) = eml("new_gmail_en_attachment_png.eml").attachments
    assert (png.filename, png.content_type, png.content_id, png.inline) == (
        "invite-dialog-empty.png", "image/png", "f_ltf2x1ab0", False)
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png.content) == 83


def test_inline_image_when_apple_mail_uses_multipart_related() -> None:
    """The cid image is inline, its RFC 2231 name decoded, and not part of the text."""
    parsed = eml("new_apple_mail_de_inline_image.eml")
    (image,) = parsed.attachments
    assert (image.filename, image.content_type, image.inline) == (
        "Fehlermeldung Übersicht.png", "image/png", True)
    assert image.content_id == "5B8E2F1A-6C3D-4A7E-8B9C-0D1E2F3A4B5C@customer.example"
    assert len(image.content) == 89
    assert f"cid:{image.content_id}" in (parsed.html or "")


def test_format_flowed_is_joined_when_thunderbird_wraps_lines() -> None:
    """Soft breaks disappear, space-stuffing is removed, the signature marker stays."""
    text = eml("new_thunderbird_en_format_flowed.eml").text or ""
    assert "weekly report is delivered twice every Monday, once at 06:00 and once at 07:00." in text
    assert "\nFrom the mail headers both copies" in text
    assert "\n-- \nAlice Walker" in text


def test_quoted_flowed_lines_are_joined_when_thunderbird_quotes() -> None:
    """Flowed lines inside a quote are joined at the same quote depth."""
    text = eml("reply_thunderbird_en_fwd_prefix.eml").text or ""
    assert "> thank you for the report. Could you send us the crash log of the VPN client?" in text


def test_windows_1252_is_used_when_latin1_label_hides_it() -> None:
    """Lotus/Outlook label Windows-1252 text as ISO-8859-1; dashes and quotes survive."""
    parsed = eml("new_rfc2047_subject_iso8859.eml")
    assert "–" in parsed.subject and "\x96" not in parsed.subject
    assert parsed.defects == ()


def test_forwarded_message_stays_an_attachment_when_attached_as_rfc822() -> None:
    """An attached message is kept whole as .eml; its text does not join the body."""
    parsed = eml("new_thunderbird_en_forward_as_attachment.eml")
    (forwarded,) = parsed.attachments
    assert forwarded.filename == "Your invoice 2025-0311 could not be delivered.eml"
    assert forwarded.content_type == "message/rfc822"
    assert b"Subject: Your invoice 2025-0311 could not be delivered" in forwarded.content
    assert "template missing" not in (parsed.text or "")
    assert parse_message(forwarded.content).from_addr == "billing@vendor.example.net"


def test_winmail_dat_is_kept_when_outlook_sends_tnef() -> None:
    """winmail.dat stays an ordinary attachment with its bytes."""
    (tnef,) = eml("new_winmail_dat.eml").attachments
    assert (tnef.filename, tnef.content_type, tnef.inline) == ("winmail.dat", "application/ms-tnef", False)
    assert tnef.content[:4] == b"\x78\x9f\x3e\x22" and len(tnef.content) == 808


def test_broken_base64_keeps_what_decodes_when_attachment_is_truncated() -> None:
    """A truncated base64 attachment keeps its decodable prefix and records a defect."""
    parsed = eml("new_broken_base64_attachment.eml")
    (pdf,) = parsed.attachments
    assert pdf.filename == "audit-export.pdf"
    assert pdf.content.startswith(b"%PDF-1.4\n1 0 obj")
    assert 100 < len(pdf.content) < 142
    assert any("broken base64" in defect for defect in parsed.defects)


def test_raw_8bit_headers_are_decoded_when_client_skips_rfc2047() -> None:
    """Raw UTF-8 header octets become text; duplicate Cc headers are merged."""
    parsed = eml("new_8bit_raw_headers_utf8.eml")
    assert parsed.from_name == "Alice Müller"
    assert parsed.headers["cc"] == ("Carol Schmidt <carol@customer.example>", "bob@customer.example")


def test_delivery_report_parts_are_attachments_when_mail_is_a_bounce() -> None:
    """The DSN's machine-readable parts become .txt attachments; the notice is the text."""
    parsed = eml("bounce_postfix_dsn_5_1_1.eml")
    assert [a.filename for a in parsed.attachments] == ["attachment-1.txt", "attachment-2.txt"]
    assert [a.content_type for a in parsed.attachments] == ["message/delivery-status", "text/rfc822-headers"]
    assert b"Status: 5.1.1" in parsed.attachments[0].content
    assert "unknown user" in (parsed.text or "")
    assert parsed.from_addr == "mailer-daemon@mail.customer.example"


@pytest.mark.parametrize("name", sorted(p.name for p in EML_DIR.glob("*.eml")))
def test_parse_headers_agrees_when_given_the_same_fixture(name: str) -> None:
    """The cheap header summary matches the full parse on every fixture."""
    raw = (EML_DIR / name).read_bytes()
    full, cheap = parse_message(raw), parse_headers(raw)
    assert (cheap.message_id, cheap.from_addr, cheap.from_count, cheap.subject) == (
        full.message_id, full.from_addr, full.from_count, full.subject)
    assert dict(cheap.headers) == dict(full.headers)


def test_parse_headers_stops_when_header_block_ends() -> None:
    """Header-looking lines in the body are not headers."""
    summary = parse_headers(mail("From: alice@customer.example", "Subject: Hi",
                                 body="From: mallory@elsewhere.example\r\nSubject: x\r\n"))
    assert (summary.from_addr, summary.from_count, summary.subject) == (ALICE, 1, "Hi")
    assert summary.headers["from"] == ("alice@customer.example",)


# -- addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_header", "addr", "count"),
    [
        ("Alice <Alice@Customer.Example>", ALICE, 1),
        ("alice@customer.example", ALICE, 1),
        ("alice@customer.example (Alice)", ALICE, 1),
        ('"alice@customer.example" <bob@customer.example>', BOB, 1),
        ('"Müller, Alice" <alice@customer.example>', ALICE, 1),
        ("=?utf-8?Q?M=C3=BCller=2C_Alice?= <alice@customer.example>", ALICE, 1),
        ("alice@customer.example@elsewhere.example", None, 0),
        ("mallory@elsewhere.example)<alice@customer.example>", None, 0),
        ("Alice <alice@customer.example> <mallory@elsewhere.example>", None, 0),
        ("alice@customer.example, bob@customer.example", None, 2),
        ("Alice <alice@customer.example>, broken@@", None, 1),
        ("<>", None, 0),
        ("undisclosed-recipients:;", None, 0),
        ("Alice", None, 0),
        ("", None, 0),
    ],
)
def test_from_addr_when_from_header_has_tricks(from_header: str, addr: str | None, count: int) -> None:
    """Only one unambiguous mailbox gives a sender; anything else gives None.

    The full parse reuses mail-parser's parse of the header, the header summary
    parses it itself: both must agree.
    """
    raw = mail(f"From: {from_header}", "Subject: x")
    parsed, summary = parse_message(raw), parse_headers(raw)
    assert (parsed.from_addr, parsed.from_count) == (addr, count)
    assert (summary.from_addr, summary.from_count) == (addr, count)


def test_from_addr_is_kept_when_a_later_header_repeats_it_next_to_a_broken_address() -> None:
    """A defect in the second To header does not taint the same mailbox in From."""
    parsed = parse_message(mail("From: alice@customer.example", "To: alice@customer.example",
                                "To: broken@@", "Subject: x"))
    assert (parsed.from_addr, parsed.from_count, parsed.to) == (ALICE, 1, (ALICE,))


def test_from_addr_is_none_when_from_header_is_duplicated() -> None:
    """Two From headers are ambiguous, even if each is valid."""
    parsed = parse_message(mail("From: alice@customer.example", "From: bob@customer.example"))
    assert (parsed.from_addr, parsed.from_count) == (None, 2)


def test_missing_headers_give_empty_values_when_message_has_only_a_body() -> None:
    """No header at all still parses, with empty or None fields."""
    parsed = parse_message(b"\r\njust a body\r\n")
    assert (parsed.message_id, parsed.from_addr, parsed.from_name, parsed.from_count) == (None, None, "", 0)
    assert (parsed.subject, parsed.to, parsed.cc, parsed.reply_to, parsed.sender) == ("", (), (), (), None)
    assert (parsed.in_reply_to, parsed.references, parsed.date) == ((), (), None)
    assert parsed.text == "just a body\n"


def test_recipient_lists_when_headers_mix_groups_and_repeats() -> None:
    """To/Cc/Reply-To are lower-cased addr-specs in order, without repeats; Sender is read."""
    parsed = parse_message(mail(
        "From: Alice <alice@customer.example>",
        "Sender: Assistant <ASSIST@customer.example>",
        "To: Team: Carol <Carol@Customer.Example>, bob@customer.example;, support@desk.example.com",
        "Cc: carol@customer.example, undisclosed-recipients:;",
        "Reply-To: Alice Private <alice+home@customer.example>",
    ))
    assert parsed.to == (CAROL, BOB, SUPPORT)
    assert parsed.cc == (CAROL,)
    assert parsed.reply_to == ("alice+home@customer.example",)
    assert parsed.sender == "assist@customer.example"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <abc@customer.example>", "<abc@customer.example>"),
        ("Message-ID:\r\n <abc@customer.example>  ", "<abc@customer.example>"),
        ("Message-Id: <abc@customer.example> (comment)", "<abc@customer.example>"),
        ("Message-ID: abc@customer.example", "abc@customer.example"),
        ("X-Other: 1", None),
    ],
)
def test_message_id_when_header_is_folded_or_odd(header: str, expected: str | None) -> None:
    """Whitespace is removed, angle brackets kept, comments dropped."""
    assert parse_message(mail(header)).message_id == expected


def test_references_when_ids_are_folded_duplicated_or_bare() -> None:
    """References keep order, drop repeats and bracket bare ids."""
    parsed = parse_message(mail(
        "References: <a@x.example>\r\n\t<b@x.example> <a@x.example>",
        "In-Reply-To: b@x.example",
    ))
    assert parsed.references == ("<a@x.example>", "<b@x.example>")
    assert parsed.in_reply_to == ("<b@x.example>",)


# -- header decoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_subject", "expected"),
    [
        ("=?utf-8?Q?Gr=C3=BC=C3=9Fe?=", "Grüße"),
        ("=?UTF-8?B?R3LDvMOfZQ==?=", "Grüße"),
        ("=?iso-8859-1?Q?Gr=FC=DFe?=", "Grüße"),
        ("=?windows-1252?Q?=84Zitat=93_=80?=", "„Zitat“ €"),
        ("=?iso-8859-1?Q?=84Zitat=93?=", "„Zitat“"),
        ("=?utf-8?B?R3LD?= =?utf-8?B?vMOfZQ==?=", "Grüße"),  # character split across words
        ("=?utf-8?Q?a?= =?utf-8?Q?b?= c", "ab c"),
        ("Re: =?utf-8?Q?L=C3=B6sung?= gesucht", "Re: Lösung gesucht"),
        ("Wort=?utf-8?Q?=C3=A4?=", "Wortä"),  # no space before the encoded word
        ("=?utf-8*de?Q?Gr=C3=BC=C3=9Fe?=", "Grüße"),  # RFC 2231 language tag
        ("=?utf-8?B?R3LDvMOfZQ?=", "Grüße"),  # missing padding
        ("=?x-unknown?Q?Gr=C3=BC=C3=9Fe?=", "Grüße"),  # unknown charset: UTF-8 guess
        ("=?utf-8?Q?broken=FF=FE?=", "broken\u00ff\u00fe"),  # not UTF-8: Windows-1252 guess
        ("Line\r\n folded", "Line folded"),
        ("=?utf-8?Q?inject=0D=0ABcc:_x?=", "inject Bcc: x"),
    ],
)
def test_subject_is_decoded_when_encoded_words_are_odd(raw_subject: str, expected: str) -> None:
    """RFC 2047 words decode leniently into one clean line."""
    parsed = parse_message(mail(f"Subject: {raw_subject}"))
    assert parsed.subject == expected


def test_raw_latin1_header_is_decoded_when_it_is_not_utf8() -> None:
    """8-bit octets that are not UTF-8 are read as Windows-1252."""
    raw = b"From: J\xfcrgen <alice@customer.example>\r\nSubject: Gr\xfc\xdfe\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert (parsed.subject, parsed.from_name, parsed.from_addr) == ("Grüße", "Jürgen", ALICE)


def test_date_is_none_when_missing_or_absurd() -> None:
    """Dates outside a sane range, or unparseable, become None; naive dates are UTC."""
    assert parse_message(mail("Date: Tue, 1 Jan 1901 00:00:00 +0000")).date is None
    assert parse_message(mail("Date: yesterday")).date is None
    assert parse_message(mail("Date: Mon, 3 Feb 2025 10:00:00 +9999")).date is None
    naive = parse_message(mail("Date: Mon, 3 Feb 2025 10:00:00 -0000")).date
    assert naive == datetime(2025, 2, 3, 10, 0, tzinfo=timezone.utc)


# -- bodies and attachments -------------------------------------------------------------


def multipart(*parts: str, subtype: str = "mixed") -> bytes:
    """A multipart message from ready-made part texts (headers, blank line, body)."""
    body = "".join(f"--b1\r\n{part}\r\n" for part in parts) + "--b1--\r\n"
    return mail("From: alice@customer.example", "MIME-Version: 1.0",
                f'Content-Type: multipart/{subtype}; boundary="b1"', body=body)


def test_text_parts_are_joined_when_apple_mail_splits_text_around_an_image() -> None:
    """Several text/plain parts join in order; an unnamed image gets a derived name."""
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()
    parsed = parse_message(multipart(
        "Content-Type: text/plain; charset=utf-8\r\n\r\nBefore the image.",
        "Content-Type: image/png\r\nContent-Disposition: inline\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{png}",
        "Content-Type: text/plain; charset=utf-8\r\n\r\nAfter the image.",
    ))
    assert parsed.text == "Before the image.\nAfter the image."
    (image,) = parsed.attachments
    assert (image.filename, image.inline, image.content_id) == ("attachment-1.png", True, None)


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="C:\\Users\\alice\\Desktop\\report.pdf"', "report.pdf"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ("attachment; filename*=utf-8''Pr%C3%BCfbericht%20M%C3%A4rz.pdf", "Prüfbericht März.pdf"),
        ('attachment; filename="=?utf-8?B?UHLDvGZiZXJpY2h0LnBkZg==?="', "Prüfbericht.pdf"),
        ('attachment; filename=".."', "attachment-1.pdf"),
        ("attachment", "attachment-1.pdf"),
    ],
)
def test_attachment_filename_when_clients_encode_or_add_paths(disposition: str, expected: str) -> None:
    """Names are decoded (RFC 2231/2047), stripped of paths, never empty."""
    parsed = parse_message(multipart(
        "Content-Type: text/plain\r\n\r\nSee attachment.",
        f"Content-Type: application/pdf\r\nContent-Disposition: {disposition}\r\n\r\n%PDF-1.4",
    ))
    (attachment,) = parsed.attachments
    assert attachment.filename == expected
    assert attachment.content.startswith(b"%PDF-1.4")


def test_unnamed_rfc822_gets_eml_name_when_forwarded_without_filename() -> None:
    """A forwarded message without a name becomes attachment-N.eml."""
    parsed = parse_message(multipart(
        "Content-Type: text/plain\r\n\r\nForwarding.",
        "Content-Type: message/rfc822\r\n\r\nFrom: x@elsewhere.example\r\nSubject: inner\r\n\r\ninner body",
    ))
    (inner,) = parsed.attachments
    assert (inner.filename, inner.content_type) == ("attachment-1.eml", "message/rfc822")
    assert parsed.text == "Forwarding."


def test_charset_falls_back_when_declared_charset_is_wrong_or_unknown() -> None:
    """Unknown or wrong charsets decode as UTF-8, then Windows-1252, with a defect."""
    parsed = parse_message(multipart(
        "Content-Type: text/plain; charset=x-unknown-charset\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe",
    ).replace("Gr\xfc\xdfe".encode("utf-8"), b"Gr\xfc\xdfe"))
    assert parsed.text == "Grüße"
    assert any("decoded leniently" in defect for defect in parsed.defects)


@pytest.mark.parametrize(
    ("content_type", "octets", "expected", "defect"),
    [
        ("text/plain; charset=us-ascii", "Grüße €".encode(), "Grüße €", False),  # mislabelled UTF-8
        ("text/plain", "Grüße".encode(), "Grüße", False),
        ("text/plain; charset=iso-8859-1", b"Gr\xfc\xdfe \x80", "Grüße €", False),
        ("text/plain; charset=iso-8859-1", b"odd \x81 byte", "odd \x81 byte", False),
        ("text/plain; charset=koi8-r", "Привет".encode("koi8-r"), "Привет", False),
        ("text/plain; charset=utf-8", b"Gr\xfc\xdfe", "Grüße", True),
        ("text/plain", b"Gr\xfc\xdfe", "Grüße", True),
    ],
)
def test_body_charset_when_label_and_octets_disagree(
    content_type: str, octets: bytes, expected: str, defect: bool,
) -> None:
    """Western labels read valid UTF-8 as UTF-8, else Windows-1252; a wrong guess is a defect."""
    raw = f"From: alice@customer.example\r\nContent-Type: {content_type}\r\n\r\n".encode() + octets
    parsed = parse_message(raw)
    assert parsed.text == expected
    assert any("decoded leniently" in d for d in parsed.defects) is defect


def test_html_is_decoded_when_only_html_is_sent() -> None:
    """An HTML-only message has html and text None."""
    parsed = parse_message(mail("Content-Type: text/html; charset=utf-8", body="<p>Grüße</p>"))
    assert (parsed.text, parsed.html) == (None, "<p>Grüße</p>")


def test_flowed_delsp_is_joined_when_client_uses_delsp_yes() -> None:
    """With DelSp=yes the space before a soft break is removed too."""
    parsed = parse_message(mail("Content-Type: text/plain; format=flowed; delsp=yes",
                                body="Long\u00e4 \r\nword\r\n"))
    assert parsed.text == "Longäword\n"


# -- defects found by mail-parser --------------------------------------------------------


def complete_mail_parser_defects(raw: bytes) -> tuple[str, ...]:
    """The defects of mail-parser's own complete parse, worded as parse_message words them."""
    parser = mailparser.MailParser.from_bytes(raw)
    found = [f"{where}: {what}" for group in parser.defects for where, items in group.items() for what in items]
    return tuple(dict.fromkeys(found))


@pytest.mark.parametrize("name", sorted(p.name for p in EML_DIR.glob("*.eml")))
def test_defects_start_with_mail_parsers_when_fixtures_are_parsed(name: str) -> None:
    """What mail-parser's complete parse finds comes first, in its order; nothing makes it fail."""
    raw = (EML_DIR / name).read_bytes()
    expected = complete_mail_parser_defects(raw)
    defects = parse_message(raw).defects
    assert defects[: len(expected)] == expected
    assert not any(defect.startswith("mail-parser failed") for defect in defects)


def test_defects_start_with_mail_parsers_when_received_and_part_headers_are_broken() -> None:
    """Received-header and MIME-header defects are reported as mail-parser finds them."""
    raw = (b"From: alice@customer.example\r\n"
           b"Received: from relay (unclosed by mx.desk.example.com; Mon, 3 Feb 2025 10:00:00 +0000\r\n"
           b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
           b'--b1\r\nContent-Type: text/plain; name="\xfcbersicht.txt"\r\n\r\nx\r\n--b1--\r\n')
    expected = complete_mail_parser_defects(raw)
    assert [defect.split(":")[0] for defect in expected] == ["received-headers", "mime-headers"]
    assert parse_message(raw).defects[: len(expected)] == expected


def test_mail_parser_failure_is_reported_when_a_header_names_an_impossible_charset() -> None:
    """mail-parser fails on an encoded word whose charset holds a NUL; that is still reported."""
    parsed = parse_message(mail("From: alice@customer.example", "X-Note: =?utf-8\x00?q?see you?="))
    assert parsed.defects == ("mail-parser failed (ValueError); stdlib parser used",)
    assert (parsed.from_addr, parsed.text) == (ALICE, "Hello\n")


def test_a_charset_label_with_a_nul_costs_no_other_header() -> None:
    """Decoding such a word must not make the whole header block unreadable (From and Subject were lost)."""
    raw = (b"From: Alice <alice@customer.example>\r\nX-Foo: =?a\x00b?q?x?=\r\nSubject: Hi\r\n\r\nHello\r\n")
    parsed = parse_message(raw)
    assert (parsed.from_addr, parsed.subject, parsed.text) == (ALICE, "Hi", "Hello\n")
    assert not any("unreadable" in defect or "parse failed" in defect for defect in parsed.defects)
    assert parse_headers(raw).from_addr == ALICE


# -- never raises ------------------------------------------------------------------------


def test_parse_survives_when_multipart_nesting_is_hostile() -> None:
    """Thousands of nested multiparts do not raise; the result is marked defective."""
    depth = 3000
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    raw = ("From: alice@customer.example\r\nSubject: deep\r\n" + head
           + "Content-Type: text/plain\r\n\r\nx\r\n").encode()
    parsed = parse_message(raw)
    assert (parsed.from_addr, parsed.subject) == (ALICE, "deep")
    assert parsed.defects


def test_parse_accepts_bytearray_and_memoryview_when_edge_passes_buffers() -> None:
    """Bytes-like input works the same as bytes."""
    raw = mail("From: alice@customer.example", "Subject: Hi")
    assert parse_message(bytearray(raw)) == parse_message(raw) == parse_message(memoryview(raw))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_parse_never_raises_when_bytes_are_arbitrary(raw: bytes) -> None:
    """Any bytes parse to a ParsedMessage with a one-line subject."""
    parsed = parse_message(raw)
    summary = parse_headers(raw)
    assert "\n" not in parsed.subject and "\r" not in parsed.subject
    assert summary.subject == parsed.subject or parsed.defects


_HEADER_BITS = st.sampled_from([
    "From: ", "To: ", "Cc: ", "Subject: ", "Content-Type: ", "multipart/mixed; boundary=", "text/plain",
    "message/rfc822", "Content-Transfer-Encoding: base64", "quoted-printable", "=?utf-8?B?", "=?x?Q?",
    "?=", "<", ">", "\"", "(", ")", ",", ";", ":", "@", "\r\n", "\r\n\r\n", "--", "=", "\xff", "\x00",
    "filename*0*=utf-8''%C3", "alice@customer.example", "charset=utf-16",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_HEADER_BITS, max_size=60))
def test_parse_never_raises_when_mime_structure_is_garbled(bits: list[str]) -> None:
    """Mail-shaped junk parses without raising."""
    raw = "".join(bits).encode("utf-8", "surrogateescape")
    parse_message(raw)
    parse_headers(raw)
