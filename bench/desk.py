"""A Postdesk installation for one benchmark cell: config, schema, people, and N existing tickets.

The schema comes from ``postdesk init`` (a subprocess, as an operator would run it);
organisations, accounts and agents go through ``storage.admin`` (the functions
behind ``postdesk org/account/agent add``), in one transaction. The existing
tickets are bulk-inserted straight into the ``ticket``, ``message`` and
``inbound`` tables: per ticket the customer's opening mail (with an archive row,
without raw bytes) and Postdesk's acknowledgment, all recent and open or awaiting
the customer, so no timer fires on them during the run. Row templates come from
the models themselves, so columns added later with a default are filled too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from bench.people import SUPPORT, Directory, existing_ack_id, existing_opener_id, existing_subject

AUTHSERV_ID = "mx.desk.example.com"      # the border MTA whose Authentication-Results the gateway trusts
CHUNK_ROWS = 5_000
PREFILL_CHANNEL = "prefill"               # the archive rows of existing tickets, told apart from the run's mail


def write_config(folder: Path, db_url: str, port: int, max_message_bytes: int, worker: str = "process",
                 workers: int = 1) -> Path:
    """The cell's ``postdesk.toml``; keys of sections this gateway version lacks are left out.

    ``worker = "thread"`` for the profiler, which sees the threads of one process only."""
    lines = [
        "[database]", f'url = "{db_url}"', "",
        "[smtp]", 'host = "127.0.0.1"', f"port = {port}", f'support_address = "{SUPPORT}"',
        f"max_message_bytes = {max_message_bytes}", "",
        "[outbound]", 'maildir = "outbox"', "",
    ]
    if _has_key("desk", "worker"):
        lines += ["[desk]", f'worker = "{worker}"', *([f"workers = {workers}"] if workers != 1 else []), ""]
    if _has_key("auth", "trusted_authserv_ids"):
        lines += ["[auth]", f'trusted_authserv_ids = ["{AUTHSERV_ID}"]', ""]
    path = folder / "postdesk.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _has_key(section: str, key: str) -> bool:
    from gateway.config import Settings
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if section not in fields:
        return False
    return key in {f.name for f in dataclasses.fields(fields[section].default_factory)}


def run_cli(config: Path, *args: str, timeout: float = 300) -> str:
    result = subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                            capture_output=True, text=True, timeout=timeout, cwd=config.parent)
    if result.returncode != 0:
        raise RuntimeError(f"postdesk {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def populate(config: Path, directory: Directory, existing: int) -> dict:
    """Register the directory and bulk-insert ``existing`` tickets; returns timings."""
    from gateway.config import load_settings
    from storage import admin
    from storage.db import make_engine, transaction

    settings = load_settings(config)
    engine = make_engine(settings.database_url, settings.database.busy_timeout_seconds)
    now = datetime.now(timezone.utc)
    try:
        with transaction(engine) as session:
            for org in directory.orgs:
                first, *others = org.accounts
                admin.add_organization(session, settings, now, org.name, org.package, first.email,
                                       org.locale, first.name)
                for person in others:
                    admin.add_account(session, settings, now, person.email, org.name, person.name, person.locale)
            for agent in directory.agents:
                admin.add_agent(session, now, agent.email, agent.name, agent.locale)
        started = datetime.now(timezone.utc)
        _bulk_tickets(engine, directory, existing, now)
        return {"prefill_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 2)}
    finally:
        engine.dispose()


def _bulk_tickets(engine, directory: Directory, existing: int, now: datetime) -> None:
    from sqlmodel import Session, SQLModel, select
    from storage.models import Account, Inbound, MessageRecord, Organization, Ticket

    with Session(engine) as session:
        org_ids = dict(session.exec(select(Organization.name, Organization.id)).all())
        account_ids = dict(session.exec(select(Account.email, Account.id)).all())
    owners = [(org_ids[o.name], account_ids[o.accounts[0].email], o) for o in directory.orgs]
    tables = SQLModel.metadata.tables
    ticket_row = _template(Ticket, organization_id=0, requester_id=0, subject="", status="open", type="problem",
                           created_at=now, updated_at=now, status_changed_at=now)
    message_row = _template(MessageRecord, ticket_id=0, direction="inbound", author_email="", author_kind="customer",
                            created_at=now)
    inbound_row = _template(Inbound, received_at=now)
    with engine.begin() as connection:
        for start in range(1, existing + 1, CHUNK_ROWS):
            numbers = range(start, min(existing, start + CHUNK_ROWS - 1) + 1)
            tickets, messages, inbound = [], [], []
            for number in numbers:
                org_id, requester_id, org = owners[(number - 1) % len(owners)]
                at = now - timedelta(minutes=(existing - number) % (5 * 24 * 60) + 10)
                t, m, i = _rows(number, org_id, requester_id, org, at, ticket_row, message_row, inbound_row)
                tickets.append(t)
                messages += m
                inbound.append(i)
            connection.execute(tables["inbound"].insert(), inbound)
            connection.execute(tables["ticket"].insert(), tickets)
            connection.execute(tables["message"].insert(), messages)
        if engine.dialect.name == "postgresql":
            for table in ("ticket", "message", "inbound"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"))
    if engine.dialect.name == "postgresql":
        # What autovacuum and the checkpointer would long have done on a live installation; left to them,
        # they would scan the freshly loaded tables and write them out during the measurement.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM (ANALYZE)"))
            connection.execute(text("CHECKPOINT"))


def _template(model, **required) -> dict:
    """Every column of ``model`` with the model's defaults, ready for a Core insert."""
    return model(**required).model_dump(exclude={"id"})


