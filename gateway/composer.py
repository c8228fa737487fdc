"""Notify stage, last step: build the raw RFC 5322 bytes of one rendered notification.

Input: a :class:`~gateway.rendering.RenderedMail` plus addressing and threading values.
Output: bytes with CRLF line ends, 7-bit clean (non-ASCII header text RFC 2047-encoded,
bodies quoted-printable), text/plain or multipart/alternative with text/html.

Must not: send anything, read the clock (``date`` is passed in), or let any value add a
header line. Addresses with CR/LF, or that are not one plain addr-spec, are refused with
``ValueError``; free text (subject, display names, extra header values) is collapsed to
one line first. This Python may predate the generator's own check
(``verify_generated_headers``, CVE-2024-6923), so this module does not rely on it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import quopri
import re
import secrets
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from types import MappingProxyType
from typing import Mapping, Sequence

from gateway.rendering import RenderedMail, one_line

MAX_REFERENCES = 10  # the root plus the last nine (RFC 5322 §3.6.4 allows trimming)
MAX_MSG_ID_CHARS = 250
MAX_CHILD_BLOCKS = 64  # keeps Thread-Index under ~450 characters
MAX_CACHED_PART_CHARS = 32 * 1024  # notification bodies are a few KB; see _part
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_MSG_ID_RE = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+>$")  # printable ASCII without < > and space
_ID_PART = r"[\x21-\x3b\x3d\x3f\x41-\x7e]+"  # printable ASCII without < > @ and space
_OWN_MSG_ID_RE = re.compile(rf"^<{_ID_PART}@{_ID_PART}>$")
_HEADER_NAME_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 ftext
_AUTO_SUBMITTED_RE = re.compile(r"^(?:no|auto-[a-z-]+(?:[ ;(][\x20-\x7e]*)?)$")   # RFC 3834 §5
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_RESERVED = frozenset({
    "date", "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "message-id",
    "in-reply-to", "references", "auto-submitted", "x-auto-response-suppress", "thread-topic",
    "thread-index", "mime-version", "content-type", "content-transfer-encoding", "return-path",
})


CRLF = "\r\n"


def check_address(value: str) -> str:
    """Return ``value`` as one plain addr-spec (IDNA domain), or raise ``ValueError``.

    Refuses CR/LF, spaces, angle brackets, display names, lists, quoted local parts and
    non-ASCII local parts (that would need SMTPUTF8).

    >>> check_address("jana@müller.example")
    'jana@xn--mller-kva.example'
    """
    if not isinstance(value, str) or value.count("@") != 1:
        raise ValueError(f"not a single email address: {value!r}")
    local, domain = value.split("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid domain in email address: {value!r}") from None
    if not _LOCAL_RE.match(local) or not _DOMAIN_RE.match(domain) or len(value) > 254:
        raise ValueError(f"not a single email address: {value!r}")
    return f"{local}@{domain}"


def compose(rendered: RenderedMail, *, from_addr: str, from_name: str, to_addr: str,
            to_name: str | None, reply_to: str, message_id: str, in_reply_to: str | None,
            references: Sequence[str], date: datetime, auto_submitted: str = "auto-generated",
            thread_topic: str | None = None, thread_index: str | None = None,
            extra_headers: Mapping[str, str] = _NO_HEADERS) -> bytes:
    """Build the raw message.

    ``in_reply_to`` is appended to ``references`` when missing. Foreign Message-IDs that
    are malformed are left out rather than refusing the mail; our own ``message_id``
    must be ``<left@right>``.

    Headers are written directly rather than through ``email.message.EmailMessage``,
    whose header registry parses every value again and costs milliseconds per mail:
    every value here is already one line (``one_line``) or a checked address or
    Message-ID, and non-ASCII text is RFC 2047-encoded by ``email.header.Header``.

    :raises ValueError: an address, our Message-ID, ``auto_submitted``, ``thread_index``
        or an extra header name is unusable, or ``date`` is naive.
    """
    headers = [
        ("Date", _date(date)),
        ("From", _address(from_addr, from_name)),
        ("To", _address(to_addr, to_name)),
        ("Reply-To", _address(reply_to, None)),
        ("Subject", _text_header("Subject", one_line(rendered.subject, limit=998))),
        ("Message-ID", _own_message_id(message_id)),
        *_threading(in_reply_to, references),
        ("Auto-Submitted", _auto_submitted(auto_submitted)),
        ("X-Auto-Response-Suppress", "All"),  # Exchange/Outlook: no OOF or read receipts
        *_outlook_threading(thread_topic, thread_index),
        *((_extra_header_name(name), _text_header(name, one_line(str(value), limit=998)))
          for name, value in extra_headers.items()),
        ("MIME-Version", "1.0"),
    ]
    head = "".join(_fold(name, value) for name, value in headers)
    return (head + _body(rendered)).encode("ascii")


def _fold(name: str, value: str) -> str:
    """``Name: value`` CRLF, folded at spaces to lines of at most 78 characters where possible."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} would break the header block")
    if len(name) + 2 + len(value) <= 78:   # most headers: nothing to fold
        return f"{name}: {value}{CRLF}"
    start = f"{name}:"
    lines, line = [], start
    for token in value.split(" "):
        if line != start and len(line) + 1 + len(token) > 78:
            lines.append(line)
            line = ""
        line += f" {token}"
    return CRLF.join([*lines, line]) + CRLF


