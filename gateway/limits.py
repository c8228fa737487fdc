"""Limits on hostile MIME: measure a message's shape, judge it against ``[limits]``, drop what is over.

- :func:`measure` -> :class:`Shape`: size of the header section, MIME entities, nesting
  depth, attachments and the largest part. A scan of the bytes gives upper bounds first;
  the stdlib parser (no payload decoding) runs only when a bound is past a limit, so
  ordinary mail costs nothing. A structure too deep for the parser counts as too deep.
- :func:`violations` -> what is over, with a reason a sender understands.
- :func:`hold` -> the edge's decision for ``action = refuse | quarantine | drop``.
- :func:`trimmed` -> the message with the offending parts dropped, and notes saying which
  (used by the worker, so a released or ``drop``-mode message is processed within limits).

Pure: no I/O, no clock. Never raises on input bytes (CVE-2014-9472, RT's gateway
exhausted by a crafted mail; the node "few million multiparts" DoS).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32

from gateway.config import LimitsConfig
from gateway.policy import Decision, Verdict

_BODY_TYPES = ("text/plain", "text/html")


@dataclass(frozen=True)
class Shape:
    header_bytes: int
    parts: int
    depth: int                    # 1 for a single-part message; past the parser's reach: a huge number
    attachments: int
    largest_part_bytes: int
    largest_part_name: str = ""


@dataclass(frozen=True)
class Violation:
    limit: str                    # the [limits] key
    reason: str
    droppable: bool = True        # False: no part can be dropped to fix it (the header section)


@dataclass
class _Trim:
    limits: LimitsConfig
    parts: int = 0
    attachments: int = 0
    notes: list[str] = field(default_factory=list)


def header_section(raw: bytes) -> bytes:
    """Bytes up to and including the first empty line."""
    end = re.search(rb"\r?\n\r?\n", raw)
    return raw[: end.end()] if end else raw


def _bounds(raw: bytes) -> Shape:
    """Upper bounds from the bytes alone: every entity starts after a ``--`` line."""
    parts = 1 + raw.count(b"\n--")
    lowered = raw.lower()
    depth = 1 + lowered.count(b"multipart/") + lowered.count(b"message/")
    return Shape(len(header_section(raw)), parts, depth, parts, len(raw))


def _within(shape: Shape, limits: LimitsConfig) -> bool:
    return (shape.parts <= limits.max_mime_parts and shape.depth <= limits.max_mime_depth
            and shape.attachments <= limits.max_attachments and shape.largest_part_bytes <= limits.max_attachment_bytes)


def measure(raw: bytes, limits: LimitsConfig) -> Shape:
    """The message's shape; exact only where an upper bound is past a limit."""
    bounds = _bounds(raw)
    if _within(bounds, limits):
        return bounds
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
    except RecursionError:
        return Shape(bounds.header_bytes, bounds.parts, 10**6, 0, 0)
    return _shape_of(msg, bounds.header_bytes)


def _shape_of(msg: Message, header_bytes: int) -> Shape:
    parts = depth = attachments = largest = 0
    largest_name = ""
    stack: list[tuple[Message, int, bool]] = [(msg, 1, False)]
    while stack:
        part, level, enclosed = stack.pop()
        parts, depth = parts + 1, max(depth, level)
        if part.is_multipart():
            is_message = part.get_content_maintype() == "message"
            attachments += int(is_message and not enclosed)
            stack.extend((child, level + 1, enclosed or is_message) for child in _children(part))
            continue
        attachments += int(_is_attachment(part) and not enclosed)
        size = _payload_bytes(part)
        if size > largest:
            largest, largest_name = size, _name(part)
    return Shape(header_bytes, parts, depth, attachments, largest, largest_name)


def violations(raw: bytes, limits: LimitsConfig) -> list[Violation]:
    """What in ``raw`` is past a limit (empty: nothing)."""
    shape = measure(raw, limits)
    found = []
    if shape.header_bytes > limits.max_header_bytes:
        found.append(Violation("max_header_bytes", f"the header section has {shape.header_bytes} bytes; "
                               f"the limit is {limits.max_header_bytes}", droppable=False))
    if shape.depth > limits.max_mime_depth:
        depth = "more than 500" if shape.depth >= 10**6 else str(shape.depth)
        found.append(Violation("max_mime_depth", f"MIME parts are nested {depth} levels deep; "
                               f"the limit is {limits.max_mime_depth}"))
    if shape.parts > limits.max_mime_parts and shape.depth < 10**6:
        found.append(Violation("max_mime_parts", f"the message has {shape.parts} MIME parts; "
                               f"the limit is {limits.max_mime_parts}"))
    if shape.attachments > limits.max_attachments:
        found.append(Violation("max_attachments", f"the message has {shape.attachments} attachments; "
                               f"the limit is {limits.max_attachments}"))
    if shape.largest_part_bytes > limits.max_attachment_bytes:
        name = f" ({shape.largest_part_name})" if shape.largest_part_name else ""
        found.append(Violation("max_attachment_bytes", f"a part{name} has about {shape.largest_part_bytes} "
                               f"bytes; the limit is {limits.max_attachment_bytes}"))
    return found


