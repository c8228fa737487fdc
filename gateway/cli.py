"""The ``postdesk`` command.

Every subcommand takes ``--config PATH`` (or ``$POSTDESK_CONFIG``); listings take
``--json``. A problem a person can act on is one line on stderr and exit code 1;
nothing is half-written, because each command runs in one transaction.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.clock import SystemClock, parse_instant
from gateway.config import load_settings
from gateway.errors import GatewayError
from storage import admin, queries
from storage.db import create_schema, make_engine, transaction
from storage.models import Inbound, Ticket

log = logging.getLogger("gateway")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)   # one line per migration step is noise
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except GatewayError as exc:
        print(f"postdesk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # output piped into `head` and the like
        sys.stderr.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's default
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", help="configuration file (default: $POSTDESK_CONFIG, else built-in defaults)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("-v", "--verbose", action="store_true")
    parser = argparse.ArgumentParser(prog="postdesk", parents=[common],
                                     description="Email-first helpdesk gateway")
    parser.set_defaults(config=None, json=False, verbose=False)
    sub = parser.add_subparsers(title="commands")

    def cmd(name, run, help_, parent=sub):
        p = parent.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(run=run)
        return p

    cmd("init", cmd_init, "create or upgrade the database schema")
    cmd("serve", cmd_serve, "run the SMTP listener, the worker, the timers and the outbox dispatcher")
    p = cmd("tick", cmd_tick, "run every timer due at a moment")
    p.add_argument("--now", help="ISO-8601 moment (default: now)")
    p.add_argument("--dry-run", action="store_true", help="list what would fire, change nothing")
    p = cmd("poll", cmd_poll, "read the IMAP mailbox of [imap] into Postdesk, then wait for new mail (IDLE)")
    p.add_argument("--once", action="store_true", help="one pass over the waiting mail, then exit")
    p = cmd("deliver", cmd_deliver, "store one message from standard input (MTA pipe transport); "
            "exit 0 stored, 75 try later, 77/67 refused")
    p.add_argument("--sender", help="envelope sender (Postfix: ${sender})")
    p.add_argument("--recipient", action="append", default=[], help="envelope recipient (repeatable)")
    p.add_argument("--no-process", action="store_true", help="only store; leave processing to `serve`")
    p = cmd("replay", cmd_replay, "push a saved .eml file through intake and the pipeline")
    p.add_argument("file")
    p.add_argument("--sender", default="", help="envelope sender")

    org = sub.add_parser("org", help="organisations").add_subparsers(title="org commands")
    p = cmd("add", cmd_org_add, "create an organisation and its main contact's account", org)
    p.add_argument("name")
    p.add_argument("--package", required=True)
    p.add_argument("--main-contact", required=True)
    p.add_argument("--contact-name", default="")
    p.add_argument("--locale")
    p.add_argument("--no-mail", action="store_true", help="do not send the main contact the invitation mail")
    p = cmd("package", cmd_org_package, "change an organisation's package", org)
    p.add_argument("name")
    p.add_argument("package")
    cmd("list", cmd_org_list, "list organisations", org)

    acc = sub.add_parser("account", help="service accounts").add_subparsers(title="account commands")
    p = cmd("add", cmd_account_add, "add a service account", acc)
    p.add_argument("email")
    p.add_argument("--org", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--locale")
    p.add_argument("--no-mail", action="store_true", help="do not send the welcome mail")
    p = cmd("remove", cmd_account_remove, "deactivate a service account", acc)
    p.add_argument("email")
    p = cmd("import", cmd_account_import, "add accounts from a CSV file (email,name,locale); all or nothing", acc)
    p.add_argument("file")
    p.add_argument("--no-mail", action="store_true", help="do not send the welcome mails")
    p.add_argument("--org", required=True)
    for name, follows in (("follow", True), ("unfollow", False)):
        p = cmd(name, lambda a, f=follows: cmd_account_follow(a, f), f"the account {name}s its organisation", acc)
        p.add_argument("email")
    p = cmd("list", cmd_account_list, "list accounts", acc)
    p.add_argument("--org")
    p = cmd("mark-shared", cmd_mark_shared, "mark an address as shared: no account, mail refused", acc)
    p.add_argument("email")
    p = cmd("clear-bounce", cmd_account_clear_bounce, "send mail to a bouncing address again", acc)
    p.add_argument("email")

    agent = sub.add_parser("agent", help="support agents").add_subparsers(title="agent commands")
    p = cmd("add", cmd_agent_add, "register an agent", agent)
    p.add_argument("email")
    p.add_argument("--name", default="")
    p.add_argument("--locale", default="en")

    ticket = sub.add_parser("ticket", help="tickets").add_subparsers(title="ticket commands")
    p = cmd("list", cmd_ticket_list, "list tickets", ticket)
    p.add_argument("--org")
    p.add_argument("--status")
    p.add_argument("--due-within", type=_support_hours_arg, metavar="HOURS",
                   help="only unanswered tickets whose first-response target is at most HOURS support hours "
                        "away or past")
    p.add_argument("--overdue", action="store_true", help="only unanswered tickets past their first-response target")
    p.add_argument("--now", help="ISO-8601 moment the targets are measured from (default: now)")
    p = cmd("show", cmd_ticket_show, "show one ticket", ticket)
    p.add_argument("number", type=int)

    inbound = sub.add_parser("inbound", help="received messages").add_subparsers(title="inbound commands")
    p = cmd("list", cmd_inbound_list, "every inbound delivery with its outcome", inbound)
    p.add_argument("--outcome")
    p = cmd("requeue", cmd_inbound_requeue, "process a quarantined message again", inbound)
    p.add_argument("id", type=int)
    p = cmd("show", cmd_inbound_show, "one inbound message: reason, authentication, headers", inbound)
    p.add_argument("id", type=int)
    p.add_argument("--raw", action="store_true", help="write the message exactly as received (to stdout or --output)")
    p.add_argument("--output", help="with --raw: write to this file instead of stdout")
    p = cmd("release", cmd_inbound_release, "process a quarantined message despite its hold", inbound)
    p.add_argument("id", type=int)

    outbox = sub.add_parser("outbox", help="outgoing mail").add_subparsers(title="outbox commands")
    p = cmd("list", cmd_outbox_list, "queued, sent and failed mail", outbox)
    p.add_argument("--status")
    cmd("flush", cmd_outbox_flush, "deliver what is due now", outbox)
    from gateway.template_cli import add_template_commands
    add_template_commands(sub, cmd)
    return parser


# ---- helpers ------------------------------------------------------------------------------

def _settings(args):
    return load_settings(args.config)


def _engine(args):
    settings = _settings(args)
    engine = make_engine(settings.database_url, settings.database.busy_timeout_seconds)
    create_schema(engine)
    return settings, engine


def _runtime(args):
    from gateway.service import build_runtime
    return build_runtime(_settings(args))


def _print(args, data, text: str) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def _now():
    return SystemClock().now()


# ---- commands -----------------------------------------------------------------------------

def cmd_init(args) -> int:
    settings, engine = _engine(args)
    with transaction(engine) as session:
        queries.signing_secret(session)
    _print(args, {"database": settings.database_url, "ok": True}, f"database ready: {settings.database_url}")
    return 0


def cmd_serve(args) -> int:
    from gateway.service import serve
    runtime = _runtime(args)
    asyncio.run(serve(runtime, worker=runtime.settings.desk.worker))
    return 0


def cmd_tick(args) -> int:
    from gateway.timers import run_due
    runtime = _runtime(args)
    now = parse_instant(args.now) if args.now else _now()
    fired = run_due(runtime.engine, runtime.deps, now, dry_run=args.dry_run)
    data = [{"ticket": f.ticket, "rule": f.rule, "change": f.change, **({"error": f.error} if f.error else {})}
            for f in fired]
    lines = [f"#{f.ticket}: {f.rule}: {f.error or f.change}" for f in fired] or ["nothing due"]
    _print(args, {"now": now.isoformat(), "dry_run": args.dry_run, "fired": data}, "\n".join(lines))
    return 1 if any(f.error for f in fired) else 0


def cmd_poll(args) -> int:
    import threading
    from gateway.imap_poller import Poller, StorageFailed
    from gateway.imap_source import ImapSource, MailboxUnavailable
    from gateway.outbound import send_due
    runtime = _runtime(args)
    settings = runtime.settings
    if not settings.imap.configured:
        raise GatewayError("no mailbox configured: set [imap] username (and host, password …) in the configuration")
    poller = Poller(runtime, lambda: ImapSource(settings.imap),
                    after_pass=lambda report: send_due(runtime.engine, settings, runtime.clock.now()))
    if not args.once:
        import signal
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):   # finish the message in hand, then exit 0
            signal.signal(sig, lambda *_: stop.set())
        poller.run(stop)
        return 0
    try:
        report = poller.run_once()
    except (MailboxUnavailable, StorageFailed) as exc:
        raise GatewayError(str(exc)) from None
    finally:
        poller.close()
    _print(args, {"seen": report.seen, "processed": report.processed, "duplicates": report.duplicates,
                  "rejected": report.rejected, "failed": report.failed, "left": report.left},
           f"IMAP {settings.imap.folder}: {report.summary()}")
    return 0


def cmd_deliver(args) -> int:
    from gateway.mta_pipe import deliver
    if not args.verbose:   # the MTA copies what we print into its bounces: only the one reason line
        logging.getLogger().setLevel(logging.WARNING)
    raw = sys.stdin.buffer.read()
    result = deliver(lambda: _settings(args), raw, args.sender, args.recipient, process=not args.no_process)
    if result.code:
        print(f"postdesk: {result.message}", file=sys.stderr)
    elif args.verbose:
        print(result.message, file=sys.stderr)
    return result.code


def cmd_replay(args) -> int:
    from gateway.intake import receive
    from gateway.worker import process_inbound
    runtime = _runtime(args)
    raw = Path(args.file).read_bytes()
    support = runtime.settings.smtp.support_address
    result = receive(runtime.engine, runtime.settings, raw, args.sender, [support], _now(), channel="replay")
    if result.status == "accepted":
        process_inbound(runtime.engine, runtime.deps, result.inbound_id, _now())
    with transaction(runtime.engine) as session:
        record = queries.inbound_record(session.get(Inbound, result.inbound_id))
    _print(args, record, f"inbound {record['id']}: {record['outcome']}: {record['reason']}")
    return 0


def cmd_org_add(args) -> int:
    from gateway.accountmail import queue_onboarding
    runtime = _runtime(args)
    with transaction(runtime.engine) as session:
        org, account = admin.add_organization(session, runtime.settings, _now(), args.name, args.package,
                                               args.main_contact, args.locale, args.contact_name)
        if not args.no_mail:   # the invitation goes out with the commit, or not at all
            queue_onboarding(session, runtime.deps, account, _now(), main_contact=True)
        data = {"name": org.name, "package": org.package, "locale": org.locale, "main_contact": account.email,
                "invited": not args.no_mail}
    _print(args, data, f"organisation {data['name']} ({data['package']}) created; main contact {data['main_contact']}")
    return 0


def cmd_org_package(args) -> int:
    settings, engine = _engine(args)
    with transaction(engine) as session:
        org = admin.change_package(session, settings, args.name, args.package)
        data = {"name": org.name, "package": org.package}
    _print(args, data, f"{data['name']} is now on the {data['package']} package")
    return 0


def cmd_org_list(args) -> int:
    settings, engine = _engine(args)
    from sqlmodel import select
    from storage.models import Organization
    with transaction(engine) as session:
        data = [{"name": o.name, "package": o.package, "locale": o.locale,
                 "active_accounts": admin.count_active_accounts(session, o.id),
                 "cap": settings.packages.cap(o.package)}
                for o in session.exec(select(Organization).order_by(Organization.id))]
    _print(args, data, "\n".join(f"{o['name']}: {o['package']} ({o['active_accounts']}/{o['cap']} accounts)"
                                 for o in data) or "no organisations")
    return 0


def _account_json(session, account) -> dict:
    from storage.models import Organization
    org = session.get(Organization, account.organization_id)
    return {"email": account.email, "name": account.name, "organization": org.name, "locale": account.locale,
            "follows": account.follows, "active": account.active, "bouncing": account.bouncing,
            "bounce_reason": account.bounce_reason}


def cmd_account_add(args) -> int:
    from gateway.accountmail import queue_onboarding
    runtime = _runtime(args)
    with transaction(runtime.engine) as session:
        account = admin.add_account(session, runtime.settings, _now(), args.email, args.org, args.name, args.locale)
        if not args.no_mail:
            queue_onboarding(session, runtime.deps, account, _now(), main_contact=False)
        data = _account_json(session, account)
    _print(args, data, f"account {data['email']} added to {data['organization']}")
    return 0


def cmd_account_remove(args) -> int:
    _, engine = _engine(args)
    with transaction(engine) as session:
        data = _account_json(session, admin.remove_account(session, _now(), args.email))
    _print(args, data, f"account {data['email']} removed")
    return 0


def cmd_account_import(args) -> int:
    from gateway.accountmail import queue_onboarding
    runtime = _runtime(args)
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise GatewayError(f"cannot read {args.file}: {exc.strerror}") from None
    with transaction(runtime.engine) as session:
        accounts = admin.import_accounts(session, runtime.settings, _now(), args.org, text)
        for account in accounts if not args.no_mail else ():
            queue_onboarding(session, runtime.deps, account, _now(), main_contact=False)
        data = [_account_json(session, a) for a in accounts]
    _print(args, data, f"{len(data)} account(s) imported into {args.org}")
    return 0


def cmd_account_follow(args, follows: bool) -> int:
    _, engine = _engine(args)
    with transaction(engine) as session:
        data = _account_json(session, admin.set_following(session, args.email, follows))
    _print(args, data, f"{data['email']} {'follows' if follows else 'no longer follows'} {data['organization']}")
    return 0


def cmd_account_list(args) -> int:
    _, engine = _engine(args)
    from sqlmodel import select
    from storage.models import Account
    with transaction(engine) as session:
        query = select(Account).order_by(Account.id)
        if args.org:
            query = query.where(Account.organization_id == admin.find_organization(session, args.org).id)
        data = [_account_json(session, a) for a in session.exec(query)]
    _print(args, data, "\n".join(f"{a['email']} ({a['organization']}){'' if a['active'] else ' removed'}"
                                 for a in data) or "no accounts")
    return 0


def cmd_mark_shared(args) -> int:
    _, engine = _engine(args)
    with transaction(engine) as session:
        entry = admin.mark_shared(session, _now(), args.email)
        data = {"email": entry.email, "shared": True}
    _print(args, data, f"{data['email']} is marked as shared")
    return 0


def cmd_agent_add(args) -> int:
    _, engine = _engine(args)
    with transaction(engine) as session:
        agent = admin.add_agent(session, _now(), args.email, args.name, args.locale)
        data = {"email": agent.email, "name": agent.name, "locale": agent.locale}
    _print(args, data, f"agent {data['email']} added")
    return 0


def _support_hours_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of support hours (0 or more)")
    return value


def cmd_ticket_list(args) -> int:
    settings, engine = _engine(args)
    with transaction(engine) as session:
        if args.org:
            admin.find_organization(session, args.org)
        if args.due_within is not None or args.overdue:
            from gateway.timers import response_due
            now = parse_instant(args.now) if args.now else _now()
            data = [t for t in response_due(session, settings, now, within_hours=args.due_within,
                                            overdue_only=args.overdue, org_name=args.org)
                    if not args.status or t["status"] == args.status]
        else:
            data = queries.list_tickets(session, args.org, args.status)
    _print(args, data, "\n".join(f"#{t['number']} [{t['status']}] {t['organization']}: {t['subject']}"
                                 + (f" (first response due {t['first_response_due_at']}, "
                                    f"{t['support_hours_left']:g} support hours left)"
                                    if "support_hours_left" in t else "")
                                 for t in data) or "no tickets")
    return 0


def cmd_ticket_show(args) -> int:
    settings, engine = _engine(args)
    with transaction(engine) as session:
        ticket = session.get(Ticket, args.number)
        if ticket is None:
            raise GatewayError(f"no ticket #{args.number}")
        data = queries.ticket_detail(session, ticket)
        from gateway.timers import next_timer
        data["next_timer"] = next_timer(ticket, settings)
    text = [f"#{data['number']} {data['subject']}", f"status {data['status']}, {data['type']}, "
            f"priority {data['priority'] or '-'}, module {data['module'] or '-'}",
            f"organisation {data['organization']}, requester {data['requester']}, CCs {', '.join(data['ccs']) or '-'}"]
    if data["first_response_due_at"] and not data["first_responded_at"]:
        text.append(f"first response due {data['first_response_due_at']}")
    if data["next_timer"]:
        text.append(f"next timer: {data['next_timer']['rule']} at {data['next_timer']['at']}")
    for m in data["messages"]:
        if m["direction"] == "inbound":
            text.append(f"\n--- {m['author']}{' (internal)' if m['internal'] else ''} {m['created_at']}\n{m['text']}")
    _print(args, data, "\n".join(text))
    return 0


def cmd_inbound_list(args) -> int:
    settings, engine = _engine(args)
    with transaction(engine) as session:
        data = queries.list_inbound(session, args.outcome)
    _print(args, data, "\n".join(f"{r['id']} {r['received_at']} {r['from']}: {r['outcome']}: {r['reason']}"
                                 for r in data) or "no inbound messages")
    from gateway.service import spool_location
    from storage.spool import waiting
    path = spool_location(settings)
    spooled = waiting(path)
    if spooled:   # accepted (250) but not in the database yet: `serve` files them when it runs
        print(f"{spooled} accepted message{' waits' if spooled == 1 else 's wait'} in the spool "
              f"({path.name}); `postdesk serve` files them into this list", file=sys.stderr)
    return 0


def cmd_inbound_requeue(args) -> int:
    from gateway.worker import process_inbound, requeue
    runtime = _runtime(args)
    requeue(runtime.engine, args.id)
    process_inbound(runtime.engine, runtime.deps, args.id, _now())
    with transaction(runtime.engine) as session:
        record = queries.inbound_record(session.get(Inbound, args.id))
    _print(args, record, f"inbound {record['id']}: {record['outcome']}: {record['reason']}")
    return 0


def cmd_inbound_show(args) -> int:
    from gateway import quarantine
    _, engine = _engine(args)
    with transaction(engine) as session:
        inbound = quarantine.find(session, args.id)
        data, raw = quarantine.details(inbound), inbound.raw
    if args.raw:
        return _write_raw(args, raw)
    lines = [f"inbound {data['id']} ({data['channel']}, {data['received_at']}): {data['outcome']}"
             f" [{data['reason_code'] or '-'}]", data["reason"]]
    if data["authentication"]:
        lines.append(f"authentication: {data['authentication']['verdict']} ({data['authentication']['reason']})")
    lines += [f"{name}: {value}" for name, value in data["headers"]]
    _print(args, data, "\n".join(lines))
    return 0


def _write_raw(args, raw: bytes | None) -> int:
    if raw is None:
        raise GatewayError(f"inbound {args.id} was refused; only its header summary was kept")
    if args.output:
        Path(args.output).write_bytes(raw)
    elif hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
    else:
        sys.stdout.write(raw.decode("utf-8", "surrogateescape"))
    return 0


def cmd_inbound_release(args) -> int:
    from gateway.quarantine import release
    from gateway.worker import process_inbound
    runtime = _runtime(args)
    release(runtime.engine, args.id, _now())
    process_inbound(runtime.engine, runtime.deps, args.id, _now())
    with transaction(runtime.engine) as session:
        record = queries.inbound_record(session.get(Inbound, args.id))
    _print(args, record, f"inbound {record['id']}: {record['outcome']}: {record['reason']}")
    return 0


def cmd_account_clear_bounce(args) -> int:
    from gateway.bounces import clear_bounce
    _, engine = _engine(args)
    with transaction(engine) as session:
        data = _account_json(session, clear_bounce(session, args.email))
    _print(args, data, f"mail to {data['email']} is sent again")
    return 0


def cmd_outbox_list(args) -> int:
    _, engine = _engine(args)
    with transaction(engine) as session:
        data = queries.list_outbox(session, args.status)
    _print(args, data, "\n".join(f"{r['id']} [{r['status']}] {', '.join(r['to'])}: {r['subject']}"
                                 for r in data) or "outbox empty")
    return 0


def cmd_outbox_flush(args) -> int:
    from gateway.outbound import send_due
    settings, engine = _engine(args)
    sent = send_due(engine, settings, _now(), limit=10_000)
    _print(args, {"sent": sent}, f"{sent} mail(s) delivered")
    return 0