@functools.lru_cache(maxsize=512)
def _text_header(name: str, value: str) -> str:
    """Header text with only its non-ASCII words RFC 2047-encoded, so "[#12] AW:" stays readable raw.

    Cached: a message's mails share their Thread-Topic and most of their subjects, and
    encoding a non-ASCII word costs more than the rest of the header block.
    """
    if value.isascii() and "=?" not in value and len(value) <= 900:
        return value
    out: list[str] = []
    run: list[str] = []
    for token in value.split(" "):
        if token.isascii() and "=?" not in token and len(token) <= 70:
            if run:
                out.append(_encoded(name, " ".join(run)))
                run = []
            out.append(token)
        else:
            run.append(token)
    if run:
        out.append(_encoded(name, " ".join(run)))
    return " ".join(out)


def _encoded(name: str, text: str) -> str:
    encoded = Header(text, "utf-8", maxlinelen=76, header_name=name).encode(linesep=CRLF)
    return encoded.replace(CRLF + " ", " ").replace(CRLF + "\t", " ")


def _date(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    return format_datetime(value)


def _address(addr: str, name: str | None) -> str:
    """``Name <addr>`` (the name RFC 2047-encoded when it needs to be), or the bare address."""
    if type(addr) is str and (name is None or type(name) is str):
        return _cached_address(addr, name)
    return _format_address(addr, name)   # not text (a caller's bug): checked and refused as ever


@functools.lru_cache(maxsize=1024)
def _cached_address(addr: str, name: str | None) -> str:
    # The same support address, agents and customers recur in every message. A refused
    # address raises, so it is never cached and is checked again each time.
    return _format_address(addr, name)


def _format_address(addr: str, name: str | None) -> str:
    display = one_line(name or "", limit=200)
    return formataddr((display, check_address(addr)), charset="utf-8") if display else check_address(addr)


def _own_message_id(value: str) -> str:
    value = value.strip() if isinstance(value, str) else ""
    if not value.startswith("<"):
        value = f"<{value}>"
    if not _OWN_MSG_ID_RE.match(value) or len(value) > MAX_MSG_ID_CHARS:
        raise ValueError(f"invalid Message-ID: {value!r}")
    return value


def _foreign_message_id(value: str | None) -> str | None:
    value = (value or "").strip()
    if value and not value.startswith("<"):
        value = f"<{value}>"
    return value if _MSG_ID_RE.match(value) and len(value) <= MAX_MSG_ID_CHARS else None


def trim_references(ids: Sequence[str], limit: int = MAX_REFERENCES) -> list[str]:
    """Keep the thread's root and the newest ``limit - 1`` ids.

    >>> trim_references([f"<{i}@x>" for i in range(12)])[:2]
    ['<0@x>', '<3@x>']
    """
    return list(ids) if len(ids) <= limit else [ids[0], *ids[-(limit - 1):]]


def _threading(in_reply_to: str | None, references: Sequence[str]) -> list[tuple[str, str]]:
    parent = _foreign_message_id(in_reply_to)
    ids: list[str] = []
    for candidate in [*references, parent]:
        valid = _foreign_message_id(candidate)
        if valid and valid not in ids:
            ids.append(valid)
    out = [("In-Reply-To", parent)] if parent else []
    if ids:
        out.append(("References", " ".join(trim_references(ids))))
    return out


def _auto_submitted(value: str) -> str:
    if not _AUTO_SUBMITTED_RE.match(value or ""):
        raise ValueError(f"invalid Auto-Submitted value: {value!r}")
    return value


def _outlook_threading(topic: str | None, index: str | None) -> list[tuple[str, str]]:
    out = []
    if topic:
        out.append(("Thread-Topic", _text_header("Thread-Topic", one_line(topic, limit=998))))
    if index:
        if not _BASE64_RE.match(index) or len(index) > 900:
            raise ValueError("Thread-Index must be base64")
        out.append(("Thread-Index", index))
    return out


def _extra_header_name(name: str) -> str:
    if not _HEADER_NAME_RE.match(name or "") or name.lower() in _RESERVED:
        raise ValueError(f"header name not allowed: {name!r}")
    return name


def _transfer_encoding(text: str) -> str:
    plain = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    return "7bit" if plain else "quoted-printable"


def _body(rendered: RenderedMail) -> str:
    """Content headers and body: text/plain, or multipart/alternative with text/html."""
    text = _part("plain", rendered.text if rendered.text.endswith("\n") else rendered.text + "\n")
    if not rendered.html:
        return text
    boundary = f"=_pd_{secrets.token_hex(12)}"
    html = _part("html", rendered.html)
    return (f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}{CRLF}'
            f"--{boundary}{CRLF}{text}{CRLF}--{boundary}{CRLF}{html}{CRLF}--{boundary}--{CRLF}")


