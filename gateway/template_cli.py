"""``postdesk templates …``: list, show, edit, validate, preview, diff, history, rollback, reset,
set and test-send the notification templates.

Overrides live in the database (``storage/templates.py``), one version per change with its
author and time; the newest version is in force and a running ``serve`` uses it for the
next mail. A candidate that does not compile, uses an unknown variable or fails to render
against the sample data is refused with the part, line and reason on stderr (exit 1), and
the version in force stays. One template is edited as one file (``template_files.py``).
"""
from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.rendering import (
    ACCOUNT_TEMPLATES, PARTS, TEMPLATE_CONTEXT, Renderer, RenderedMail, TemplateError, _sample_variants,
    default_template_dir,
)
from gateway.template_docs import markdown, variables
from gateway.template_files import format_template, merge, parse_template, unified_diff
from storage import templates as store
from storage.db import transaction

LOCALES = ("de", "en")


def add_template_commands(sub, cmd) -> None:
    """Register the subcommands on the ``postdesk`` parser (``cmd`` is ``cli.build_parser``'s helper)."""
    tpl = sub.add_parser("templates", help="notification templates").add_subparsers(title="templates commands")
    p = cmd("list", cmd_list, "every template with its locales and the overrides in force", tpl)
    p.add_argument("--markdown", action="store_true", help="print the admins' table of templates and variables")
    for name, run, help_ in (
        ("show", cmd_show, "print a template as one file (the version in force, the default or a version)"),
        ("edit", cmd_edit, "edit the template in $EDITOR (or take --file), validate it and store it"),
        ("validate", cmd_validate, "check a file, or the templates in force, without storing anything"),
        ("preview", cmd_preview, "render against sample data: subject, text and HTML"),
        ("diff", cmd_diff, "compare the default with the version in force (or a file or a version)"),
        ("history", cmd_history, "every version with its author and time"),
        ("rollback", cmd_rollback, "put an earlier version back in force (as a new version)"),
        ("reset", cmd_reset, "put the packaged default back in force (as a new version)"),
        ("set", cmd_set, "store a file as the new version in force, if it is valid"),
        ("test-send", cmd_test_send, "send the template, rendered with sample data, to an address"),
    ):
        p = cmd(name, run, help_, tpl)
        p.add_argument("name", nargs="?" if name == "validate" else None)
        p.add_argument("--locale", choices=LOCALES, required=name in ("set", "rollback", "reset"))
        if name in ("show", "diff", "rollback"):
            p.add_argument("--version", type=int, required=name == "rollback")
        if name == "show":
            p.add_argument("--default", action="store_true", help="the packaged template")
        if name in ("edit", "validate", "preview", "diff", "set", "test-send"):
            p.add_argument("--file", required=name == "set", help="the template as one file ('-': stdin)")
        if name in ("edit", "set", "rollback", "reset"):
            p.add_argument("--author", help="who makes the change (default: the login name)")
            p.add_argument("--note", default="", help="why (kept in the history)")
        if name in ("preview", "test-send"):
            p.add_argument("--variant", type=int, default=0, help="which sample (0: the first)")
        if name == "test-send":
            p.add_argument("--to", required=True, help="the address to send the test mail to")


# ---- helpers --------------------------------------------------------------------------------

def _context(args):
    from gateway.cli import _engine, _print
    settings, engine = _engine(args)
    return settings, engine, _print


def _renderer(settings: Settings, parts: dict[str, str | None] | None = None) -> Renderer:
    source = _FixedParts(parts) if parts is not None else None
    return Renderer(default_template_dir(), overrides=source, default_locale=settings.desk.default_locale,
                    display_timezone=settings.hours.timezone)


class _FixedParts:
    """An override source holding one candidate version (for preview and test-send)."""

    def __init__(self, parts: dict[str, str | None]) -> None:
        self.parts = parts

    def get(self, name: str, locale: str, part: str) -> str | None:
        return self.parts.get(part)


def _name(args) -> str:
    if args.name not in TEMPLATE_CONTEXT:
        raise GatewayError(f"unknown template {args.name!r}; `postdesk templates list` shows them all")
    return args.name


