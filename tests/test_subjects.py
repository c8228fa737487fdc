"""Subject helpers: reply prefixes, ticket tags, fallback subjects, header safety."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.subjects import (
    clean_header_text,
    find_ticket_tags,
    remove_ticket_tags,
    strip_reply_prefixes,
    subject_from_text,
)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Login fails", "Login fails"),
        ("RE: RE: Login fails", "Login fails"),
        ("AW: WG: Export schlägt fehl", "Export schlägt fehl"),
        ("Aw: Export", "Export"),
        ("Fwd: FW: Fw: Invoice", "Invoice"),
        ("SV: VS: Lisens", "Lisens"),
        ("Antw: Vraag", "Vraag"),
        ("Odp: Pytanie", "Pytanie"),
        ("RIF: R: Domanda", "Domanda"),
        ("TR: Question", "Question"),
        ("Re[2]: Login", "Login"),
        ("Re(3): Login", "Login"),
        ("Re : Connexion", "Connexion"),  # French clients put a space before the colon
        ("Re:Login", "Login"),
        ("  re:   aw:  Login  ", "Login"),
        ("Re\uff1a Login", "Login"),  # full-width colon
        ("[EXTERNAL] Re: Login", "[EXTERNAL] Re: Login"),
        ("Re: [EXTERNAL] Login", "[EXTERNAL] Login"),
        ("Re: [#12] Login", "[#12] Login"),
        ("Reminder: renew licence", "Reminder: renew licence"),
        ("Research results", "Research results"),
        ("Fwdx: nothing", "Fwdx: nothing"),
        ("", ""),
    ],
)
def test_strip_reply_prefixes_when_prefixes_lead(subject: str, expected: str) -> None:
    """Only leading reply/forward markers go; other tags and words stay."""
    assert strip_reply_prefixes(subject) == expected


@given(st.text(max_size=60))
def test_strip_reply_prefixes_is_idempotent_when_applied_twice(subject: str) -> None:
    """Stripping once removes the whole leading run."""
    once = strip_reply_prefixes(subject)
    assert strip_reply_prefixes(once) == once


@pytest.mark.parametrize(
    ("subject", "tags"),
    [
        ("[#123] Login", (123,)),
        ("Re: [# 7] Login", (7,)),
        ("AW: [#12] Export [#34]", (12, 34)),
        ("[Ticket#12] Export", ()),
        ("#12 Export", ()),
        ("[#abc] Export", ()),
        ("", ()),
    ],
)
def test_find_ticket_tags_when_subject_has_tags(subject: str, tags: tuple[int, ...]) -> None:
    """Tags are ``[#N]`` or ``[# N]``, reported leftmost first."""
    assert find_ticket_tags(subject) == tags


def test_remove_ticket_tags_when_tags_are_anywhere() -> None:
    """Tags disappear and leave single spaces."""
    assert remove_ticket_tags("AW: [#12]  Export [# 34] fehlt") == "AW: Export fehlt"
    assert strip_reply_prefixes(remove_ticket_tags("[#12] Re: Export")) == "Export"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "(no subject)"),
        ("\n \n\t\n", "(no subject)"),
        ("\n\nThe nightly import stopped.\nMore", "The nightly import stopped."),
        ("  Spaces   inside\tline  ", "Spaces inside line"),
    ],
)
def test_subject_from_text_when_mail_has_no_subject(text: str, expected: str) -> None:
    """The first non-empty line becomes the subject."""
    assert subject_from_text(text) == expected


def test_subject_from_text_cuts_at_word_boundary_when_line_is_long() -> None:
    """A long line is cut at a word boundary within the limit and gets an ellipsis."""
    line = "The nightly import stopped after the update and the last successful run was Friday"
    result = subject_from_text(line, limit=40)
    assert result == "The nightly import stopped after the…"
    assert len(result) <= 40


def test_subject_from_text_cuts_hard_when_there_is_no_space() -> None:
    """One endless word is cut at the limit."""
    result = subject_from_text("x" * 200, limit=20)
    assert result == "x" * 19 + "…"


@given(st.text(max_size=200), st.integers(min_value=2, max_value=120))
def test_subject_from_text_stays_within_limit_when_text_is_arbitrary(text: str, limit: int) -> None:
    """Whatever the text, the result fits the limit and is one header-safe line."""
    result = subject_from_text(text, limit=limit)
    assert result == "(no subject)" or len(result) <= limit
    assert result == clean_header_text(result)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Printer\r\n broken", "Printer broken"),
        ("a\tb\x00c\x7fd", "a b c d"),
        ("line\u2028separator", "line separator"),
        ("  padded  ", "padded"),
        ("Bcc: x\r\nSubject: injected", "Bcc: x Subject: injected"),
    ],
)
def test_clean_header_text_when_value_has_control_characters(raw: str, expected: str) -> None:
    """Control characters collapse to one space, so no header line can be injected."""
    assert clean_header_text(raw) == expected


@given(st.text())
def test_clean_header_text_never_leaves_line_breaks(raw: str) -> None:
    """No CR, LF or other control character survives."""
    cleaned = clean_header_text(raw)
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in cleaned)
    assert "\u2028" not in cleaned and "\u2029" not in cleaned