def _rows(number, org_id, requester_id, org, at, ticket_row, message_row, inbound_row):
    subject, opener_id = existing_subject(number), existing_opener_id(number, org)
    requester = org.accounts[0].email
    ticket = {**ticket_row, "id": number, "organization_id": org_id, "requester_id": requester_id,
              "subject": subject, "status": "open" if number % 5 else "awaiting_reply",
              "type": "problem" if number % 3 else "service_request", "priority": "medium" if number % 3 else None,
              "module": "Reporting", "created_at": at, "updated_at": at, "status_changed_at": at}
    timing = {"last_customer_at": at, "first_responded_at": at,   # answered in time: no first-response timer
              "awaiting_since": at if ticket["status"] == "awaiting_reply" else None}
    ticket.update({key: value for key, value in timing.items() if key in ticket_row})
    opener = {**message_row, "id": 2 * number - 1, "ticket_id": number, "direction": "inbound",
              "author_email": requester, "author_kind": "customer", "message_id": opener_id, "subject": subject,
              "text": "The report stays empty.", "full_text": "The report stays empty.", "inbound_id": number,
              "created_at": at}
    ack = {**message_row, "id": 2 * number, "ticket_id": number, "direction": "outbound", "author_email": SUPPORT,
           "author_kind": "system", "message_id": existing_ack_id(number), "in_reply_to": opener_id,
           "subject": f"[#{number}] {subject}", "text": "We received your request.",
           "full_text": "We received your request.", "recipient": requester, "created_at": at}
    digest = hashlib.sha256(opener_id.encode()).hexdigest()
    inbound = {**inbound_row, "id": number, "received_at": at, "channel": PREFILL_CHANNEL,
               "envelope_from": requester, "envelope_to": f'["{SUPPORT}"]', "message_id": opener_id,
               "from_addr": requester, "subject": subject,
               "size": 2400, "content_sha256": digest, "dedupe_key": digest, "outcome": "ticket_created",
               "reason": f"new ticket #{number}", "ticket_number": number, "processed_at": at, "attempts": 1}
    return ticket, [opener, ack], inbound
