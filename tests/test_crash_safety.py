"""Nothing lost, nothing doubled: a real Postfix relays a burst to `postdesk serve`, which is killed and restarted.

Postfix on loopback relays mail for the support domain over SMTP to the listener
of a real ``postdesk serve`` process. During a burst of messages (new tickets,
replies by subject tag, and mail from unknown senders, which is refused) the
gateway is killed with SIGKILL several times and started again. Afterwards every
message Postfix accepted is in Postdesk exactly once — as a new ticket, a reply on
its ticket or a recorded refusal — Postfix delivered or bounced each one exactly
once, and its queue is empty. A redelivery of a message that was committed just
before a kill (so Postfix never saw the reply) is recorded as a ``duplicate`` and
changes nothing.

The size is a parameter: ``POSTDESK_CRASH_MESSAGES`` (default 300) and
``POSTDESK_CRASH_KILLS`` (default 3); ``POSTDESK_CRASH_MESSAGES=3000`` is the long run.
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from tests.conftest import SUPPORT, mail, write_config
from tests.mailservers import REPO, Postfix, free_port, needs_postfix, wait_until

MESSAGES = int(os.environ.get("POSTDESK_CRASH_MESSAGES", "300"))
KILLS = int(os.environ.get("POSTDESK_CRASH_KILLS", "3"))
SEED = int(os.environ.get("POSTDESK_CRASH_SEED", "7"))
INJECTORS = 4   # SMTP connections that hand the burst to Postfix

ORGS = ["ACME", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]
ACCOUNTS_PER_ORG = 4
SEEDS_PER_ORG = 2   # tickets opened before the burst; the burst's replies name them by subject tag


# ---- the gateway as a real process -----------------------------------------------------------

class GatewayProcess:
    """``postdesk serve`` in a process of its own, logging to a file that survives restarts."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO)
        self.starts += 1
        wait_until(lambda: self.proc.poll() is not None or _listening(self.port), 30, 0.02, "serve listening")
        assert self.proc.poll() is None, f"serve exited at start: {self.log_tail()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def cli(config: Path, *args: str):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main([*args, "--config", str(config)]) == 0
    return out.getvalue()


