"""Parse stage: raw message bytes -> :class:`ParsedMessage`.

The only module that imports mail-parser. mail-parser parses the bytes (with
its guard against hostile MIME nesting), collects defects and parses address
headers strictly, refusing ambiguous mailboxes instead of guessing. The body
walk is ours: mail-parser joins the text of an attached message into the body
and names unnamed parts randomly, while a ticket needs deterministic file
names, inline flags and forwarded mail kept whole as ``.eml``.

Tolerant by contract: :func:`parse_message` and :func:`parse_headers` never
raise on any input bytes; what was wrong is reported in ``defects`` and the
policy stage decides what it means. Pure: no I/O here, no clock.
"""

from __future__ import annotations

import base64
import binascii
import email
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from types import MappingProxyType

import mailparser
from mailparser.utils import get_addresses

from gateway.subjects import clean_header_text

_MAX_DEPTH = 40
_MAX_DEFECTS = 100
_SURROGATE = re.compile("[\udc80-\udcff]")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MSG_ID = re.compile(r"<[^<>\s]+>")
_CID_REF = re.compile(r"""cid:([^"'\s<>)]+)""", re.IGNORECASE)
# Labels whose bytes are read as UTF-8 when valid (strong evidence), else as
# Windows-1252: mail labelled Latin-1 or ASCII is in practice Windows-1252
# (Outlook's curly quotes and euro sign), as the WHATWG Encoding Standard rules.
_WESTERN = frozenset({"us-ascii", "ascii", "iso-8859-1", "iso8859-1", "latin1", "latin-1",
                      "windows-1252", "cp1252"})
_CODEC_ALIASES = {"iso-8859-8-i": "iso-8859-8", "gb2312": "gb18030", "gbk": "gb18030"}
_EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
    "image/webp": ".webp", "image/bmp": ".bmp", "image/svg+xml": ".svg",
    "image/tiff": ".tif", "application/pdf": ".pdf", "application/zip": ".zip",
    "application/json": ".json", "application/xml": ".xml", "text/csv": ".csv",
    "text/calendar": ".ics", "text/html": ".html", "message/rfc822": ".eml",
    "message/global": ".eml", "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt", "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat", "video/mp4": ".mp4", "audio/mpeg": ".mp3",
}


@dataclass(frozen=True)
class Attachment:
    """One attached or inline file, decoded."""

    filename: str
    content_type: str
    content: bytes
    content_id: str | None
    inline: bool


@dataclass(frozen=True)
class HeaderSummary:
    """What the SMTP edge needs from the header block alone."""

    message_id: str | None
    from_addr: str | None
    from_count: int
    subject: str
    headers: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class ParsedMessage:
    """Everything later stages read from one message; nothing library-shaped."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_addr: str | None
    from_name: str
    from_count: int
    sender: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, tuple[str, ...]]
    date: datetime | None
    defects: tuple[str, ...]


@dataclass
class _Body:
    """Accumulator for the MIME walk."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    files: list[Message] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


# -- text decoding ---------------------------------------------------------