def _part(subtype: str, content: str) -> str:
    """One UTF-8 text part with its headers: 7bit when it can be, quoted-printable otherwise.

    A notice about one message often reads the same for several recipients (every
    agent), and encoding is the largest cost here, so parts of notification size are
    cached; a larger one is encoded each time rather than kept in memory.
    """
    if len(content) <= MAX_CACHED_PART_CHARS:
        return _cached_part(subtype, content)
    return _encode_part(subtype, content)


def _encode_part(subtype: str, content: str) -> str:
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if _transfer_encoding(content) == "7bit":
        cte, body = "7bit", CRLF.join(lines)
    else:
        raw = "\n".join(lines).encode("utf-8")
        cte, body = "quoted-printable", quopri.encodestring(raw).decode("ascii").replace("\n", CRLF)
    if not body.endswith(CRLF):
        body += CRLF
    return (f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}{body}")


_cached_part = functools.lru_cache(maxsize=16)(_encode_part)   # one message's worth


# --- Outlook Thread-Index ----------------------------------------------------------

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)


def make_thread_index(root_guid_seed: str, date: datetime, child_count: int = 0) -> str:
    """An Outlook ``Thread-Index`` (MS-OXOMSG 2.2.1.3 PidTagConversationIndex), base64.

    The 22-byte header block is 0x01, the top 40 bits of ``date`` as FILETIME and a GUID
    derived from ``root_guid_seed``. Outlook groups a conversation by this header, so pass
    the same seed *and the same date* (the ticket's creation time; naive means UTC) for
    every mail of a ticket. ``child_count`` 5-byte blocks follow, each encoding its
    position as the time delta so that later mails sort after earlier ones; beyond
    :data:`MAX_CHILD_BLOCKS` the last block carries the real position.
    """
    if child_count < 0:
        raise ValueError("child_count must not be negative")
    if date.tzinfo is None:
        date = date.replace(tzinfo=timezone.utc)
    delta = date.astimezone(timezone.utc) - _FILETIME_EPOCH
    filetime = (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    guid = hashlib.sha256(root_guid_seed.encode("utf-8")).digest()[:16]
    header = b"\x01" + (filetime >> 24).to_bytes(5, "big") + guid
    depth = min(child_count, MAX_CHILD_BLOCKS)
    positions = [*range(1, depth), child_count] if depth else []
    return base64.b64encode(header + b"".join(_child_block(guid, p) for p in positions)).decode("ascii")


def _child_block(guid: bytes, position: int) -> bytes:
    # 1 bit time-difference code (0), 31 bits time delta, 4 bits "random", 4 bits sequence.
    random_nibble = guid[position % len(guid)] & 0x0F
    value = ((position & 0x7FFF_FFFF) << 8) | (random_nibble << 4) | (position & 0x0F)
    return value.to_bytes(5, "big")