def cli_json(config: Path, *args: str):
    """A listing through the ``postdesk`` command in a process of its own, as an operator would run it."""
    result = subprocess.run([sys.executable, "-m", "gateway", *args, "--json", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def db_count(config: Path, where: str = "1=1") -> int:
    """Rows of the inbound table, read beside the running gateway (SQLite WAL: readers never block it)."""
    with contextlib.closing(sqlite3.connect(config.parent / "postdesk.db", timeout=10)) as db:
        return db.execute(f"SELECT count(*) FROM inbound WHERE {where}").fetchone()[0]


# ---- the burst ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    kind: str            # "new" | "reply" | "refused"
    sender: str
    subject: str
    message_id: str
    ticket: int | None   # the ticket a reply names


def accounts() -> dict[str, list[str]]:
    return {org: [f"user{n}@{org.lower()}.example" for n in range(ACCOUNTS_PER_ORG)] for org in ORGS}


def plan_burst(count: int, seeds: dict[str, list[int]], rng: random.Random) -> list[Planned]:
    """Half new tickets, three in ten replies to a seed ticket of the sender's organisation, two in ten refused."""
    people = accounts()
    plan = []
    for i in range(count):
        roll = i % 10
        org = ORGS[i % len(ORGS)]
        sender = rng.choice(people[org])
        if roll < 2:
            stranger = f"visitor{i}@stranger{i % 7}.example"
            plan.append(Planned("refused", stranger, f"Question {i} from outside", f"<burst-{i}@stranger.example>",
                                None))
        elif roll < 5:
            ticket = rng.choice(seeds[org])
            plan.append(Planned("reply", sender, f"Re: [#{ticket}] Seed ticket of {org}",
                                f"<burst-{i}@{org.lower()}.example>", ticket))
        else:
            plan.append(Planned("new", sender, f"Burst ticket {i} of {org}", f"<burst-{i}@{org.lower()}.example>",
                                None))
    return plan


def message_bytes(item: Planned, i: int) -> bytes:
    body = (f"Nachricht {i}: Der Export bricht ab.\n" if i % 2 else f"Message {i}: the export fails.\n") * 3
    msg = mail(item.sender, item.subject, body, message_id=item.message_id)
    if i % 25 == 3:   # a few large ones, so that kills also land in the middle of DATA
        msg.add_attachment(("{" + '"entries": []' + "}\n").encode() * 20000, maintype="application",
                           subtype="json", filename=f"session-{i}.har")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def inject(postfix: Postfix, items: list[tuple[int, Planned]], accepted: list[str], errors: list[str]) -> None:
    """Hand messages to Postfix's own smtpd over one connection; note every one it accepted."""
    import smtplib
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        for i, item in items:
            try:
                client.sendmail(item.sender, [SUPPORT], message_bytes(item, i))
                accepted.append(item.message_id)
            except smtplib.SMTPException as exc:
                errors.append(f"{item.message_id}: {exc}")


# ---- Postfix's own account of each message -------------------------------------------------------

QUEUED = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=<([^>]*)>")
STATUS = re.compile(r"postfix/\w+\[\d+\]: ([0-9A-F]+): to=<[^>]*>,.*? status=(\w+) \((.*)\)$")


def postfix_fates(log: str) -> dict[str, list[tuple[str, str]]]:
    """Message-ID -> every delivery status Postfix logged for it, in order: (status, text)."""
    ids, fates = {}, collections.defaultdict(list)
    for line in log.splitlines():
        if m := QUEUED.search(line):
            ids[m.group(1)] = f"<{m.group(2)}>"
        elif (m := STATUS.search(line)) and m.group(1) in ids:
            fates[ids[m.group(1)]].append((m.group(2), m.group(3)))
    return fates


def final_fates(fates: dict[str, list[tuple[str, str]]]) -> dict[str, list[str]]:
    return {mid: [s for s, _ in entries if s in ("sent", "bounced")] for mid, entries in fates.items()}


# ---- the fixture ---------------------------------------------------------------------------------

@pytest.fixture
def relayed(tmp_path):
    """A desk with six organisations, `serve` as a process, and a Postfix relaying to its SMTP listener."""
    port = free_port()
    config = write_config(tmp_path, port=port)
    cli(config, "init")
    for org, people in accounts().items():
        cli(config, "org", "add", org, "--package", "silver", "--main-contact", people[0], "--no-mail")
        for n, address in enumerate(people[1:], start=1):
            cli(config, "account", "add", address, "--org", org, "--locale", "de" if n % 2 else "en", "--no-mail")
    gateway = GatewayProcess(config, port, tmp_path / "serve.log")
    postfix = Postfix(f"smtp:[127.0.0.1]:{port}", main_cf="""
smtp_connect_timeout = 2s
smtp_helo_timeout = 10s
default_destination_concurrency_limit = 8
""")
    gateway.start()
    postfix.start()
    try:
        yield config, gateway, postfix
    finally:
        gateway.stop()
        postfix.remove()


def open_seed_tickets(config: Path, postfix: Postfix) -> dict[str, list[int]]:
    for org, people in accounts().items():
        for n in range(SEEDS_PER_ORG):
            msg = mail(people[n], f"Seed ticket of {org}", "Please keep this ticket for the replies.",
                       message_id=f"<seed-{n}@{org.lower()}.example>")
            postfix.send(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")), people[n])
    total = len(ORGS) * SEEDS_PER_ORG
    wait_until(lambda: db_count(config, "outcome = 'ticket_created'") == total, 30, 0.1, "seed tickets opened")
    seeds = collections.defaultdict(list)
    for ticket in cli_json(config, "ticket", "list"):
        seeds[ticket["organization"]].append(ticket["number"])
    assert sum(map(len, seeds.values())) == total
    return seeds


# ---- the test ------------------------------------------------------------------------------------

@needs_postfix
def test_burst_through_postfix_survives_sigkill_exactly_once(relayed):
    # Every message Postfix accepted ends in Postdesk exactly once, though serve was killed mid-burst.
    config, gateway, postfix = relayed
    rng = random.Random(SEED)
    seeds = open_seed_tickets(config, postfix)
    plan = plan_burst(MESSAGES, seeds, rng)
    before = db_count(config)
    started = time.monotonic()

    accepted: list[str] = []
    errors: list[str] = []
    items = list(enumerate(plan))
    injectors = [threading.Thread(target=inject, args=(postfix, items[k::INJECTORS], accepted, errors))
                 for k in range(INJECTORS)]
    for thread in injectors:
        thread.start()

    kills = []
    for k in range(1, KILLS + 1):   # spread the kills over the burst, each at a random moment near its mark
        mark = before + int(MESSAGES * (k - rng.random() * 0.5) / (KILLS + 1))
        wait_until(lambda: db_count(config) >= mark, 120, 0.01, f"progress to inbound row {mark}")
        gateway.kill()
        kills.append(db_count(config) - before)
        time.sleep(rng.choice([0.0, 0.3, 1.0]))   # sometimes Postfix finds nobody listening
        gateway.start()
    for thread in injectors:
        thread.join(timeout=300)
    assert errors == [] and len(accepted) == MESSAGES, errors[:5]

    def drained() -> bool:
        if postfix.queued():
            postfix.flush()   # postqueue -f: retry deferred mail now
            return False
        return True
    wait_until(drained, 180, 1.0, "Postfix queue empty")
    wait_until(lambda: db_count(config, "outcome = 'pending'") == 0, 60, 0.2, "every stored message processed")
    fates = final_fates(postfix_fates(postfix.log_text()))
    wait_until(lambda: all(fates.get(p.message_id) for p in plan)
               or fates.update(final_fates(postfix_fates(postfix.log_text()))), 20, 0.2, "Postfix logged every fate")
    elapsed = time.monotonic() - started

    # Postfix: each message delivered or bounced exactly once, nothing left in its queue.
    assert postfix.queued() == []
    wrong_fate = {p.message_id: fates.get(p.message_id) for p in plan
                  if fates.get(p.message_id) != ["bounced" if p.kind == "refused" else "sent"]}
    assert wrong_fate == {}

    # Postdesk: each message has exactly one row that is not a duplicate, with the outcome of its kind.
    rows = collections.defaultdict(list)
    for row in cli_json(config, "inbound", "list"):
        rows[row["message_id"]].append(row)
    assert not [r for rs in rows.values() for r in rs if r["outcome"] in ("pending", "quarantined")]
    effective = {mid: [r for r in rs if r["outcome"] != "duplicate"] for mid, rs in rows.items()}
    wrong = {}
    for p in plan:
        found = effective.get(p.message_id, [])
        if len(found) != 1 or not _matches(p, found[0]):
            wrong[p.message_id] = [(r["outcome"], r["ticket"], r["reason"]) for r in found]
    assert wrong == {}
    redelivered = sum(len(rs) - 1 for rs in rows.values())

    # Tickets: one per new message, each reply once on the ticket it named.
    tickets = cli_json(config, "ticket", "list")
    new = [p for p in plan if p.kind == "new"]
    assert len(tickets) == len(ORGS) * SEEDS_PER_ORG + len(new)
    assert sorted(t["subject"] for t in tickets if t["subject"].startswith("Burst")) == sorted(p.subject for p in new)
    for org_seeds in seeds.values():
        for number in org_seeds:
            shown = cli_json(config, "ticket", "show", str(number))
            ids = [m["message_id"] for m in shown["messages"] if m["direction"] == "inbound"]
            expected = [p.message_id for p in plan if p.kind == "reply" and p.ticket == number]
            assert sorted(i for i in ids if i and i.startswith("<burst-")) == sorted(expected), number

    assert gateway.terminate() == 0, gateway.log_tail()
    counts = collections.Counter(p.kind for p in plan)
    print(f"\ncrash run: {MESSAGES} messages ({counts['new']} new, {counts['reply']} replies, "
          f"{counts['refused']} refused), {len(kills)} SIGKILLs after {kills} inbound rows, "
          f"{gateway.starts} starts, {redelivered} redeliveries recorded as duplicates, "
          f"{sum('deferred' in line for line in postfix.log_text().splitlines())} deferrals, "
          f"{elapsed:.1f} s")


def _matches(planned: Planned, row: dict) -> bool:
    if planned.kind == "refused":
        return row["outcome"] == "refused"
    if planned.kind == "new":
        return row["outcome"] == "ticket_created"
    return row["ticket"] == planned.ticket and row["outcome"] not in ("refused", "ignored", "ticket_created")
