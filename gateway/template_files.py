"""One template as one text file, for ``postdesk templates show|edit|set|diff``. Pure.

A notification template has up to three parts (subject, text body, HTML body); an
admin edits them together in one file with a marker line before each part::

    === subject ===
    [#{{ ticket.number }}] Re: {{ ticket.subject }}
    === text ===
    Hello {{ recipient.name }},
    …
    === html ===
    <!DOCTYPE html>…

Shorter forms are accepted too: a file without markers whose first line starts with
``Subject:`` holds the subject on that line and the text body after it; any other file
without markers is the text body alone.

What a file leaves out: no subject keeps the subject in force; no text keeps the text
in force; no HTML while the text is given means *no HTML part*, so the mail shows
exactly the text that was written (an HTML part left from before would show the old
words in most mail programs). No I/O here.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

#: Marker name in the file -> template part (file suffix of the packaged templates).
SECTIONS = {"subject": "subject.txt", "text": "body.txt", "html": "body.html"}
_MARKER_RE = re.compile(r"^=== (subject|text|html) ===[ \t]*$", re.MULTILINE)
_SUBJECT_LINE_RE = re.compile(r"^subject:[ \t]*(.*)$", re.IGNORECASE)


def format_template(parts: Mapping[str, str | None]) -> str:
    """The file form of ``parts`` (by file suffix); parts that are None or "" are left out.

    >>> format_template({"subject.txt": "S\\n", "body.txt": "T\\n"})
    '=== subject ===\\nS\\n=== text ===\\nT\\n'
    """
    chunks = []
    for marker, part in SECTIONS.items():
        source = parts.get(part)
        if source:
            chunks.append(f"=== {marker} ===\n{source if source.endswith(chr(10)) else source + chr(10)}")
    return "".join(chunks)


def parse_template(text: str) -> dict[str, str | None]:
    """The parts a file gives, by file suffix; None: not given (see the module docstring).

    >>> parse_template("Subject: [#{{ ticket.number }}] Hi\\n\\nBody\\n")
    {'subject.txt': '[#{{ ticket.number }}] Hi\\n', 'body.txt': 'Body\\n', 'body.html': ''}
    >>> parse_template("Just a body\\n")["subject.txt"] is None
    True
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    given: dict[str, str] = {}
    markers = list(_MARKER_RE.finditer(text))
    if markers:
        if text[: markers[0].start()].strip():
            raise ValueError("text before the first '=== subject|text|html ===' line")
        for marker, following in zip(markers, [*markers[1:], None]):
            body = text[marker.end() + 1: following.start() if following else len(text)]
            if SECTIONS[marker[1]] in given:
                raise ValueError(f"the part '{marker[1]}' is given twice")
            given[SECTIONS[marker[1]]] = body
    else:
        first, _, rest = text.partition("\n")
        subject = _SUBJECT_LINE_RE.match(first)
        if subject:
            given["subject.txt"] = subject[1] + "\n"
            text = rest[1:] if rest.startswith("\n") else rest
        given["body.txt"] = text
    parts: dict[str, str | None] = {part: given.get(part) for part in SECTIONS.values()}
    if parts["body.txt"] is not None and parts["body.html"] is None:
        parts["body.html"] = ""
    return parts


def merge(current: Mapping[str, str | None], given: Mapping[str, str | None]) -> dict[str, str | None]:
    """The new version: each part from ``given`` where it is not None, else the one in ``current``."""
    return {part: given.get(part) if given.get(part) is not None else current.get(part)
            for part in SECTIONS.values()}


def unified_diff(old: Mapping[str, str | None], new: Mapping[str, str | None], old_label: str,
                 new_label: str) -> str:
    """A unified diff of the file forms of two versions ("" when they are the same)."""
    lines = difflib.unified_diff(format_template(old).splitlines(keepends=True),
                                 format_template(new).splitlines(keepends=True), old_label, new_label)
    return "".join(lines)
