"""Ticket fields and agent commands at the top of a mail body (DESIGN §4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.fields import parse_agent_commands, parse_ticket_fields
from gateway.parsing import parse_message

MODULES = ("Reporting", "Single Sign-On", "User Management", "Billing")
EML_DIR = Path(__file__).parent / "data" / "eml"


@pytest.mark.parametrize(
    ("line", "expected_type"),
    [
        ("Type: problem", "problem"),
        ("TYPE: Problem", "problem"),
        ("type = problem", "problem"),
        ("Type: service request", "service_request"),
        ("Type: service_request", "service_request"),
        ("Type: Service-Request", "service_request"),
        ("Type: question", "service_request"),
        ("Type: request", "service_request"),
        ("Typ: Störung", "problem"),
        ("Typ: STÖRUNG", "problem"),
        ("Typ: Problem", "problem"),
        ("Typ: Fehler", "problem"),
        ("Typ: Serviceanfrage", "service_request"),
        ("Typ: Service-Anfrage", "service_request"),
        ("Typ: Anfrage", "service_request"),
        ("Typ: Frage", "service_request"),
        ("Type: Problem (export broken)", "problem"),
        ("*Type:* Problem", "problem"),
        ("**Type:**\u00a0Problem", "problem"),
        ("*Type: Problem*", "problem"),
        ("Type:\u00a0\u00a0problem", "problem"),
        ("Type: something else", "service_request"),
    ],
)
def test_type_is_read_when_a_type_line_leads(line: str, expected_type: str) -> None:
    """English and German type words map to the two ticket types."""
    fields = parse_ticket_fields(f"{line}\n\nThe export fails.", MODULES)
    assert fields.type == expected_type
    assert fields.type_given
    assert fields.text == "The export fails."


def test_type_defaults_to_service_request_when_no_field_lines() -> None:
    """Without field lines a mail opens a service request and the text is untouched."""
    text = "\nHello,\nhow do I renew my licence?\n"
    fields = parse_ticket_fields(text, MODULES)
    assert (fields.type, fields.type_given) == ("service_request", None)
    assert (fields.priority, fields.module) == (None, None)
    assert fields.text == text


@pytest.mark.parametrize(
    ("value", "priority"),
    [
        ("low", "low"),
        ("Medium", "medium"),
        ("normal", "medium"),
        ("HIGH", "high"),
        ("blocker", "blocker"),
        ("critical", "blocker"),
        ("niedrig", "low"),
        ("mittel", "medium"),
        ("hoch", "high"),
        ("kritisch", "blocker"),
        ("Hoch (Dienst eingeschränkt)", "high"),
        ("high.", "high"),
        ("urgent!!", None),
    ],
)
def test_priority_is_mapped_when_a_priority_line_leads(value: str, priority: str | None) -> None:
    """Priority words map to low/medium/high/blocker; the raw value is kept."""
    fields = parse_ticket_fields(f"Type: problem\nPriority: {value}\nText", MODULES)
    assert fields.priority == priority
    assert fields.priority_given == value


@pytest.mark.parametrize("key", ["Priorität", "Prioritaet", "PRIORITÄT", "Prio"])
def test_priority_key_is_accepted_when_written_in_german(key: str) -> None:
    """German spellings of the key work, with and without umlaut."""
    assert parse_ticket_fields(f"{key}: hoch\nText", MODULES).priority == "high"


def test_priority_is_kept_when_ticket_is_a_service_request() -> None:
    """The caller decides to ignore it; here it is only read."""
    fields = parse_ticket_fields("Type: question\nPriority: high\nText", MODULES)
    assert (fields.type, fields.priority, fields.priority_given) == ("service_request", "high", "high")


@pytest.mark.parametrize(
    ("value", "module", "unknown"),
    [
        ("Reporting", "Reporting", False),
        ("reporting", "Reporting", False),
        ("single sign-on", "Single Sign-On", False),
        ("Single Sign On", "Single Sign-On", False),
        ("user_management", "User Management", False),
        ("Warehouse", None, True),
        ("not sure", None, False),
        ("Not sure yet", None, False),
        ("nicht sicher", None, False),
        ("unbekannt", None, False),
        ("weiß nicht", None, False),
        ("Weiss nicht", None, False),
        ("?", None, False),
        ("???", None, False),
    ],
)
def test_module_is_matched_when_a_module_line_leads(value: str, module: str | None, unknown: bool) -> None:
    """Modules match the configured list ignoring case and separators."""
    fields = parse_ticket_fields(f"Module: {value}\n\nText", MODULES)
    assert (fields.module, fields.module_given, fields.module_unknown) == (module, value, unknown)


def test_module_is_absent_when_value_is_empty() -> None:
    """An empty ``Modul:`` line counts as not given."""
    fields = parse_ticket_fields("Modul:\nText", MODULES)
    assert (fields.module, fields.module_given, fields.module_unknown) == (None, None, False)


def test_fields_are_read_in_any_order_when_separated_by_blank_lines() -> None:
    """Leading blank lines and blank lines between field lines are allowed."""
    text = "\n\nModul: Reporting\n\nPriorität: blocker\nTyp: Störung\n\nHallo,\nder Export geht nicht.\n"
    fields = parse_ticket_fields(text, MODULES)
    assert (fields.type, fields.priority, fields.module) == ("problem", "blocker", "Reporting")
    assert fields.text == "Hallo,\nder Export geht nicht.\n"


def test_fields_stop_when_first_other_line_appears() -> None:
    """A field line after the first body line is body text, not a field."""
    text = "Type: problem\nHello,\nPriority: high\n"
    fields = parse_ticket_fields(text, MODULES)
    assert (fields.type, fields.priority) == ("problem", None)
    assert fields.text == "Hello,\nPriority: high\n"


@pytest.mark.parametrize(
    "text",
    [
        "Hello,\nType: problem\n",
        "> Type: problem\nHello",
        "Subject: Type: problem\nHello",
        "Types of reports: many\nHello",
    ],
)
def test_fields_are_not_read_when_not_at_the_top(text: str) -> None:
    """Only recognised keys at the very top count."""
    fields = parse_ticket_fields(text, MODULES)
    assert fields.type == "service_request"
    assert fields.text == text


def test_fields_handle_crlf_when_body_kept_windows_line_ends() -> None:
    """CRLF bodies are read like LF bodies."""
    fields = parse_ticket_fields("Type: problem\r\nPriority: low\r\n\r\nText\r\n", MODULES)
    assert (fields.type, fields.priority, fields.text) == ("problem", "low", "Text\n")


def test_fields_are_read_when_outlook_de_fixture_is_parsed() -> None:
    """The German Outlook fixture states a high-priority problem in Reporting."""
    parsed = parse_message((EML_DIR / "new_outlook_de_quoted_printable.eml").read_bytes())
    fields = parse_ticket_fields(parsed.text or "", MODULES)
    assert (fields.type, fields.priority, fields.module) == ("problem", "high", "Reporting")
    assert fields.text.startswith("Hallo zusammen,")


def test_fields_are_read_when_thunderbird_fixture_is_parsed() -> None:
    """The Thunderbird flowed fixture states a low-priority problem."""
    parsed = parse_message((EML_DIR / "new_thunderbird_en_format_flowed.eml").read_bytes())
    fields = parse_ticket_fields(parsed.text or "", MODULES)
    assert (fields.type, fields.priority, fields.module) == ("problem", "low", "Reporting")


@given(st.text(max_size=300))
def test_ticket_fields_never_raise_and_only_remove_lines_when_text_is_arbitrary(text: str) -> None:
    """Any text parses; the remaining text is a suffix of the normalised input."""
    fields = parse_ticket_fields(text, MODULES)
    assert fields.type in ("problem", "service_request")
    assert text.replace("\r\n", "\n").endswith(fields.text) or fields.text == text


# -- agent commands ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "attribute", "value"),
    [
        ("#status solved", "status", "solved"),
        ("#status open", "status", "open"),
        ("#status awaiting_reply", "status", "awaiting_reply"),
        ("#status awaiting reply", "status", "awaiting_reply"),
        ("#STATUS Solved", "status", "solved"),
        ("#status: solved", "status", "solved"),
        ("#status gelöst", "status", "solved"),
        ("#status offen", "status", "open"),
        ("#priority high", "priority", "high"),
        ("#priority critical", "priority", "blocker"),
        ("#priorität niedrig", "priority", "low"),
        ("#type problem", "type", "problem"),
        ("#type service request", "type", "service_request"),
        ("#typ Störung", "type", "problem"),
        ("#module reporting", "module", "Reporting"),
        ("#module Warehouse", "module", "Warehouse"),
        ("#modul single sign-on", "module", "Single Sign-On"),
    ],
)
def test_agent_command_is_read_when_it_leads(line: str, attribute: str, value: str) -> None:
    """Each command sets its attribute; the command line leaves the text."""
    commands = parse_agent_commands(f"{line}\n\nDone, see the fix.", MODULES)
    assert getattr(commands, attribute) == value
    assert commands.errors == ()
    assert commands.text == "Done, see the fix."


def test_agent_commands_combine_when_several_lines_lead() -> None:
    """Several commands and a note may come together, in any order."""
    text = "#note\n#priority blocker\n#type problem\n#module Billing\n\nCalled the customer."
    commands = parse_agent_commands(text, MODULES)
    assert commands.note is True
    assert (commands.priority, commands.type, commands.module) == ("blocker", "problem", "Billing")
    assert commands.status is None
    assert commands.text == "Called the customer."


def test_agent_note_keeps_words_when_written_on_the_same_line() -> None:
    """``#note called them`` marks the note and keeps the words."""
    commands = parse_agent_commands("#note called them\nThey will test tomorrow.", MODULES)
    assert commands.note is True
    assert commands.text == "called them\nThey will test tomorrow."