def _decode_bytes(data: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode text bytes by their label, falling back to UTF-8 and Windows-1252.

    Returns the text and whether the bytes fitted the label (False: a guess).
    """
    declared = (charset or "").strip().strip("\"'").split("*")[0].lower() or None
    western = declared is None or declared in _WESTERN
    if western:
        order = ["utf-8", "cp1252", *([declared] if declared else [])]
    else:
        order = [_CODEC_ALIASES.get(declared, declared), "utf-8", "cp1252"]
    for codec in order:
        try:
            text = data.decode(codec)
            text.encode("utf-8")  # some codecs yield lone surrogates
        except (LookupError, UnicodeError, ValueError):   # ValueError: a label with a NUL in it
            continue
        label_allows_fallback = western and declared not in (None, "us-ascii", "ascii")
        return text, codec == order[0] or label_allows_fallback
    return data.decode("cp1252", "replace"), False


def _fix_8bit(value: str) -> str:
    """Turn raw 8-bit header octets (kept as surrogates by the stdlib) into text."""
    if not _SURROGATE.search(value):
        return value
    return _decode_bytes(value.encode("utf-8", "surrogateescape"), None)[0]


def _b64_lenient(data: bytes) -> tuple[bytes, bool]:
    """Decode base64 as mail clients do: keep what decodes, say if repair was needed."""
    compact = b"".join(data.split())
    try:
        return base64.b64decode(compact, validate=True), True
    except (binascii.Error, ValueError):
        pass
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", compact.split(b"=", 1)[0])
    clean = clean[: len(clean) - (len(clean) % 4 == 1)]
    return base64.b64decode(clean + b"=" * (-len(clean) % 4)), False


def _word_bytes(encoding: str, text: str) -> bytes:
    """Bytes of one RFC 2047 encoded word's payload."""
    if encoding in "bB":
        return _b64_lenient(text.encode("ascii", "ignore"))[0]
    return binascii.a2b_qp(text.encode("utf-8"), header=True)


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words leniently (also inside quotes or words).

    Adjacent words are joined before decoding, because clients split
    multi-byte characters across them; whitespace between them is dropped
    (RFC 2047 section 6.2).
    """
    if "=?" not in value:  # no encoded word: most header values
        return value
    out: list[str] = []
    run: list[tuple[str, bytes]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if gap.strip() or not run:
            out += [_flush_words(run), gap]
            run = []
        run.append((match[1].split("*")[0].lower(), _word_bytes(match[2], match[3])))
        pos = match.end()
    out += [_flush_words(run), value[pos:]]
    return "".join(out)


def _flush_words(run: list[tuple[str, bytes]]) -> str:
    """Decode a run of adjacent encoded words, merging same-charset neighbours."""
    pieces: list[tuple[str, bytes]] = []
    for charset, data in run:
        if pieces and pieces[-1][0] == charset:
            pieces[-1] = (charset, pieces[-1][1] + data)
        else:
            pieces.append((charset, data))
    return "".join(_decode_bytes(data, charset)[0] for charset, data in pieces)


def _decode_header(raw: str) -> str:
    """Raw header value -> decoded single-line text."""
    return clean_header_text(_decode_words(_FOLD.sub("", _fix_8bit(str(raw)))))


# -- headers ---------------------------------------------------------------


def _raw_headers(msg: Message) -> dict[str, list[str]]:
    """Lower-cased name -> unfolded raw values (8-bit octets made text)."""
    raw: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        raw.setdefault(str(name).strip().lower(), []).append(_FOLD.sub("", _fix_8bit(str(value))))
    return raw


def _mailboxes(values: Sequence[str]) -> tuple[list[tuple[str, str]], bool]:
    """Parse address header values; also say whether any item was unusable."""
    found: list[tuple[str, str]] = []
    problems: list[dict] = []
    for value in values:
        found += [(n, a) for n, a in get_addresses(value, defects=problems, decode_names=True) if a]
    return found, any(not problem.get("recovered") for problem in problems)


def _addresses(values: Sequence[str]) -> tuple[str, ...]:
    """Lower-cased addr-specs in order, without repeats."""
    return tuple(dict.fromkeys(addr.lower() for _, addr in _mailboxes(values)[0]))


def _from_fields(values: Sequence[str]) -> tuple[str | None, str, int]:
    """From: the single unambiguous mailbox, its display name, the mailbox count."""
    boxes, unusable = _mailboxes(values)
    name = clean_header_text(_decode_words(boxes[0][0])) if boxes else ""
    single = len(boxes) == 1 and not unusable
    return (boxes[0][1].lower() if single else None), name, len(boxes)


def _message_ids(values: Sequence[str]) -> tuple[str, ...]:
    """``<id>`` tokens in order, without repeats; bare ``x@y`` tokens get brackets."""
    ids: list[str] = []
    for value in values:
        found = _MSG_ID.findall(value)
        ids += found or [f"<{token}>" for token in value.split() if "@" in token]
    return tuple(dict.fromkeys(ids))


def _message_id(values: Sequence[str]) -> str | None:
    """The first Message-ID, whitespace removed, or None."""
    compact = "".join(values[0].split()) if values else ""
    match = _MSG_ID.search(compact)
    return match.group() if match else (compact or None)


def _parse_date(values: Sequence[str]) -> datetime | None:
    """First Date header as an aware datetime; None if missing or absurd."""
    try:
        value = parsedate_to_datetime(values[0])
    except (IndexError, TypeError, ValueError, OverflowError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value if 1980 <= value.year <= 2200 else None


def _header_fields(msg: Message) -> dict:
    """Every header-derived field of :class:`ParsedMessage`."""
    raw = _raw_headers(msg)
    return {
        **_summary_fields(raw),
        "in_reply_to": _message_ids(raw.get("in-reply-to", [])),
        "references": _message_ids(raw.get("references", [])),
        "sender": next(iter(_addresses(raw.get("sender", []))), None),
        "to": _addresses(raw.get("to", [])),
        "cc": _addresses(raw.get("cc", [])),
        "reply_to": _addresses(raw.get("reply-to", [])),
        "date": _parse_date(raw.get("date", [])),
    }


def _summary_fields(raw: dict[str, list[str]]) -> dict:
    """The fields of :class:`HeaderSummary`, plus the From display name."""
    from_addr, from_name, from_count = _from_fields(raw.get("from", []))
    headers = {name: tuple(_decode_header(v) for v in values) for name, values in raw.items()}
    return {
        "message_id": _message_id(raw.get("message-id", [])),
        "from_addr": from_addr,
        "from_name": from_name,
        "from_count": from_count,
        "subject": headers.get("subject", ("",))[0],
        "headers": MappingProxyType(headers),
    }


# -- body ------------------------------------------------------------------


def _walk(part: Message, body: _Body, depth: int = 0) -> None:
    """Sort leaf parts into text, html and files; attached messages stay whole."""
    if depth > _MAX_DEPTH:
        body.defects.append("mime: nesting too deep, inner parts dropped")
        return
    if not part.is_multipart() or part.get_content_maintype() == "message":
        _take_leaf(part, body)
        return
    for child in part.get_payload():
        _walk(child, body, depth + 1)


def _take_leaf(part: Message, body: _Body) -> None:
    """Body text for unnamed text/plain and text/html parts, else a file."""
    ctype = part.get_content_type()
    if ctype.startswith("multipart/") and isinstance(part.get_payload(), str):
        ctype = "text/plain"   # a multipart without a usable boundary: its bytes are all we have, keep them readable
        body.defects.append("multipart without boundary read as text")
    named = part.get_content_disposition() == "attachment" or bool(_given_filename(part))
    if ctype not in ("text/plain", "text/html") or named:
        body.files.append(part)
        return
    data, clean = _leaf_bytes(part)
    charset = part.get_content_charset()
    text, fits = _decode_bytes(data, charset)
    if not clean:
        body.defects.append(f"{ctype}: broken base64, kept what decodes")
    if not fits:
        body.defects.append(f"{ctype}: not valid {charset or 'utf-8'}, decoded leniently")
    # NUL is no text (and PostgreSQL refuses it in text columns); line ends become \n
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    if ctype == "text/html":
        body.htmls.append(text)
    elif str(part.get_param("format", "")).lower() == "flowed":
        body.texts.append(_unflow(text, str(part.get_param("delsp", "")).lower() == "yes"))
    else:
        body.texts.append(text)


def _unflow(text: str, delsp: bool) -> str:
    """Join soft line breaks of ``format=flowed`` text (RFC 3676 section 4)."""
    out: list[str] = []
    joining, last_depth = False, -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content  # space-stuffing
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if joining and depth == last_depth:
            out[-1] += content
        else:
            out.append(">" * depth + (" " if depth and content else "") + content)
        joining, last_depth = flowed, depth
    return "\n".join(out)


def _leaf_bytes(part: Message) -> tuple[bytes, bool]:
    """Decoded payload of a part and whether it decoded cleanly."""
    if part.is_multipart():  # message/* parts: keep the whole message
        return b"\n".join(_flatten(m) for m in part.get_payload()), True
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64":
        encoded = part.get_payload(decode=False)
        if isinstance(encoded, str):
            return _b64_lenient(encoded.encode("ascii", "ignore"))
    payload = part.get_payload(decode=True)
    return (payload if isinstance(payload, bytes) else b""), True


def _flatten(msg: Message) -> bytes:
    """Serialise an attached message, surviving charsets the generator refuses."""
    try:
        return msg.as_bytes()
    except Exception:  # noqa: BLE001 -- stdlib generator errors vary by defect
        return msg.as_string().encode("utf-8", "surrogateescape")


def _given_filename(part: Message) -> str:
    """The decoded file name the sender gave, without any path, or ""."""
    try:
        name = part.get_filename() or ""
    except Exception:  # noqa: BLE001 -- broken RFC 2231 parameters: treat as unnamed
        return ""
    name = clean_header_text(_decode_words(_fix_8bit(str(name))))
    name = re.split(r"[\\/]", name)[-1].strip()
    return "" if name.strip(".") == "" else name


def _attachment(part: Message, number: int, cids: set[str], body: _Body) -> Attachment:
    """Build one :class:`Attachment` from a file part."""
    ctype = part.get_content_type()
    name = _given_filename(part) or f"attachment-{number}{_extension(ctype)}"
    if _extension(ctype) == ".eml" and not name.lower().endswith(".eml"):
        name += ".eml"
    content, clean = _leaf_bytes(part)
    if not clean:
        body.defects.append(f"attachment {name!r}: broken base64, kept what decodes")
    cid = _decode_header(str(part.get("content-id", ""))).strip("<> ") or None
    inline = part.get_content_disposition() == "inline" or (cid is not None and cid in cids)
    return Attachment(name, ctype, content, cid, inline)


def _extension(ctype: str) -> str:
    """File name extension for a derived attachment name."""
    return _EXTENSIONS.get(ctype, ".txt" if ctype.startswith("text/") else ".bin")


def _body_fields(msg: Message) -> tuple[dict, list[str]]:
    """text, html and attachments of a parsed message, plus walk defects."""
    body = _Body()
    _walk(msg, body)
    html = "\n".join(body.htmls) if body.htmls else None
    cids = {urllib.parse.unquote(ref) for ref in _CID_REF.findall(html or "")}
    attachments = tuple(_attachment(p, n, cids, body) for n, p in enumerate(body.files, 1))
    text = "\n".join(body.texts) if body.texts else None
    return {"text": text, "html": html, "attachments": attachments}, body.defects


# -- entry points ----------------------------------------------------------


def _load(raw: bytes) -> tuple[Message | None, list[str]]:
    """Parse with mail-parser; fall back to the stdlib parser, then to nothing."""
    try:
        parser = mailparser.MailParser.from_bytes(raw)
        # mail-parser reports defects as [{part: [defect, ...]}, ...]
        return parser.message, [f"{where}: {what}" for group in parser.defects
                                for where, items in group.items() for what in items]
    except Exception as exc:  # noqa: BLE001 -- never raise on input bytes
        note = f"mail-parser failed ({type(exc).__name__}); stdlib parser used"
    try:
        return email.message_from_bytes(raw, policy=compat32), [note]
    except Exception as exc:  # noqa: BLE001
        return None, [note, f"stdlib parser failed ({type(exc).__name__})"]


def _header_block(raw: bytes) -> bytes:
    """Bytes up to and including the first blank line."""
    end = re.search(rb"\r?\n\r?\n", raw)
    return raw[: end.end()] if end else raw


def _headers_only(raw: bytes) -> Message:
    """The header block as a Message; cheap, and needs no body."""
    return BytesHeaderParser(policy=compat32).parsebytes(_header_block(raw))


def _fallback(raw: bytes, defects: list[str]) -> ParsedMessage:
    """Header fields only, the rest of the bytes as plain text."""
    try:
        fields = _header_fields(_headers_only(raw))
    except Exception as exc:  # noqa: BLE001
        defects = [*defects, f"headers unreadable ({type(exc).__name__})"]
        fields = _header_fields(Message())
    body = _decode_bytes(raw[len(_header_block(raw)) :], None)[0]
    return ParsedMessage(
        **fields, text=body.replace("\x00", "").replace("\r\n", "\n"), html=None, attachments=(),
        defects=tuple(defects[:_MAX_DEFECTS]),
    )


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one message; never raises, reports problems in ``defects``.

    >>> m = parse_message(b"From: Alice <ALICE@customer.example>\\r\\nSubject: Hi\\r\\n\\r\\nHello\\r\\n")
    >>> (m.from_addr, m.subject, m.text)
    ('alice@customer.example', 'Hi', 'Hello\\n')
    """
    data = bytes(raw)
    msg, defects = _load(data)
    if msg is None:
        return _fallback(data, defects)
    try:
        fields = _header_fields(msg)
        body, walk_defects = _body_fields(msg)
    except Exception as exc:  # noqa: BLE001 -- never raise on input bytes
        return _fallback(data, [*defects, f"parse failed ({type(exc).__name__})"])
    all_defects = list(dict.fromkeys([*defects, *walk_defects]))[:_MAX_DEFECTS]
    return ParsedMessage(**fields, **body, defects=tuple(all_defects))


def parse_headers(raw: bytes) -> HeaderSummary:
    """Cheap header-only summary for the SMTP edge; never raises.

    >>> parse_headers(b"From: a@x.example, b@x.example\\r\\n\\r\\n").from_count
    2
    """
    try:
        fields = _summary_fields(_raw_headers(_headers_only(bytes(raw))))
    except Exception:  # noqa: BLE001 -- an unreadable header block is "nothing known"
        fields = _summary_fields({})
    del fields["from_name"]
    return HeaderSummary(**fields)
