"""Subject-line helpers for the parse and thread stages.

Input is a decoded subject (or body text); output is a cleaned string or the
ticket numbers tagged in it. Pure string functions: no I/O here, no clock, no
configuration.

The reply-prefix rule follows Zammad's: strip any leading run of the localised
"reply"/"forward" markers that mail clients add, including counted forms such
as ``Re[2]:``, but keep every other bracket tag (``[EXTERNAL]``, list tags),
because those are part of what the customer's mail system wrote.
"""

from __future__ import annotations

import re

# Localised reply/forward markers seen in the wild, all followed by a colon:
# EN Re/Fw/Fwd, DE AW/WG/Antw/Antwort, Nordic SV/VS/Vs, NL Antw, IT R/RIF,
# PL Odp/PD, FR TR, ES RV, PT Enc/Res.
_PREFIX_WORDS = (
    "re", "aw", "wg", "fwd", "fw", "sv", "vs", "antw", "antwort", "odp", "pd",
    "rif", "r", "tr", "rv", "enc", "res",
)
_REPLY_PREFIXES = re.compile(
    r"^(?:\s*(?:" + "|".join(_PREFIX_WORDS) + r")"
    r"(?:\s*[\[(]\s*\d{1,4}\s*[\])]|\^\d{1,4})?"  # Re[2]: Re(2): Re^2:
    r"\s*[:\uff1a])+\s*",  # U+FF1A: full-width colon from CJK clients
    re.IGNORECASE,
)
_TICKET_TAG = re.compile(r"\[#\s*(\d{1,12})\s*\]")
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+")
_NO_SUBJECT = "(no subject)"
_ELLIPSIS = "\u2026"


def clean_header_text(s: str) -> str:
    """Collapse CR, LF, tabs and other control characters to single spaces.

    A value cleaned this way can never inject a header line.

    >>> clean_header_text(" Printer\\r\\n\\tbroken ")
    'Printer broken'
    """
    return _CONTROL_RUN.sub(" ", s).strip()


def strip_reply_prefixes(subject: str) -> str:
    """Remove every leading reply/forward marker and the whitespace around it.

    Only the start of the subject is touched; call :func:`remove_ticket_tags`
    first when a ticket tag may precede the markers.

    >>> strip_reply_prefixes("AW: WG: Re[2]: Export schlägt fehl")
    'Export schlägt fehl'
    >>> strip_reply_prefixes("[EXTERNAL] Re: Login")
    '[EXTERNAL] Re: Login'
    """
    return _REPLY_PREFIXES.sub("", subject, count=1).strip()


def find_ticket_tags(subject: str) -> tuple[int, ...]:
    """Return the numbers of all ``[#123]`` tags, leftmost first.

    >>> find_ticket_tags("Re: [#12] Login [# 7]")
    (12, 7)
    """
    return tuple(int(m.group(1)) for m in _TICKET_TAG.finditer(subject))


def remove_ticket_tags(subject: str) -> str:
    """Remove all ``[#123]`` tags and tidy the spaces they leave behind.

    >>> remove_ticket_tags("Re: [#12] Login fails")
    'Re: Login fails'
    """
    return clean_header_text(_TICKET_TAG.sub(" ", subject))


def subject_from_text(text: str, limit: int = 80) -> str:
    """Make a subject for a mail that has none: its first non-empty line.

    A longer line is cut at the last word boundary within ``limit`` characters
    (ellipsis included) and ends with "…".

    >>> subject_from_text("\\n  Export fails since the update\\nDetails")
    'Export fails since the update'
    >>> subject_from_text("")
    '(no subject)'
    """
    line = next((clean_header_text(x) for x in text.splitlines() if x.strip()), "")
    if not line:
        return _NO_SUBJECT
    if len(line) <= limit:
        return line
    room = max(limit - len(_ELLIPSIS), 1)
    cut = line[: room + 1].rsplit(" ", 1)[0] if " " in line[: room + 1] else ""
    if not cut.strip():
        cut = line[:room]
    return cut[:room].rstrip(" ,;:.-") + _ELLIPSIS


_LEADING_TAG = re.compile(r"^\s*(?:\[#\s*\d{1,12}\s*\]\s*)?")
_FIRST_MARKER = re.compile(r"\s*([^\s:\uff1a\[\(\^]+)")


def single_reply_prefix(subject: str) -> str:
    """Keep one reply marker where several are stacked after the optional ticket tag.

    Outbound subjects should read ``[#3] Re: Export``, never ``Re: AW: RE: Export``;
    the first marker is kept as written, every further one is dropped.

    >>> single_reply_prefix("[#3] Re: AW: RE[2]: Export")
    '[#3] Re: Export'
    >>> single_reply_prefix("[#3] Export: Re: question")
    '[#3] Export: Re: question'
    """
    tag = _LEADING_TAG.match(subject).group(0)
    rest = subject[len(tag):]
    run = _REPLY_PREFIXES.match(rest)
    if not run:
        return subject
    marker = _FIRST_MARKER.match(rest).group(1)
    return f"{tag}{marker}: {rest[run.end():]}"
