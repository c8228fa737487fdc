"""Ticket fields and agent commands written at the top of a mail body.

Stage: between parse and lifecycle. Input is the visible body text (after
reply stripping) and the configured module names; output is a frozen
:class:`TicketFields` or :class:`AgentCommands` plus the body with the
recognised lines removed. Pure: no I/O here, no configuration reads, no
decisions about what a field means for the ticket (the caller ignores a
priority on a service request, or an unknown module).

Customers write ``Type: problem`` / ``Typ: Störung``, ``Priority: high`` /
``Priorität: hoch`` and ``Module: <name>`` / ``Modul: <name>``; agents write
``#status solved``, ``#priority high``, ``#type problem``, ``#module <name>``
and ``#note`` (DESIGN §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")

SERVICE_REQUEST = "service_request"
PROBLEM = "problem"

_TYPES = {
    "problem": PROBLEM, "incident": PROBLEM, "fault": PROBLEM, "bug": PROBLEM,
    "error": PROBLEM, "störung": PROBLEM, "stoerung": PROBLEM, "fehler": PROBLEM,
    "service request": SERVICE_REQUEST, "request": SERVICE_REQUEST,
    "question": SERVICE_REQUEST, "serviceanfrage": SERVICE_REQUEST,
    "service anfrage": SERVICE_REQUEST, "anfrage": SERVICE_REQUEST,
    "frage": SERVICE_REQUEST,
}
_PRIORITIES = {
    "low": "low", "niedrig": "low", "gering": "low",
    "medium": "medium", "normal": "medium", "mittel": "medium",
    "high": "high", "hoch": "high",
    "blocker": "blocker", "critical": "blocker", "kritisch": "blocker",
}
_STATUSES = {
    "open": "open", "offen": "open", "reopen": "open",
    "awaiting reply": "awaiting_reply", "pending": "awaiting_reply",
    "wartend": "awaiting_reply", "warten auf antwort": "awaiting_reply",
    "solved": "solved", "resolved": "solved", "gelöst": "solved",
    "geloest": "solved", "erledigt": "solved",
}
_NOT_SURE = frozenset({
    "not sure", "unsure", "unknown", "don't know", "dont know", "n/a",
    "nicht sicher", "unbekannt", "weiss nicht", "keine ahnung",  # casefold: ß -> ss
})
_FIELD_KEYS = {
    "type": "type", "typ": "type", "ticket type": "type", "tickettyp": "type",
    "priority": "priority", "prio": "priority", "priorität": "priority",
    "prioritaet": "priority", "prioritat": "priority",
    "module": "module", "modul": "module",
}
_COMMAND_KEYS = {
    "status": "status", "priority": "priority", "prio": "priority",
    "priorität": "priority", "type": "type", "typ": "type",
    "module": "module", "modul": "module",
    "note": "note", "notiz": "note", "internal": "note", "intern": "note",
}
# HTML-to-text conversion leaves bold markers (*Type:* Problem) and
# non-breaking or zero-width spaces around the words.
_INVISIBLE = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " ",
                            "\u200b": None, "\u200e": None, "\ufeff": None})
_FIELD_LINE = re.compile(
    r"^[*_\s]*(?P<key>[^\W\d_][\w \-]{0,20}?)[*_\s]*[:=][*_\s]*(?P<value>.*?)[*_\s]*$"
)
_COMMAND_LINE = re.compile(
    r"^\s*#(?P<key>[^\W\d_][\w-]{0,30})\b\s*[:=]?\s*(?P<value>.*?)\s*$"
)


@dataclass(frozen=True)
class TicketFields:
    """What a customer stated at the top of a new ticket's body."""

    type: str
    type_given: str | None
    priority: str | None
    priority_given: str | None
    module: str | None
    module_given: str | None
    module_unknown: bool
    text: str


@dataclass(frozen=True)
class AgentCommands:
    """What an agent asked for at the top of a reply."""

    status: str | None
    priority: str | None
    type: str | None
    module: str | None
    note: bool
    errors: tuple[str, ...]
    text: str


def _norm(value: str) -> str:
    """Lower-case, drop invisible characters and collapse ``-``/``_``/spaces."""
    value = value.translate(_INVISIBLE).casefold().strip().strip(".!;,")
    return re.sub(r"[\s_\-]+", " ", value).strip()


def _lookup(table: dict[str, str], value: str) -> str | None:
    """Map ``value`` through ``table``, also trying its first word.

    >>> _lookup(_PRIORITIES, "Hoch (Dienst eingeschränkt)")
    'high'
    """
    norm = _norm(value)
    if norm in table:
        return table[norm]
    first = re.split(r"[\s(,;:/]", norm, maxsplit=1)[0]
    return table.get(first)


