"""Notify stage, rendering: turn one notification's context into subject, text and HTML.

Input: a template name (``ticket_created`` …), a locale and a context of plain values
(dicts, lists, str, int, bool, datetime) as listed in :data:`TEMPLATE_CONTEXT`.
Output: a :class:`RenderedMail`. Template sources come from an :class:`OverrideSource`
(the admins' overrides, stored in the database) first and from the packaged
``templates/<locale>/<name>.<part>`` files second; the first match wins.

Must not: touch the database, the network or the clock; hand a template ORM objects or
anything callable; ever use customer text as template source (it is only a value); let
a template reach Python internals or the file system. Templates run in Jinja's
immutable sandbox without a loader (``include``, ``import`` and ``extends`` are
refused), under a step, time and output budget.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import re
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol
from zoneinfo import ZoneInfo

import markupsafe
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

PARTS = ("subject.txt", "body.txt", "body.html")
SUBJECT_MAX_CHARS = 200
OUTPUT_MAX_CHARS = 512 * 1024  # per part; a notification is a few KB
MAX_STEPS = 200_000  # loop iterations plus calls, per part
MAX_SECONDS = 2.0  # wall time per part
MAX_SEQUENCE_ITEMS = 100_000  # 'x' * n and [..] * n

COMMON_CONTEXT = frozenset({"recipient", "ticket", "support_address", "product_name"})
#: The variables each template may use on top of :data:`COMMON_CONTEXT` (the contract
#: with ``notifications.py``; ``validate`` refuses any other name).
TEMPLATE_CONTEXT: dict[str, frozenset[str]] = {
    "ticket_created": frozenset({
        "is_requester", "message", "ccs_added", "ccs_refused", "priority_ignored",
        "module_unknown", "modules", "missing_info",
    }),
    "agent_reply": frozenset({"message"}),
    "ticket_solved": frozenset({"message", "reopen_until"}),
    "ticket_reopened": frozenset(),
    "followup_created": frozenset({"previous"}),
    "agent_notice": frozenset({"message", "event", "attachments"}),
    "status_update_request": frozenset({"is_requester", "waiting_days", "close_after_days", "close_at"}),
    "ticket_auto_closed": frozenset({"is_requester", "rule", "days"}),
    "target_warning": frozenset({"stage", "due_at", "hours_left"}),
    "follower_new_ticket": frozenset({"message", "commands"}),
    "invitation": frozenset({"organization", "commands", "modules"}),
    "welcome": frozenset({"organization", "commands", "modules"}),
    "follow_confirmation": frozenset({"organization", "following", "changed", "commands"}),
    "request_digest": frozenset({"organization", "sections", "commands"}),
    "sender_refused": frozenset({"rule", "original_subject"}),
}

#: Templates about a person rather than a ticket (onboarding, email commands): their
#: context has no ``ticket`` and their subject carries no ``[#N]`` tag.
ACCOUNT_TEMPLATES: frozenset[str] = frozenset({
    "invitation", "welcome", "follow_confirmation", "request_digest",
    "sender_refused",   # mail from a mailbox whose sender was refused (imap_poller, refusal_notice)
})


def common_context(name: str) -> frozenset[str]:
    """The variables every mail of template ``name`` gets (without ``ticket`` for account mails)."""
    return COMMON_CONTEXT - {"ticket"} if name in ACCOUNT_TEMPLATES else COMMON_CONTEXT


#: Localised labels for the ``*_label`` context fields; see :func:`label`.
LABELS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "status": {"open": "Open", "awaiting_reply": "Awaiting your reply",
                   "solved": "Solved", "closed": "Closed"},
        "type": {"service_request": "Service request", "problem": "Problem"},
        "priority": {"low": "Low", "medium": "Medium", "high": "High", "blocker": "Blocker"},
    },
    "de": {
        "status": {"open": "Offen", "awaiting_reply": "Wartet auf Ihre Antwort",
                   "solved": "Gelöst", "closed": "Geschlossen"},
        "type": {"service_request": "Serviceanfrage", "problem": "Störung"},
        "priority": {"low": "Niedrig", "medium": "Mittel", "high": "Hoch", "blocker": "Blocker"},
    },
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LOCALE_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_LANGUAGE_SEPARATOR_RE = re.compile(r"[-_]")
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class RenderedMail:
    """One notification, rendered: ``subject`` is a single line, ``html`` may be None."""

    subject: str
    text: str
    html: str | None


class TemplateError(Exception):
    """A template cannot be used: syntax error, unknown variable, refused construct or a
    failure to render. ``str()`` is one line an admin can act on."""

    def __init__(self, name: str, locale: str, reason: str, lineno: int | None = None,
                 part: str | None = None) -> None:
        self.name, self.locale, self.reason, self.lineno, self.part = name, locale, reason, lineno, part
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.locale}, {self.part}" if self.part else self.locale
        line = f", line {self.lineno}" if self.lineno else ""
        return f"{self.name} ({where}){line}: {self.reason}"


class OverrideSource(Protocol):
    """Where admin overrides come from (the database). ``None``: no override in force."""

    def get(self, name: str, locale: str, part: str) -> str | None: ...


def label(kind: str, code: str | None, locale: str) -> str:
    """The localised label of a status, type or priority code ("" for None).

    >>> label("status", "awaiting_reply", "de")
    'Wartet auf Ihre Antwort'
    """
    if not code:
        return ""
    table = LABELS.get(_language(locale), LABELS["en"])
    return table[kind].get(code, code)


def default_template_dir() -> Path:
    """The packaged templates folder of this repository."""
    return Path(__file__).resolve().parent.parent / "templates"


# --- budget and sandbox -------------------------------------------------------------


class _Refused(Exception):
    """A construct this renderer does not allow (reported with its line)."""

    def __init__(self, reason: str, lineno: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.lineno = reason, lineno


class _BudgetExceeded(SecurityError):
    """The template used more loop iterations, calls or time than a notification needs."""


class _Budget:
    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0 or (self.steps % 512 == 0 and time.monotonic() > self.deadline):
            raise _BudgetExceeded(f"template used more than {MAX_STEPS} steps or {MAX_SECONDS:g} s")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    # Wrapped around every for-loop's iterable at compile time (see _guard_loops).
    for item in iterable:
        _tick()
        yield item


#: Every name ``getattr`` finds on a dict (its methods and dunders); see ``_Sandbox.getattr``.
_DICT_ATTRIBUTES = frozenset(dir(dict))
_BUILTIN_METHOD = type({}.get)
_MISSING = object()


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus step accounting and caps on ``*`` and ``**``.

    Jinja's own sandbox bounds ``range()`` but neither CPU time nor memory; the caps
    stop ``'x' * 10**9`` and ``10**10**10`` before Python evaluates them.
    """

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``ticket.number`` and ``labels.get`` on a plain dict, looked up directly.

        Jinja tries ``getattr(obj, "number")`` first and takes the item only after the
        ``AttributeError``, which costs more than the rest of the lookup; for a method it
        asks the sandbox's rules each time. A key that is no attribute of a dict resolves
        to the same item either way, and ``get`` is a method the rules always allow;
        everything else (``items``, ``__class__``, a missing key, any other type) takes
        the sandbox's own path.
        """
        if type(obj) is dict and type(attribute) is str:
            if attribute not in _DICT_ATTRIBUTES:
                value = obj.get(attribute, _MISSING)
                if value is not _MISSING:
                    return value
            elif attribute == "get":
                return obj.get
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Count the call; a plain dict's ``get`` (how templates look labels up) is called directly.

        For that one method the sandbox's checks always pass and Jinja's ``Context.call``
        only drops the loop and block variables it passes along.
        """
        _tick()
        if type(__obj) is _BUILTIN_METHOD and type(__obj.__self__) is dict and __obj.__name__ == "get":
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            return __obj(*args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > 4096:
                raise SecurityError("the result of ** would be too large")
        if operator == "*":
            seq, count = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                if len(seq) * count > MAX_SEQUENCE_ITEMS:
                    raise SecurityError("the result of * would be too large")
        return super().call_binop(context, operator, left, right)


def _check_structure(ast: nodes.Template) -> None:
    refused = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
    for node in ast.find_all(refused):
        raise _Refused("templates cannot include, import or extend other templates", node.lineno)
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            raise _Refused("recursive loops are not allowed", loop.lineno)


def _guard_loops(ast: nodes.Template) -> None:
    for loop in list(ast.find_all(nodes.For)):
        loop.iter = nodes.Filter(loop.iter, "_loop_guard", [], [], None, None, lineno=loop.lineno)


# --- filters ------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _language(locale: str | None) -> str:
    # Cached: every label and every date or size filter asks, for a handful of locales.
    return _LANGUAGE_SEPARATOR_RE.split(locale or "en", maxsplit=1)[0].lower()


def _template_language(context: Context) -> str:
    # Compiled templates are named "<locale>/<name>.<part>": dates and numbers follow
    # the language the text is written in.
    return _language((context.name or "en").split("/", 1)[0])


def format_local_datetime(value: datetime, language: str, zone: ZoneInfo, style: str = "datetime") -> str:
    """Format an (aware, UTC) datetime in local time.

    >>> from datetime import datetime, timezone
    >>> format_local_datetime(datetime(2026, 11, 27, 13, 5, tzinfo=timezone.utc), "de", ZoneInfo("Europe/Berlin"))
    '27.11.2026 14:05'
    """
    if not isinstance(value, datetime):
        raise TypeError(f"date filter needs a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    local = value.astimezone(zone)
    if language == "de":
        day, sep = f"{local.day:02d}.{local.month:02d}.{local.year}", " "
    else:
        day, sep = f"{local.day} {_MONTHS_EN[local.month - 1]} {local.year}", ", "
    return day if style == "date" else f"{day}{sep}{local:%H:%M}"


def format_size(size: int, language: str) -> str:
    """A byte count for people: ``format_size(1536, "de") == '1,5 KB'``."""
    if size < 1024:
        return f"{size} Bytes" if language == "de" else f"{size} bytes"
    value, unit = float(size), "B"
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024:
            break
    text = f"{value:.1f}"
    return f"{text.replace('.', ',') if language == 'de' else text} {unit}"


def quote(text: Any) -> str:
    """Prefix every line with "> ", as mail clients quote."""
    lines = str(text).strip("\r\n").splitlines() or [""]
    return "\n".join(f"> {line}" if line.strip() else ">" for line in lines)


def text_to_html(text: Any) -> markupsafe.Markup:
    """Escape plain text and keep its paragraphs and line breaks."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", str(text).strip()) if p.strip()]
    html = "".join(
        "<p>" + "<br>\n".join(str(markupsafe.escape(line)) for line in p.splitlines()) + "</p>\n"
        for p in paragraphs
    )
    return markupsafe.Markup(html)


def _make_environment(zone: ZoneInfo) -> _Sandbox:
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html")),
        trim_blocks=True,
        lstrip_blocks=True,
        cache_size=0,
        auto_reload=False,
    )
    env.globals = {key: env.globals[key] for key in ("range", "dict", "namespace")}

    @pass_context
    def date(context: Context, value: datetime, style: str = "datetime") -> str:
        return format_local_datetime(value, _template_language(context), zone, style)

    @pass_context
    def filesize(context: Context, value: int) -> str:
        return format_size(int(value), _template_language(context))

    env.filters.update(date=date, filesize=filesize, quote=quote, text_to_html=text_to_html,
                       _loop_guard=_loop_guard)
    return env


# --- the renderer -------------------------------------------------------------------


class _OverrideBroken(Exception):
    def __init__(self, error: TemplateError) -> None:
        super().__init__(str(error))
        self.error = error


class Renderer:
    """Renders notifications from overrides first, packaged templates second.

    Compiled templates are cached by source text, so a new override takes effect on the
    next render. The packaged files are part of the installed program and are read once
    per process. A broken override never stops a mail: it is logged and the packaged
    template is used instead.
    """

    def __init__(self, template_dir: Path, overrides: OverrideSource | None = None,
                 default_locale: str = "en", display_timezone: str = "Europe/Berlin") -> None:
        self._dir = Path(template_dir)
        self._overrides = overrides
        self._default_locale = default_locale
        self._env = _make_environment(ZoneInfo(display_timezone))
        self._compiled = functools.lru_cache(maxsize=512)(self._compile)
        self._packaged = functools.lru_cache(maxsize=512)(self._read_packaged)

    def refresh_overrides(self) -> None:
        """Look for new overrides now (once per message, before its mails are rendered)."""
        refresh = getattr(self._overrides, "refresh", None)
        if refresh is not None:
            refresh()

    def names(self) -> list[str]:
        """Every template name in the packaged folder."""
        return sorted({p.name[: -len(".body.txt")] for p in self._dir.glob("*/*.body.txt")})

    def locales(self, name: str) -> list[str]:
        """The packaged locales of one template."""
        if not _NAME_RE.match(name):
            return []
        return sorted(p.parent.name for p in self._dir.glob(f"*/{name}.body.txt"))

    def render(self, name: str, locale: str, context: Mapping[str, Any]) -> RenderedMail:
        """Render ``name`` for ``locale`` (falling back to the default locale, then "en").

        :raises TemplateError: no such template, or the packaged template fails.
        """
        try:
            return self._render(name, locale, context, use_overrides=True)
        except _OverrideBroken as broken:
            log.error("override of %s failed, using the packaged template: %s", name, broken.error)
            try:
                return self._render(name, locale, context, use_overrides=False)
            except _OverrideBroken as again:  # cannot happen without overrides
                raise again.error from None

    def validate(self, name: str, locale: str, part: str, source: str) -> None:
        """Check a candidate override before it is stored.

        :raises TemplateError: syntax error, refused construct, unknown variable, a
            failure to render against the sample data, or a subject without its
            ``[#N]`` tag.
        """
        if name not in TEMPLATE_CONTEXT or part not in PARTS or not _LOCALE_RE.match(locale or ""):
            raise TemplateError(name, locale, "no such template, locale or part", part=part)
        template_name = f"{locale}/{name}.{part}"
        try:
            ast = self._env.parse(source, template_name)
            _check_structure(ast)
            undeclared = find_undeclared_variables(ast)
        except (TemplateSyntaxError, _Refused) as exc:
            raise _as_template_error(exc, name, locale, part, "") from None
        unknown = sorted(undeclared - common_context(name) - TEMPLATE_CONTEXT[name] - set(self._env.globals))
        if unknown:
            lineno = _first_use(ast, unknown[0])
            raise TemplateError(name, locale, f"unknown variable {unknown[0]!r}", lineno, part)
        for context in _sample_variants(name, locale):
            output = self._render_part(name, locale, part, source, context)
            _check_output(name, locale, part, output, context)

    # -- internals --

    def _render(self, name: str, locale: str, context: Mapping[str, Any], *,
                use_overrides: bool) -> RenderedMail:
        chosen, sources = self._resolve(name, locale, use_overrides)
        out: dict[str, str] = {}
        for part, (source, from_override) in sources.items():
            try:
                out[part] = self._render_part(name, chosen, part, source, context)
            except TemplateError as exc:
                raise (_OverrideBroken(exc) if from_override else exc)
        html = out.get("body.html")
        return RenderedMail(
            subject=one_line(out["subject.txt"]),
            text=_tidy_text(out["body.txt"]),
            html=html if html and html.strip() else None,
        )

    def _resolve(self, name: str, locale: str,
                 use_overrides: bool) -> tuple[str, dict[str, tuple[str, bool]]]:
        if _NAME_RE.match(name):
            for candidate in _locale_chain(locale, self._default_locale):
                found = {part: self._source(name, candidate, part, use_overrides) for part in PARTS}
                if found["subject.txt"] and found["body.txt"]:
                    return candidate, {part: src for part, src in found.items() if src is not None}
        raise TemplateError(name, locale, "no such template")

    def _source(self, name: str, locale: str, part: str, use_overrides: bool) -> tuple[str, bool] | None:
        if use_overrides and self._overrides is not None:
            text = self._overrides.get(name, locale, part)
            if text is not None:
                return text, True
        text = self._packaged(name, locale, part)
        return (text, False) if text is not None else None

    def _read_packaged(self, name: str, locale: str, part: str) -> str | None:
        try:
            return (self._dir / locale / f"{name}.{part}").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _compile(self, template_name: str, source: str) -> Template:
        ast = self._env.parse(source, template_name)
        _check_structure(ast)
        _guard_loops(ast)
        code = self._env.compile(ast, template_name, _filename(template_name))
        # A plain copy rather than make_globals' ChainMap over the environment's globals:
        # those never change after _make_environment, and every render iterates them twice.
        return self._env.template_class.from_code(self._env, code, dict(self._env.globals))

    def _render_part(self, name: str, locale: str, part: str, source: str,
                     context: Mapping[str, Any]) -> str:
        template_name = f"{locale}/{name}.{part}"
        try:
            return _run(self._compiled(template_name, source), context)
        except Exception as exc:  # noqa: BLE001 - every template failure becomes a TemplateError
            raise _as_template_error(exc, name, locale, part, _filename(template_name)) from exc


@functools.lru_cache(maxsize=256)
def _locale_chain(locale: str, default_locale: str) -> tuple[str, ...]:
    """The locales to try, each once: the requested one, its language, the default, "en".

    Cached: it is the same handful of locales for every mail.
    """
    chain: list[str] = []
    for candidate in (locale, _language(locale), default_locale, "en"):
        if candidate and _LOCALE_RE.match(candidate) and candidate not in chain:
            chain.append(candidate)
    return tuple(chain)


def _filename(template_name: str) -> str:
    return f"<template {template_name}>"


def _run(template: Template, context: Mapping[str, Any]) -> str:
    """Render under a fresh budget, stopping as soon as the output passes its cap.

    This is ``Template.generate`` inlined: its extra generator layer and its copy of the
    context (``new_context`` makes one anyway) cost per chunk and per part, and a part
    yields a chunk per literal and per expression.
    """
    token = _budget.set(_Budget())
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.root_render_func(template.new_context(context)):
            size += len(chunk)
            if size > OUTPUT_MAX_CHARS:
                break
            chunks.append(chunk)
    except Exception:  # noqa: BLE001 - re-raised with the template's lines, as generate() does
        template.environment.handle_exception()
    finally:
        _budget.reset(token)
    if size > OUTPUT_MAX_CHARS:
        raise _Refused(f"output larger than {OUTPUT_MAX_CHARS} characters")
    return "".join(chunks)


def _as_template_error(exc: Exception, name: str, locale: str, part: str, filename: str) -> TemplateError:
    if isinstance(exc, TemplateSyntaxError):
        return TemplateError(name, locale, f"syntax error: {exc.message}", exc.lineno, part)
    lineno = _template_lineno(exc, filename)
    if isinstance(exc, _Refused):
        return TemplateError(name, locale, exc.reason, exc.lineno or lineno, part)
    if isinstance(exc, (SecurityError, OverflowError)):
        return TemplateError(name, locale, f"not allowed: {exc}", lineno, part)
    if isinstance(exc, UndefinedError):
        return TemplateError(name, locale, f"undefined value: {exc.message}", lineno, part)
    return TemplateError(name, locale, f"render failed: {type(exc).__name__}: {exc}", lineno, part)


def _template_lineno(exc: BaseException, filename: str) -> int | None:
    # Jinja rewrites tracebacks so that template frames carry the template's line.
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == filename]
    return lines[-1] if lines else None


def _first_use(ast: nodes.Template, name: str) -> int | None:
    return next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"), None)


def _check_output(name: str, locale: str, part: str, output: str, context: Mapping[str, Any]) -> None:
    if part == "body.txt" and not output.strip():
        raise TemplateError(name, locale, "the text body is empty", part=part)
    if part == "subject.txt" and name not in ACCOUNT_TEMPLATES:
        tag = f"[#{context['ticket']['number']}]"
        if tag not in one_line(output):
            raise TemplateError(name, locale, f"the subject must keep the ticket tag, e.g. {tag}", part=part)


def one_line(text: str, limit: int = SUBJECT_MAX_CHARS) -> str:
    """Collapse control characters and line breaks to single spaces; cap the length.

    >>> one_line("x\\r\\nBcc: evil@x")
    'x Bcc: evil@x'
    """
    flat = " ".join(_CONTROL_RE.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _tidy_text(text: str) -> str:
    text = "\n".join([line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")])
    while "\n\n\n" in text:   # at most one blank line in a row; much cheaper than a regex on long text
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n") + "\n"


# --- sample data --------------------------------------------------------------------


def sample_context(name: str, locale: str) -> dict[str, Any]:
    """Realistic sample data for previews (the first of the validation variants)."""
    return _sample_variants(name, locale)[0]


def _sample_base(locale: str, **ticket: Any) -> dict[str, Any]:
    de = _language(locale) == "de"
    person = ("Jana Müller", "jana.mueller@kunde.example") if de else ("Jane Doe", "jane.doe@customer.example")
    fields: dict[str, Any] = {
        "number": 1042, "subject": "Export nach Excel bricht ab" if de else "Excel export fails",
        "status": "open", "type": "problem", "priority": "high", "module": "Reports",
        "organization": "Müller & Söhne GmbH" if de else "Doe & Partners Ltd",
        "requester_name": person[0], "requester_email": person[1],
        "created_at": datetime(2026, 11, 27, 13, 5, tzinfo=timezone.utc), "followup_of": None,
        "reply_address": "support+1042-5f2c9a1e@desk.example.com",
    }
    fields.update(ticket)
    for kind in ("status", "type", "priority"):
        fields[f"{kind}_label"] = label(kind, fields[kind], locale)
    return {
        "recipient": {"name": person[0], "email": person[1], "locale": _language(locale)},
        "ticket": fields, "support_address": "support@desk.example.com", "product_name": "Postdesk",
    }


def _sample_message(locale: str, agent: bool = False) -> dict[str, Any]:
    de = _language(locale) == "de"
    if agent:
        text = ("Guten Tag,\n\nder Fehler ist in Version 4.2.1 behoben. Bitte prüfen Sie, ob der Export "
                "jetzt funktioniert.\n\nViele Grüße\nTom Berger" if de else
                "Hello,\n\nthe fault is fixed in version 4.2.1. Please check whether the export "
                "works now.\n\nBest regards\nTom Berger")
        return {"author_name": "Tom Berger", "author_email": "tom.berger@desk.example.com", "text": text}
    text = ("Beim Export nach Excel erscheint eine rote Fehlermeldung „Export fehlgeschlagen“.\n"
            "Das passiert seit gestern bei allen Berichten." if de else
            "When I export to Excel, a red error message \"Export failed\" appears.\n"
            "It happens since yesterday, for every report.")
    base = _sample_base(locale)["ticket"]
    return {"author_name": base["requester_name"], "author_email": base["requester_email"], "text": text}


def _sample_variants(name: str, locale: str) -> list[dict[str, Any]]:
    builders = {
        "ticket_created": _created_samples, "agent_reply": _reply_samples,
        "ticket_solved": _solved_samples, "ticket_reopened": _reopened_samples,
        "followup_created": _followup_samples, "agent_notice": _notice_samples,
        "status_update_request": _status_request_samples, "ticket_auto_closed": _auto_closed_samples,
        "target_warning": _target_warning_samples, "sender_refused": _refused_samples,
    }
    from gateway.sample_accounts import SAMPLE_BUILDERS  # onboarding, commands, followers
    builders.update(SAMPLE_BUILDERS)
    if name not in builders:
        raise TemplateError(name, locale, "no such template")
    return copy.deepcopy(builders[name](locale))


def _created_samples(locale: str) -> list[dict[str, Any]]:
    problem = _sample_base(locale) | {
        "is_requester": True, "message": _sample_message(locale),
        "ccs_added": ["max.weber@kunde.example"],
        "ccs_refused": [{"email": "info@kunde.example", "reason": "shared_address"},
                        {"email": "lee@elsewhere.example", "reason": "other_organization"},
                        {"email": "new.colleague@kunde.example", "reason": "not_registered"},
                        {"email": "former@kunde.example", "reason": "inactive"}],
        "priority_ignored": False, "module_unknown": "Reporting",
        "modules": ["Reports", "Billing", "Users", "API"],
        "missing_info": ["har_file", "affected_users", "browser_details", "page_and_devices"],
    }
    request = _sample_base(locale, type="service_request", priority=None, module=None, followup_of=1001) | {
        "is_requester": False, "message": _sample_message(locale), "ccs_added": [], "ccs_refused": [],
        "priority_ignored": True, "module_unknown": None, "modules": [], "missing_info": [],
    }
    return [problem, request]


def _reply_samples(locale: str) -> list[dict[str, Any]]:
    message = _sample_message(locale, agent=True)
    return [
        _sample_base(locale, status="awaiting_reply") | {"message": message},
        _sample_base(locale, status="open", type="service_request", priority=None, module=None)
        | {"message": message},
    ]


def _solved_samples(locale: str) -> list[dict[str, Any]]:
    until = datetime(2026, 12, 11, 13, 5, tzinfo=timezone.utc)
    return [
        _sample_base(locale, status="solved") | {"message": _sample_message(locale, agent=True),
                                                 "reopen_until": until},
        _sample_base(locale, status="solved", type="service_request", priority=None)
        | {"message": None, "reopen_until": until},
    ]


def _reopened_samples(locale: str) -> list[dict[str, Any]]:
    return [_sample_base(locale, status="open")]


def _followup_samples(locale: str) -> list[dict[str, Any]]:
    base = _sample_base(locale, number=1043, followup_of=1042)
    return [base | {"previous": {"number": 1042, "subject": _sample_base(locale)["ticket"]["subject"]}}]


def _notice_samples(locale: str) -> list[dict[str, Any]]:
    message = _sample_message(locale)
    files = [{"filename": "export-error.har", "size": 734_003}, {"filename": "screenshot.png", "size": 182_211}]
    return [
        _sample_base(locale) | {"message": message, "event": "new_ticket", "attachments": files},
        _sample_base(locale, type="service_request", priority=None, module=None)
        | {"message": message, "event": "customer_reply", "attachments": []},
        _sample_base(locale) | {"message": message, "event": "reopened", "attachments": []},
        _sample_base(locale, number=1043, followup_of=1042)
        | {"message": message, "event": "followup", "attachments": files[:1]},
    ]


def _status_request_samples(locale: str) -> list[dict[str, Any]]:
    close_at = datetime(2026, 12, 2, 13, 5, tzinfo=timezone.utc)
    facts = {"waiting_days": 30, "close_after_days": 5, "close_at": close_at}
    return [_sample_base(locale, status="awaiting_reply") | {"is_requester": True, **facts},
            _sample_base(locale, status="awaiting_reply") | {"is_requester": False, **facts}]


def _auto_closed_samples(locale: str) -> list[dict[str, Any]]:
    request = {"type": "service_request", "priority": None, "module": None}
    return [
        _sample_base(locale, status="closed") | {"is_requester": True, "rule": "reopen-window-ended", "days": 14},
        _sample_base(locale, status="closed", **request)
        | {"is_requester": True, "rule": "service-request-inactive", "days": 30},
        _sample_base(locale, status="closed") | {"is_requester": False, "rule": "problem-inactive", "days": 35},
    ]


def _target_warning_samples(locale: str) -> list[dict[str, Any]]:
    due = datetime(2026, 11, 30, 12, 5, tzinfo=timezone.utc)
    return [_sample_base(locale) | {"stage": "due_soon", "due_at": due, "hours_left": 0.75},
            _sample_base(locale, priority="blocker") | {"stage": "overdue", "due_at": due, "hours_left": -2.5}]


def _refused_samples(locale: str) -> list[dict[str, Any]]:
    base = _sample_base(locale)
    del base["ticket"]
    subject = "Export nach Excel bricht ab" if _language(locale) == "de" else "Excel export fails"
    return [base | {"rule": rule, "original_subject": subject}
            for rule in ("sender-unknown", "sender-shared", "sender-list", "sender-inactive", "from-invalid")]