def _locale(args, settings: Settings) -> str:
    return args.locale or settings.desk.default_locale


def _packaged(name: str, locale: str) -> dict[str, str | None]:
    parts: dict[str, str | None] = {}
    for part in PARTS:
        path = default_template_dir() / locale / f"{name}.{part}"
        parts[part] = path.read_text(encoding="utf-8") if path.exists() else None
    return parts


def _effective(packaged: dict[str, str | None], override: dict[str, str | None]) -> dict[str, str | None]:
    return {part: override[part] if override.get(part) is not None else packaged[part] for part in PARTS}


def _read_file(path: str) -> dict[str, str | None]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayError(f"cannot read {path}: {exc}") from None
    try:
        return parse_template(text)
    except ValueError as exc:
        raise GatewayError(f"{path}: {exc}") from None


def _validate(settings: Settings, name: str, locale: str, parts: dict[str, str | None], keeps: str) -> None:
    renderer = _renderer(settings)
    for part in PARTS:
        if parts.get(part) == "" and part != "body.html":   # "" html: no HTML part; "" text: nothing
            raise GatewayError(f"template refused: {name} ({locale}, {part}): the part is empty; {keeps}")
        if parts.get(part):
            try:
                renderer.validate(name, locale, part, parts[part])
            except TemplateError as exc:
                raise GatewayError(f"template refused: {exc}; {keeps}") from None


def _keeps(version) -> str:
    return f"version {version.version} stays in force" if store.in_force(version) else "the default stays in force"


def _author(args) -> str:
    if getattr(args, "author", None):
        return args.author
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _version_json(version) -> dict:
    return {"version": version.version, "action": version.action, "author": version.author,
            "created_at": version.created_at.isoformat(), "note": version.note,
            "parts": [part for part, source in store.parts_of(version).items() if source is not None]}


def _store(args, settings, engine, name: str, locale: str, given: dict[str, str | None], action: str,
           note: str) -> dict:
    """Merge ``given`` into the version in force, validate it and add it; the one write of set/edit/rollback."""
    from gateway.cli import _now
    with transaction(engine) as session:
        current = store.current(session, name, locale)
        new_parts = given if action != "set" else merge(store.parts_of(current), given)
        _validate(settings, name, locale, new_parts, _keeps(current))
        packaged = _packaged(name, locale)
        if _effective(packaged, store.parts_of(current)) == _effective(packaged, new_parts) \
                and store.in_force(current) == any(v is not None for v in new_parts.values()):
            return {"name": name, "locale": locale, "changed": False,
                    "version": current.version if current is not None else None}
        row = store.add_version(session, name, locale, new_parts, action=action, author=_author(args),
                                note=note, now=_now())
        return {"name": name, "locale": locale, "changed": True, **_version_json(row)}


def _report(args, printer, data: dict) -> int:
    if data["changed"]:
        text = f"{data['name']} ({data['locale']}): version {data['version']} is in force"
    else:
        text = f"{data['name']} ({data['locale']}): no change"
    printer(args, data, text)
    return 0


# ---- commands -------------------------------------------------------------------------------

def cmd_list(args) -> int:
    settings, engine, printer = _context(args)
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    renderer = _renderer(settings)
    with transaction(engine) as session:
        forced = store.overridden(session)
    data = []
    for name in sorted(TEMPLATE_CONTEXT):
        overrides = {loc: _version_json(forced[(name, loc)]) if (name, loc) in forced else None
                     for loc in renderer.locales(name)}
        data.append({"name": name, "kind": "account" if name in ACCOUNT_TEMPLATES else "ticket",
                     "locales": renderer.locales(name), "override": any(overrides.values()),
                     "overrides": overrides, "variables": variables(name)})
    lines = [f"{d['name']:<24} {' '.join(d['locales']):<6} "
             + ", ".join(f"{loc}: override v{o['version']} by {o['author']}"
                         for loc, o in d["overrides"].items() if o) for d in data]
    printer(args, data, "\n".join(line.rstrip() for line in lines))
    return 0