def _match_module(value: str, modules: Sequence[str]) -> str | None:
    """Return the configured module that ``value`` names, ignoring case."""
    wanted = _norm(value)
    return next((m for m in modules if _norm(m) == wanted), None)


def _is_not_sure(value: str) -> bool:
    """True for "not sure" answers such as ``?``, ``weiß nicht``, ``not sure yet``."""
    norm = _norm(value).replace("\u2019", "'")
    if norm and set(norm) == {"?"}:
        return True
    return any(norm == phrase or norm.startswith(phrase + " ") for phrase in _NOT_SURE)


def _split_top(text: str, read_line: Callable[[str], _T | None]) -> tuple[list[_T], str]:
    """Split the leading lines that ``read_line`` understands from the rest.

    Blank lines before and between those lines are dropped too; the body
    starts at the first other line and is kept verbatim. Without any such
    line ``text`` comes back unchanged.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    items: list[_T] = []
    index = len(lines)
    for number, line in enumerate(lines):
        if not line.translate(_INVISIBLE).strip():
            continue
        item = read_line(line)
        if item is None:
            index = number
            break
        items.append(item)
    if not items:
        return [], text
    return items, "\n".join(lines[index:])


def _field_item(line: str) -> tuple[str, str] | None:
    """Return ``(field, raw value)`` for a customer field line, else None."""
    match = _FIELD_LINE.match(line.translate(_INVISIBLE))
    if not match:
        return None
    key = _FIELD_KEYS.get(_norm(match["key"]))
    return (key, match["value"].strip()) if key else None


def parse_ticket_fields(text: str, modules: Sequence[str]) -> TicketFields:
    """Read ``Type``/``Priority``/``Module`` lines at the top of ``text``.

    >>> f = parse_ticket_fields("Typ: Störung\\nModul: ?\\n\\nHallo", ["Reporting"])
    >>> (f.type, f.module, f.module_unknown, f.text)
    ('problem', None, False, 'Hallo')
    """
    items, rest = _split_top(text, _field_item)
    given = dict(items)
    module_given = given.get("module") or None
    module = _match_module(module_given, modules) if module_given else None
    unknown = bool(module_given) and module is None and not _is_not_sure(module_given)
    return TicketFields(
        type=_lookup(_TYPES, given.get("type", "")) or SERVICE_REQUEST,
        type_given=given.get("type") or None,
        priority=_lookup(_PRIORITIES, given.get("priority", "")),
        priority_given=given.get("priority") or None,
        module=module,
        module_given=module_given,
        module_unknown=unknown,
        text=rest,
    )


def _command_item(line: str) -> tuple[str, str, str] | None:
    """Return ``(command, raw name, value)`` for an ``#command`` line."""
    match = _COMMAND_LINE.match(line.translate(_INVISIBLE))
    if not match:
        return None
    name = match["key"]
    return _COMMAND_KEYS.get(_norm(name), ""), name, match["value"]


def _apply_command(
    found: dict[str, str], errors: list[str], item: tuple[str, str, str], modules: Sequence[str]
) -> None:
    """Record one agent command in ``found`` or explain why it failed."""
    command, name, value = item
    if command == "note":
        return
    if not command:
        errors.append(f"unknown command #{name}")
        return
    if not value:
        errors.append(f"#{name} needs a value")
        return
    if command == "status" and _norm(value) in ("closed", "geschlossen"):
        errors.append(f"#{name} {value}: tickets close by themselves; use #status solved")
        return
    if command == "module":
        found["module"] = _match_module(value, modules) or value
        return
    table = {"status": _STATUSES, "priority": _PRIORITIES, "type": _TYPES}[command]
    mapped = _lookup(table, value)
    if mapped is None:
        errors.append(f"#{name}: unknown value {value!r}")
    else:
        found[command] = mapped


def parse_agent_commands(text: str, modules: Sequence[str]) -> AgentCommands:
    """Read ``#status``/``#priority``/``#type``/``#module``/``#note`` lines.

    A later command of the same kind wins. ``#note`` followed by words on the
    same line keeps those words as the first line of the text. ``#status
    closed`` is refused: tickets close by themselves 14 days after solving.

    >>> c = parse_agent_commands("#status gelöst\\n#note\\nCalled them.", [])
    >>> (c.status, c.note, c.text)
    ('solved', True, 'Called them.')
    """
    items, rest = _split_top(text, _command_item)
    found: dict[str, str] = {}
    errors: list[str] = []
    for item in items:
        _apply_command(found, errors, item, modules)
    notes = [value for command, _, value in items if command == "note"]
    note_words = [value for value in notes if value]
    return AgentCommands(
        status=found.get("status"),
        priority=found.get("priority"),
        type=found.get("type"),
        module=found.get("module"),
        note=bool(notes),
        errors=tuple(errors),
        text="\n".join([*note_words, rest]) if note_words else rest,
    )