@pytest.mark.parametrize(
    ("text", "error_word"),
    [
        ("#status maybe\nText", "unknown value"),
        ("#status\nText", "needs a value"),
        ("#stauts solved\nText", "unknown command #stauts"),
        ("#priority urgent\nText", "unknown value"),
        ("#status closed\nText", "#status solved"),
    ],
)
def test_agent_command_errors_when_command_or_value_unknown(text: str, error_word: str) -> None:
    """Unknown commands and values are reported, not applied, and leave the text."""
    commands = parse_agent_commands(text, MODULES)
    assert commands.status is None and commands.priority is None
    assert any(error_word in error for error in commands.errors)
    assert commands.text == "Text"


@pytest.mark.parametrize("text", ["Thanks!\n#status solved", "# Heading\nText", "#1 priority\nText"])
def test_agent_commands_are_not_read_when_not_at_the_top(text: str) -> None:
    """Commands only count at the very top, as ``#word``."""
    commands = parse_agent_commands(text, MODULES)
    assert commands == parse_agent_commands(text, MODULES)
    assert (commands.status, commands.note, commands.errors, commands.text) == (None, False, (), text)


def test_agent_later_command_wins_when_repeated() -> None:
    """A repeated command takes its last value."""
    commands = parse_agent_commands("#status open\n#status solved\nText", MODULES)
    assert commands.status == "solved"
