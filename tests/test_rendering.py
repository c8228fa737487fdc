"""Rendering: packaged templates in both locales, the sandbox, overrides and validation."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.rendering import (
    ACCOUNT_TEMPLATES,
    PARTS,
    TEMPLATE_CONTEXT,
    Renderer,
    TemplateError,
    _sample_variants,
    common_context,
    default_template_dir,
    label,
    sample_context,
)

LOCALES = ("en", "de")
NAMES = sorted(TEMPLATE_CONTEXT)


class DictOverrides:
    """An OverrideSource backed by a dict, as the database-backed one will behave."""

    def __init__(self) -> None:
        self.sources: dict[tuple[str, str, str], str] = {}

    def get(self, name: str, locale: str, part: str) -> str | None:
        return self.sources.get((name, locale, part))


@pytest.fixture
def overrides() -> DictOverrides:
    return DictOverrides()


@pytest.fixture
def renderer(overrides: DictOverrides) -> Renderer:
    return Renderer(default_template_dir(), overrides=overrides)


def variants() -> list[tuple[str, str, int]]:
    return [(name, locale, i) for name in NAMES for locale in LOCALES
            for i in range(len(_sample_variants(name, locale)))]


# --- packaged templates -------------------------------------------------------------


def test_every_contract_template_is_packaged_in_en_and_de(renderer: Renderer) -> None:
    # Each notification of the contract exists in both locales, and nothing else does.
    assert renderer.names() == NAMES
    for name in NAMES:
        assert renderer.locales(name) == ["de", "en"]


@pytest.mark.parametrize("name,locale,variant", variants())
def test_every_template_renders_when_given_sample_data(renderer: Renderer, name: str, locale: str,
                                                       variant: int) -> None:
    # Every packaged template renders every sample variant into a usable mail.
    context = _sample_variants(name, locale)[variant]
    mail = renderer.render(name, locale, context)
    if name not in ACCOUNT_TEMPLATES:   # mails about a ticket carry its tag and subject
        ticket = context["ticket"]
        assert mail.subject.startswith(f"[#{ticket['number']}] ")
        assert ticket["subject"] in mail.subject
    else:
        assert "ticket" not in context and "[#" not in mail.subject
    assert "\n" not in mail.subject and len(mail.subject) <= 200
    assert mail.text.strip() and mail.text.endswith("\n")
    assert "{{" not in mail.text and "{%" not in mail.text
    assert "\n\n\n" not in mail.text
    if name in ("ticket_created", "agent_reply"):
        assert mail.html is not None and mail.html.lstrip().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("locale", LOCALES)
def test_packaged_templates_pass_their_own_validation(renderer: Renderer, name: str, locale: str) -> None:
    # What `templates set` demands of an override, the defaults meet too.
    for part in PARTS:
        path = default_template_dir() / locale / f"{name}.{part}"
        if path.exists():
            renderer.validate(name, locale, part, path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_sample_context_carries_exactly_the_contract_when_previewing(name: str) -> None:
    # The preview data has the common keys plus the template's own, no more.
    for locale in LOCALES:
        assert set(sample_context(name, locale)) == common_context(name) | TEMPLATE_CONTEXT[name]


def test_german_texts_are_formal_with_real_umlauts(renderer: Renderer) -> None:
    # German mails address the customer with "Sie" and use ä/ö/ü/ß, not ae/oe/ue.
    for name in NAMES:
        if name in ("agent_notice", "target_warning"):   # internal mails to agents
            continue
        text = renderer.render(name, "de", sample_context(name, "de")).text
        assert "Guten Tag Jana Müller," in text
        assert " Sie " in text or "Ihre" in text
        assert " du " not in text.lower() and " dein" not in text.lower()
        assert "Grüßen" in text


def test_acknowledgment_explains_refused_ccs_when_sent_to_requester(renderer: Renderer) -> None:
    # Each refused CC is listed with a localised reason, never the raw code.
    context = sample_context("ticket_created", "de")
    text = renderer.render("ticket_created", "de", context).text
    assert "info@kunde.example: Sammel- und Funktionsadressen" in text
    assert "lee@elsewhere.example: die Adresse gehört zu einer anderen Organisation" in text
    assert "new.colleague@kunde.example: für diese Adresse ist kein Servicekonto registriert" in text
    assert "former@kunde.example: das Konto dieser Adresse ist deaktiviert" in text
    for code in ("not_registered", "other_organization", "inactive", "shared_address"):
        assert code not in text


def test_acknowledgment_lists_missing_information_when_problem_lacks_it(renderer: Renderer) -> None:
    # Problem reports get one explanation per missing item, in the reader's language.
    text = renderer.render("ticket_created", "en", sample_context("ticket_created", "en")).text
    assert "HAR file" in text and "F12" in text
    assert "email addresses of the users" in text
    assert "browser's name and version" in text
    assert "the devices used" in text
    assert "har_file" not in text and "page_and_devices" not in text


def test_acknowledgment_mentions_ignored_priority_only_when_flagged(renderer: Renderer) -> None:
    # "Priorities only apply to problems" appears exactly when priority_ignored is set.
    context = sample_context("ticket_created", "en") | {"priority_ignored": True, "is_requester": True}
    context["ticket"] |= {"type": "service_request", "type_label": "Service request", "priority": None}
    assert "Priorities only apply to problems" in renderer.render("ticket_created", "en", context).text
    context["priority_ignored"] = False
    assert "Priorities only apply" not in renderer.render("ticket_created", "en", context).text


def test_acknowledgment_names_unknown_module_and_the_list(renderer: Renderer) -> None:
    # The module written that is not in the list is named, with the available ones.
    text = renderer.render("ticket_created", "de", sample_context("ticket_created", "de")).text
    assert "Das Modul „Reporting“ ist uns nicht bekannt (verfügbar: Reports, Billing, Users, API)" in text


def test_cc_recipient_gets_no_sender_only_remarks(renderer: Renderer) -> None:
    # A CC'd colleague is told who opened the ticket, not the sender's CC/priority issues.
    context = sample_context("ticket_created", "en") | {"is_requester": False}
    text = renderer.render("ticket_created", "en", context).text
    assert "has opened ticket #1042 and added you in copy" in text
    assert "We have not added these addresses" not in text


def test_solved_mail_states_reopen_deadline_in_berlin_time(renderer: Renderer) -> None:
    # The reopen deadline is shown in local (Europe/Berlin) time, formatted per locale.
    context = sample_context("ticket_solved", "de")
    context["reopen_until"] = datetime(2026, 12, 11, 13, 5, tzinfo=timezone.utc)
    assert "bis 11.12.2026 14:05 Uhr" in renderer.render("ticket_solved", "de", context).text
    context = sample_context("ticket_solved", "en") | {"message": None}
    context["reopen_until"] = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)  # CEST, +2
    assert "by 1 Jul 2026, 14:00" in renderer.render("ticket_solved", "en", context).text


def test_agent_notice_explains_commands_and_lists_attachments(renderer: Renderer) -> None:
    # Agents see the hash commands and each attachment with a readable size.
    text = renderer.render("agent_notice", "de", sample_context("agent_notice", "de")).text
    for command in ("#status solved", "#priority high", "#type problem", "#module", "#note"):
        assert command in text
    assert "export-error.har (716,8 KB)" in text
    assert "Eröffnet:     27.11.2026 14:05" in text


def test_agent_notice_subject_names_the_event(renderer: Renderer) -> None:
    # Agents see at a glance what happened: new ticket, reply, reopening, follow-up.
    for context, expected in zip(_sample_variants("agent_notice", "en"),
                                 ("New ticket", "Customer reply", "Reopened", "Follow-up ticket")):
        assert f"] {expected}: " in renderer.render("agent_notice", "en", context).subject


# --- customer text is data, never template source ------------------------------------


def test_customer_text_is_shown_verbatim_when_it_looks_like_a_template(renderer: Renderer) -> None:
    # "{{ 7*7 }}" in a customer's subject or body appears as written, never as 49.
    context = sample_context("ticket_created", "en")
    context["ticket"]["subject"] = "{{ 7*7 }} ${7*7}"
    context["message"]["text"] = "{% for i in range(10**9) %}x{% endfor %} {{ 7*7 }}"
    mail = renderer.render("ticket_created", "en", context)
    assert "{{ 7*7 }} ${7*7}" in mail.subject
    assert "> {% for i in range(10**9) %}x{% endfor %} {{ 7*7 }}" in mail.text
    assert "49" not in mail.text


def test_html_part_escapes_customer_text_and_names(renderer: Renderer) -> None:
    # Markup from customers is escaped in HTML; the text part keeps it literally.
    context = sample_context("ticket_created", "de")
    context["message"]["text"] = "<script>alert(1)</script>\nZeile zwei"
    mail = renderer.render("ticket_created", "de", context)
    assert mail.html is not None
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;<br>" in mail.html
    assert "> <script>alert(1)</script>" in mail.text


def test_subject_is_one_line_when_ticket_subject_carries_crlf(renderer: Renderer) -> None:
    # A customer subject with CR/LF cannot break the rendered subject into lines.
    context = sample_context("agent_reply", "en")
    context["ticket"]["subject"] = "Hi\r\nBcc: mallory@evil.example\u2028X-Other: 1"
    subject = renderer.render("agent_reply", "en", context).subject
    assert subject == "[#1042] Re: Hi Bcc: mallory@evil.example X-Other: 1"


def test_subject_is_one_line_when_template_produces_header_text(renderer: Renderer,
                                                                overrides: DictOverrides) -> None:
    # An override subject that renders "x\r\nBcc: evil@x" still yields a single line.
    overrides.sources[("agent_reply", "en", "subject.txt")] = (
        '[#{{ ticket.number }}] x{{ "\\r\\n" }}Bcc: evil@x\n\n')
    subject = renderer.render("agent_reply", "en", sample_context("agent_reply", "en")).subject
    assert subject == "[#1042] x Bcc: evil@x"


def test_subject_is_capped_when_very_long(renderer: Renderer) -> None:
    # A runaway subject is cut with an ellipsis instead of producing a huge header.
    context = sample_context("agent_reply", "en")
    context["ticket"]["subject"] = "word " * 100
    subject = renderer.render("agent_reply", "en", context).subject
    assert len(subject) <= 200 and subject.endswith("…")


# --- sandbox ------------------------------------------------------------------------

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '{0.__class__}'.format(ticket) }}",
    "{{ '{0.__globals__}'.format(ticket.created_at) }}",
    "{{ message.text.format_map({'a': ticket}) ~ '{a.__class__}'.format_map({'a': ticket}) }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{% include '/etc/passwd' %}",
    "{% import '/etc/passwd' as p %}",
    "{% extends '../../etc/passwd' %}",
    "{{ lipsum.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ ticket.__class__.__init__.__globals__ }}",
    "{{ ticket.created_at.__class__ }}",
    "{{ ticket.pop('number') }}",
    "{{ ticket.update({'number': 1}) }}",
    "{{ ticket.get.__self__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{{ 'x' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ 2 ** 100000 }}",
    "{% for x in [1] recursive %}{{ loop([1, 1]) }}{% endfor %}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payload_is_refused_when_validating(renderer: Renderer, payload: str) -> None:
    # Known sandbox escapes and resource bombs never pass `templates set`, and fail fast.
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        renderer.validate("ticket_created", "en", "body.txt", f"[#{{{{ ticket.number }}}}]\n{payload}")
    assert time.monotonic() - started < 5
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("ticket_created (en, body.txt)")


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payload_is_harmless_when_stored_anyway(renderer: Renderer, overrides: DictOverrides,
                                                     payload: str) -> None:
    # An override that slipped past validation (edited in the database) renders the
    # packaged template instead; nothing of Python's internals leaks into the mail.
    overrides.sources[("agent_reply", "en", "body.txt")] = payload
    mail = renderer.render("agent_reply", "en", sample_context("agent_reply", "en"))
    assert mail.text.startswith("Hello Jane Doe,")
    for leak in ("<class", "<function", "__globals__", "root:", "subclasses"):
        assert leak not in mail.text


def test_sandbox_prints_safe_things_when_template_is_ordinary(renderer: Renderer) -> None:
    # The hardening leaves ordinary template features working: loops, namespace, ranges.
    source = ("[#{{ ticket.number }}] {% set ns = namespace(n=0) %}"
              "{% for m in range(3) %}{% set ns.n = ns.n + loop.index %}{% endfor %}{{ ns.n }} "
              "{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ ticket.subject|upper }}")
    renderer.validate("agent_reply", "en", "subject.txt", source)


def test_dict_lookups_prefer_methods_when_a_key_shares_their_name(renderer: Renderer,
                                                                  overrides: DictOverrides) -> None:
    # As in Jinja, ``d.get`` is the method even when "get" is also a key, ``d['get']`` the
    # item; ``get`` works with a default and inside loops.
    overrides.sources[("agent_reply", "en", "body.txt")] = (
        "{% set d = {'get': 5, 'items': 6, 'x': 7} %}"
        "{{ d.x }} {{ d['get'] }} {{ d.get('x') }} {{ d['items'] }} {{ d.items()|list|length }} "
        "{{ d.get('nope', 'dflt') }} {{ ticket.number }} "
        "{% for i in range(3) %}{% for j in range(2) %}{{ {'a': i}.get('a', j) }}{{ {}.get('b', j) }}"
        "{% endfor %}{% endfor %}")
    text = renderer.render("agent_reply", "en", sample_context("agent_reply", "en")).text
    assert text == "7 5 7 6 3 dflt 1042 000110112021\n"


def test_failure_inside_a_call_is_reported_with_its_line(renderer: Renderer) -> None:
    # A template error names the template line, not a line of the compiled Python.
    with pytest.raises(TemplateError) as caught:
        renderer.validate("agent_reply", "en", "body.txt", "Hello\n\n{{ ticket.get() }}\n")
    assert caught.value.lineno == 3 and caught.value.reason.startswith("render failed: TypeError")


def test_output_is_refused_when_larger_than_the_cap(renderer: Renderer) -> None:
    # Each piece is small, the whole is not: rendering stops at the cap, not at the end.
    source = "[#{{ ticket.number }}]{% for i in range(100) %}{{ 'y' * 9000 }}{% endfor %}"
    with pytest.raises(TemplateError, match="output larger than 524288 characters"):
        renderer.validate("agent_reply", "en", "body.txt", source)


def test_text_body_keeps_one_blank_line_and_no_trailing_spaces(renderer: Renderer,
                                                               overrides: DictOverrides) -> None:
    # Templates that leave runs of blank lines or trailing blanks still give a tidy body.
    overrides.sources[("agent_reply", "en", "body.txt")] = (
        "\n\nA  \n\n\n\n\n\nB\t\r\n\r\n\r\n\r\nC\rD\n\n\n\n\nE\n\n\n")
    text = renderer.render("agent_reply", "en", sample_context("agent_reply", "en")).text
    assert text == "A\n\nB\n\nC\nD\n\nE\n"


# --- validation ---------------------------------------------------------------------


def test_unknown_variable_is_refused_with_its_line_number(renderer: Renderer) -> None:
    # An admin's typo names the variable and the line it is on.
    with pytest.raises(TemplateError) as caught:
        renderer.validate("ticket_created", "de", "body.txt", "Guten Tag,\n\n{{ tiket.number }}\n")
    error = caught.value
    assert (error.name, error.locale, error.part, error.lineno) == ("ticket_created", "de", "body.txt", 3)
    assert error.reason == "unknown variable 'tiket'"
    assert str(error) == "ticket_created (de, body.txt), line 3: unknown variable 'tiket'"


def test_variable_of_another_template_is_refused_when_validating(renderer: Renderer) -> None:
    # reopen_until belongs to ticket_solved; agent_reply does not receive it.
    with pytest.raises(TemplateError, match="unknown variable 'reopen_until'"):
        renderer.validate("agent_reply", "en", "body.txt", "{{ reopen_until }}")


def test_syntax_error_is_refused_with_its_line_number(renderer: Renderer) -> None:
    # A broken tag is reported with the line it is on.
    with pytest.raises(TemplateError) as caught:
        renderer.validate("agent_reply", "en", "body.txt", "one\ntwo {% if %}\nthree")
    assert caught.value.lineno == 2 and caught.value.reason.startswith("syntax error")


def test_unknown_attribute_is_refused_when_rendering_samples(renderer: Renderer) -> None:
    # Typos below the top level are caught by rendering every sample variant.
    with pytest.raises(TemplateError) as caught:
        renderer.validate("ticket_solved", "en", "body.txt",
                          "Hi\n{% if message %}\n{{ message.auhtor_name }}\n{% endif %}")
    assert caught.value.lineno == 3 and "auhtor_name" in caught.value.reason


def test_unknown_filter_is_refused(renderer: Renderer) -> None:
    # A misspelt filter is a compile-time error with its line.
    with pytest.raises(TemplateError, match="line 2"):
        renderer.validate("agent_reply", "en", "body.txt", "x\n{{ ticket.subject|shout }}")


def test_subject_without_ticket_tag_is_refused(renderer: Renderer) -> None:
    # Replies thread by the [#N] tag as a fallback; an override may not drop it.
    with pytest.raises(TemplateError, match=r"\[#1042\]"):
        renderer.validate("agent_reply", "en", "subject.txt", "Re: {{ ticket.subject }}")


def test_unknown_template_or_part_is_refused(renderer: Renderer) -> None:
    # Only the contract's names, parts and well-formed locales can be overridden.
    with pytest.raises(TemplateError):
        renderer.validate("welcome_pack", "en", "body.txt", "hi")
    with pytest.raises(TemplateError):
        renderer.validate("agent_reply", "en", "body.md", "hi")
    with pytest.raises(TemplateError):
        renderer.validate("agent_reply", "../../etc", "body.txt", "hi")


# --- overrides and locales ----------------------------------------------------------


def test_override_takes_effect_when_changed_between_renders(renderer: Renderer,
                                                            overrides: DictOverrides) -> None:
    # Overrides are read on every render: a new version shows up at once, and removing
    # it brings the packaged template back.
    context = sample_context("agent_reply", "de")
    key = ("agent_reply", "de", "subject.txt")
    overrides.sources[key] = "[#{{ ticket.number }}] Antwort vom Support"
    assert renderer.render("agent_reply", "de", context).subject == "[#1042] Antwort vom Support"
    overrides.sources[key] = "[#{{ ticket.number }}] Neue Antwort"
    assert renderer.render("agent_reply", "de", context).subject == "[#1042] Neue Antwort"
    del overrides.sources[key]
    assert renderer.render("agent_reply", "de", context).subject == "[#1042] AW: Export nach Excel bricht ab"


def test_override_for_one_locale_leaves_the_other_alone(renderer: Renderer, overrides: DictOverrides) -> None:
    # A German override does not change English mails.
    overrides.sources[("agent_reply", "de", "body.txt")] = "Kurz: {{ message.text }}"
    assert renderer.render("agent_reply", "de", sample_context("agent_reply", "de")).text.startswith("Kurz:")
    assert renderer.render("agent_reply", "en", sample_context("agent_reply", "en")).text.startswith("Hello")


def test_locale_falls_back_to_default_then_english(overrides: DictOverrides) -> None:
    # Requested locale -> its language -> default locale -> "en".
    german_default = Renderer(default_template_dir(), overrides=overrides, default_locale="de")
    english_default = Renderer(default_template_dir())
    context = sample_context("agent_reply", "de")
    assert "AW:" in german_default.render("agent_reply", "fr", context).subject
    assert "Re:" in english_default.render("agent_reply", "fr", context).subject
    assert "AW:" in english_default.render("agent_reply", "de-AT", context).subject
    assert "Re:" in english_default.render("agent_reply", "../de", context).subject


def test_missing_template_is_an_error(renderer: Renderer) -> None:
    # An unknown template name is an error, never an empty mail.
    with pytest.raises(TemplateError, match="no such template"):
        renderer.render("does_not_exist", "en", sample_context("agent_reply", "en"))


def test_context_missing_a_key_is_an_error_when_no_override(renderer: Renderer) -> None:
    # A caller bug (an incomplete context) is reported, not sent half-rendered.
    context = sample_context("agent_reply", "en")
    del context["message"]
    with pytest.raises(TemplateError, match="message"):
        renderer.render("agent_reply", "en", context)


def test_html_part_is_absent_when_locale_has_none(renderer: Renderer) -> None:
    # Templates without a body.html produce text-only mail.
    assert renderer.render("ticket_reopened", "en", sample_context("ticket_reopened", "en")).html is None


def test_template_dir_is_the_repository_templates_folder() -> None:
    # The packaged folder is the repository's templates/.
    assert default_template_dir() == Path(__file__).resolve().parent.parent / "templates"


# --- filters and labels -------------------------------------------------------------


@pytest.mark.parametrize("locale,expected", [("de", "27.11.2026 14:05"), ("en", "27 Nov 2026, 14:05")])
def test_date_filter_shows_berlin_time_per_locale(renderer: Renderer, overrides: DictOverrides,
                                                  locale: str, expected: str) -> None:
    # UTC in, local Berlin time out, in each locale's usual format.
    overrides.sources[("agent_reply", locale, "body.txt")] = (
        "{{ ticket.created_at|date }}|{{ ticket.created_at|date('date') }}")
    context = sample_context("agent_reply", locale)
    context["ticket"]["created_at"] = datetime(2026, 11, 27, 13, 5, tzinfo=timezone.utc)
    text = renderer.render("agent_reply", locale, context).text
    assert text == f"{expected}|{expected.split(' 14')[0].rstrip(',')}\n"


def test_date_filter_follows_daylight_saving_time(renderer: Renderer, overrides: DictOverrides) -> None:
    # After the March switch Berlin is UTC+2.
    overrides.sources[("agent_reply", "de", "body.txt")] = "{{ ticket.created_at|date }}"
    context = sample_context("agent_reply", "de")
    context["ticket"]["created_at"] = datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)  # just after the switch
    assert renderer.render("agent_reply", "de", context).text == "29.03.2026 03:30\n"


def test_labels_are_localised() -> None:
    # Callers fill *_label fields from these tables.
    assert label("status", "awaiting_reply", "de") == "Wartet auf Ihre Antwort"
    assert label("type", "problem", "de") == "Störung"
    assert label("priority", "blocker", "en") == "Blocker"
    assert label("priority", None, "en") == ""