def hold(found: list[Violation], action: str) -> Decision | None:
    """The edge's decision about a message with these violations (None: accept as usual)."""
    if not found:
        return None
    reason = "; ".join(v.reason for v in found)
    if action == "refuse":
        return Decision(Verdict.REFUSE, "over-limit", f"refused: message over a limit: {reason}")
    if action == "quarantine" or any(not v.droppable for v in found):
        return Decision(Verdict.QUARANTINE, "over-limit", f"quarantined: message over a limit: {reason}")
    return None


def trimmed(raw: bytes, limits: LimitsConfig) -> tuple[bytes, list[str]]:
    """``raw`` with the parts past a limit dropped, and a note for each drop.

    Returns ``raw`` itself when nothing is over. When the structure cannot be
    rebuilt, the whole body is replaced by a short note (the raw bytes stay archived).
    """
    if _within(_bounds(raw), limits):
        return raw, []
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
        if not msg.is_multipart() and _payload_bytes(msg) > limits.max_attachment_bytes:
            note = f"the body of about {_payload_bytes(msg)} bytes was dropped (limit {limits.max_attachment_bytes})"
            return _headers_only(raw, note), [note]
        state = _Trim(limits)
        state.parts = 1
        _prune(msg, 1, False, state)
        if not state.notes:
            return raw, []
        return msg.as_bytes(), state.notes
    except Exception:  # noqa: BLE001 -- RecursionError, generator errors: keep the headers only
        note = "the body could not be read within the MIME limits and was dropped"
        return _headers_only(raw, note), [note]


def _prune(part: Message, level: int, enclosed: bool, state: _Trim) -> None:
    if not part.is_multipart():
        return
    limits, is_message = state.limits, part.get_content_maintype() == "message"
    children = _children(part)
    if level >= limits.max_mime_depth and children:
        state.notes.append(f"{_count(children)} MIME part(s) nested deeper than {limits.max_mime_depth} "
                           "levels dropped")
        _set_children(part, [])
        return
    kept = []
    for child in children:
        if state.parts >= limits.max_mime_parts:
            state.notes.append(f"{_count([child])} MIME part(s) past the limit of {limits.max_mime_parts} dropped")
            continue
        if not child.is_multipart() and not _keep_leaf(child, enclosed or is_message, state):
            continue
        state.parts += 1
        _prune(child, level + 1, enclosed or is_message, state)
        kept.append(child)
    _set_children(part, kept)


def _keep_leaf(part: Message, enclosed: bool, state: _Trim) -> bool:
    limits, size = state.limits, _payload_bytes(part)
    label = f"'{_name(part)}'" if _name(part) else part.get_content_type()
    if size > limits.max_attachment_bytes:
        state.notes.append(f"part {label} of about {size} bytes dropped (limit {limits.max_attachment_bytes})")
        return False
    if _is_attachment(part) and not enclosed:
        if state.attachments >= limits.max_attachments:
            state.notes.append(f"attachment {label} dropped: more than {limits.max_attachments} attachments")
            return False
        state.attachments += 1
    return True


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _set_children(part: Message, children: list[Message]) -> None:
    if part.get_content_maintype() == "message" and not children:
        note = Message()
        note["Content-Type"] = "text/plain; charset=us-ascii"
        note.set_payload("[dropped by Postdesk: over the MIME limits]\n")
        children = [note]
    part.set_payload(children)


def _count(parts: list[Message]) -> int:
    total, stack = 0, list(parts)
    while stack:
        part = stack.pop()
        total += 1
        stack.extend(_children(part))
    return total


def _is_attachment(part: Message) -> bool:
    """As the parse stage sorts leaves: anything but an unnamed text body is a file."""
    try:
        named = part.get_content_disposition() == "attachment" or bool(part.get_filename())
    except Exception:  # noqa: BLE001 -- broken RFC 2231 parameters
        named = True
    return named or part.get_content_type() not in _BODY_TYPES


def _name(part: Message) -> str:
    try:
        return str(part.get_filename() or "")[:80]
    except Exception:  # noqa: BLE001
        return ""


def _payload_bytes(part: Message) -> int:
    """Decoded size, estimated from the encoded payload (no decoding)."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return 0
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    return len(payload) * 3 // 4 if cte == "base64" else len(payload)


def _headers_only(raw: bytes, note: str) -> bytes:
    msg = BytesHeaderParser(policy=compat32).parsebytes(header_section(raw))
    for name in ("content-type", "content-transfer-encoding", "content-disposition"):
        del msg[name]
    msg["Content-Type"] = "text/plain; charset=us-ascii"
    msg.set_payload(f"[{note}]\n")
    return msg.as_bytes()