def cmd_show(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    packaged = _packaged(name, locale)
    version = None
    with transaction(engine) as session:
        if args.version is not None:
            version = store.version(session, name, locale, args.version)
            if version is None:
                raise GatewayError(f"{name} ({locale}) has no version {args.version}")
        elif not args.default:
            version = store.current(session, name, locale)
    parts = packaged if args.default else _effective(packaged, store.parts_of(version))
    source = "override" if store.in_force(version) and not args.default else "default"
    data = {"name": name, "locale": locale, "source": source,
            "version": version.version if version is not None and not args.default else None, "parts": parts}
    printer(args, data, format_template(parts).rstrip("\n"))
    return 0


def cmd_set(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    data = _store(args, settings, engine, name, locale, _read_file(args.file), "set", args.note)
    return _report(args, printer, data)


def cmd_edit(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    if args.file:
        return _report(args, printer, _store(args, settings, engine, name, locale, _read_file(args.file),
                                             "set", args.note))
    with transaction(engine) as session:
        current = store.current(session, name, locale)
    before = format_template(_effective(_packaged(name, locale), store.parts_of(current)))
    after, path = _run_editor(name, locale, before)
    if after == before:
        path.unlink(missing_ok=True)
        printer(args, {"name": name, "locale": locale, "changed": False}, f"{name} ({locale}): no change")
        return 0
    try:
        data = _store(args, settings, engine, name, locale, parse_template(after), "set", args.note)
    except (GatewayError, ValueError) as exc:
        raise GatewayError(f"{exc} (your text is kept in {path})") from None
    path.unlink(missing_ok=True)
    return _report(args, printer, data)


def _run_editor(name: str, locale: str, text: str) -> tuple[str, Path]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    handle, filename = tempfile.mkstemp(prefix=f"postdesk-{name}-{locale}-", suffix=".txt")
    path = Path(filename)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    try:
        result = subprocess.run([*shlex.split(editor), str(path)], check=False)
    except OSError as exc:
        raise GatewayError(f"cannot start the editor {editor!r}: {exc.strerror}") from None
    if result.returncode != 0:
        raise GatewayError(f"the editor exited with {result.returncode}; nothing was stored ({path})")
    return path.read_text(encoding="utf-8"), path


def cmd_validate(args) -> int:
    settings, engine, printer = _context(args)
    if args.file:
        name, locale = _name(args), _locale(args, settings)
        _validate(settings, name, locale, _read_file(args.file), "nothing was stored")
        printer(args, {"name": name, "locale": locale, "valid": True}, f"{name} ({locale}): valid")
        return 0
    names = [_name(args)] if args.name else sorted(TEMPLATE_CONTEXT)
    locales = [args.locale] if args.locale else list(LOCALES)
    results, renderer = [], _renderer(settings)
    with transaction(engine) as session:
        for name in names:
            for locale in locales:
                parts = _effective(_packaged(name, locale), store.parts_of(store.current(session, name, locale)))
                results.append({"name": name, "locale": locale, "error": _first_error(renderer, name, locale, parts)})
    bad = [r for r in results if r["error"]]
    lines = [f"{r['name']} ({r['locale']}): {r['error'] or 'valid'}" for r in results]
    printer(args, results, "\n".join(lines))
    if bad:
        raise GatewayError(f"{len(bad)} template(s) in force are invalid")
    return 0


def _first_error(renderer: Renderer, name: str, locale: str, parts: dict[str, str | None]) -> str | None:
    if not parts.get("subject.txt") or not parts.get("body.txt"):
        return "no packaged template for this locale"
    for part in PARTS:
        if parts.get(part):
            try:
                renderer.validate(name, locale, part, parts[part])
            except TemplateError as exc:
                return str(exc)
    return None


def _candidate(args, engine, name: str, locale: str) -> dict[str, str | None]:
    with transaction(engine) as session:
        current = store.parts_of(store.current(session, name, locale))
    if args.file:
        current = merge(current, _read_file(args.file))
    return _effective(_packaged(name, locale), current)


def _render_sample(settings: Settings, name: str, locale: str, parts, variant: int) -> RenderedMail:
    _validate(settings, name, locale, parts, "nothing was stored")
    samples = _sample_variants(name, locale)
    if not 0 <= variant < len(samples):
        raise GatewayError(f"{name} has {len(samples)} sample(s): --variant 0 to {len(samples) - 1}")
    try:
        return _renderer(settings, parts).render(name, locale, samples[variant])
    except TemplateError as exc:
        raise GatewayError(f"cannot render: {exc}") from None


def cmd_preview(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    mail = _render_sample(settings, name, locale, _candidate(args, engine, name, locale), args.variant)
    data = {"name": name, "locale": locale, "subject": mail.subject, "text": mail.text, "html": mail.html}
    text = f"Subject: {mail.subject}\n\n{mail.text}"
    if mail.html:
        text += f"\n--- text/html ---\n{mail.html.rstrip()}"
    printer(args, data, text.rstrip("\n"))
    return 0


def cmd_diff(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    packaged = _packaged(name, locale)
    if args.version is not None:
        with transaction(engine) as session:
            version = store.version(session, name, locale, args.version)
        if version is None:
            raise GatewayError(f"{name} ({locale}) has no version {args.version}")
        new, label = _effective(packaged, store.parts_of(version)), f"version {args.version}"
    else:
        new = _candidate(args, engine, name, locale)
        label = args.file or "in force"
    diff = unified_diff(packaged, new, f"default ({locale})", label)
    printer(args, {"name": name, "locale": locale, "diff": diff}, diff.rstrip("\n") or "no differences")
    return 0


def cmd_history(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    with transaction(engine) as session:
        rows = store.history(session, name, locale)
        current = rows[-1].version if rows else None
        data = [{**_version_json(r), "in_force": r.version == current and store.in_force(r)} for r in rows]
    lines = [f"v{d['version']} {d['created_at']} {d['action']} by {d['author']}"
             f"{' [in force]' if d['in_force'] else ''}{': ' + d['note'] if d['note'] else ''}" for d in data]
    printer(args, data, "\n".join(lines) or f"{name} ({locale}): never changed; the default is in force")
    return 0


def cmd_rollback(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    with transaction(engine) as session:
        old = store.version(session, name, locale, args.version)
        if old is None:
            raise GatewayError(f"{name} ({locale}) has no version {args.version}")
        parts = store.parts_of(old)
    note = args.note or f"rollback to version {args.version}"
    return _report(args, printer, _store(args, settings, engine, name, locale, parts, "rollback", note))


def cmd_reset(args) -> int:
    settings, engine, printer = _context(args)
    name, locale = _name(args), _locale(args, settings)
    with transaction(engine) as session:
        if not store.in_force(store.current(session, name, locale)):
            data = {"name": name, "locale": locale, "changed": False}
            printer(args, data, f"{name} ({locale}): the default is already in force")
            return 0
    data = _store(args, settings, engine, name, locale, dict.fromkeys(PARTS), "reset", args.note or "reset")
    return _report(args, printer, data)


def cmd_test_send(args) -> int:
    from gateway.accountmail import put_in_outbox
    from gateway.cli import _now, _runtime, _print
    from gateway.composer import check_address
    from gateway.notifications import Recipient
    from gateway.outbound import send_due
    runtime = _runtime(args)
    settings = runtime.settings
    name, locale = _name(args), _locale(args, settings)
    try:
        address = check_address(args.to.strip())
    except ValueError as exc:
        raise GatewayError(str(exc)) from None
    mail = _render_sample(settings, name, locale, _candidate(args, runtime.engine, name, locale), args.variant)
    mail = RenderedMail(f"[Test] {mail.subject}", mail.text, mail.html)
    with transaction(runtime.engine) as session:
        row = put_in_outbox(session, runtime.deps, Recipient(address, "", locale, "customer"), name, mail, _now())
        outbox_id = row.id
    send_due(runtime.engine, settings, _now())
    with transaction(runtime.engine) as session:
        from storage.models import Outbox
        row = session.get(Outbox, outbox_id)
        data = {"outbox": row.id, "to": address, "subject": row.subject, "status": row.status,
                "last_error": row.last_error}
    _print(args, data, f"test mail {data['outbox']} to {address}: {data['status']}"
                       + (f" ({data['last_error']})" if data["last_error"] else ""))
    return 0
