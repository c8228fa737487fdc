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


def spooled(config: Path) -> int:
    """Messages answered 250 but not filed into the database yet (serve's spool, storage/spool.py)."""
    path = config.parent / "postdesk.spool.db"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        return db.execute("SELECT count(*) FROM spool").fetchone()[0]


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
        if postfix.maillog.exists():   # kept beside serve.log for a post-mortem
            (tmp_path / "postfix.log").write_bytes(postfix.maillog.read_bytes())
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
    started = time.monotonic()
    kills = burst_with_kills(config, gateway, postfix, plan, rng)
    wait_until(lambda: drained(postfix), 180, 1.0, "Postfix queue empty")
    wait_until(lambda: spooled(config) == 0, 60, 0.2, "every spooled message filed")
    wait_until(lambda: db_count(config, "outcome = 'pending'") == 0, 60, 0.2, "every stored message processed")
    fates = wait_until(lambda: logged_fates(postfix, plan), 20, 0.2, "Postfix logged the fate of every message")
    elapsed = time.monotonic() - started

    # Postfix: each message delivered or bounced (with our reason) exactly once; nothing left in its queue.
    assert postfix.queued() == []
    wrong_fate = {p.message_id: fates[p.message_id] for p in plan if [s for s, _ in fates[p.message_id]]
                  != ["bounced" if p.kind == "refused" else "sent"]}
    assert wrong_fate == {}
    assert all("550 5.7.1" in fates[p.message_id][0][1] for p in plan if p.kind == "refused")

    # Postdesk: exactly one row per message that is not a duplicate, with the outcome of its kind.
    rows = collections.defaultdict(list)
    for row in cli_json(config, "inbound", "list"):
        rows[row["message_id"]].append(row)
    assert [r for rs in rows.values() for r in rs if r["outcome"] in ("pending", "quarantined")] == []
    effective = {mid: [r for r in rs if r["outcome"] != "duplicate"] for mid, rs in rows.items()}
    wrong = {p.message_id: [(r["outcome"], r["ticket"], r["reason"]) for r in effective.get(p.message_id, [])]
             for p in plan if not _exactly_once(p, effective.get(p.message_id, []))}
    assert wrong == {}
    check_tickets(config, plan, seeds)
    assert gateway.terminate() == 0, gateway.log_tail()

    counts, log = collections.Counter(p.kind for p in plan), postfix.log_text().splitlines()
    redelivered = {mid: len(rs) - 1 for mid, rs in rows.items() if len(rs) > 1}
    print(f"\ncrash run: {MESSAGES} messages ({counts['new']} new, {counts['reply']} replies, "
          f"{counts['refused']} refused), {len(kills)} SIGKILLs after {kills} inbound rows, "
          f"{gateway.starts} starts, {elapsed:.1f} s; Postfix: "
          f"{sum('status=deferred' in line for line in log)} deferrals, "
          f"{sum('postfix/smtp[' in line and 'lost connection' in line for line in log)} connections lost; "
          f"Postdesk: {sum(redelivered.values())} redeliveries recorded as duplicates "
          f"({sum(n for mid, n in redelivered.items() if effective[mid][0]['outcome'] == 'refused')} of refusals)")


def burst_with_kills(config: Path, gateway: GatewayProcess, postfix: Postfix, plan: list[Planned],
                     rng: random.Random) -> list[int]:
    """Inject the burst into Postfix while killing and restarting serve; returns the progress at each kill."""
    before = db_count(config)
    accepted: list[str] = []
    errors: list[str] = []
    items = list(enumerate(plan))
    injectors = [threading.Thread(target=inject, args=(postfix, items[k::INJECTORS], accepted, errors))
                 for k in range(INJECTORS)]
    for thread in injectors:
        thread.start()
    kills = []
    for k in range(1, KILLS + 1):   # spread over the burst, each at a random moment near its mark
        mark = before + int(len(plan) * (k - rng.random() * 0.5) / (KILLS + 1))
        wait_until(lambda: db_count(config) >= mark, 120, 0.01, f"progress to inbound row {mark}")
        gateway.kill()
        kills.append(db_count(config) - before)
        time.sleep(rng.choice([0.0, 0.3, 1.0]))   # sometimes Postfix finds nobody listening
        gateway.start()
    for thread in injectors:
        thread.join(timeout=300)
    assert errors == [] and len(accepted) == len(plan), errors[:5]   # Postfix accepted every message
    return kills


def drained(postfix: Postfix) -> bool:
    if postfix.queued():
        postfix.flush()   # postqueue -f: retry deferred mail now
        return False
    return True


def logged_fates(postfix: Postfix, plan: list[Planned]) -> dict[str, list[tuple[str, str]]] | None:
    """Each message's final statuses (sent/bounced) in Postfix's log, once every message has one."""
    fates = {mid: [(s, text) for s, text in entries if s in ("sent", "bounced")]
             for mid, entries in postfix_fates(postfix.log_text()).items()}
    return fates if all(fates.get(p.message_id) for p in plan) else None


def _exactly_once(planned: Planned, rows: list[dict]) -> bool:
    if len(rows) != 1:
        return False
    row = rows[0]
    if planned.kind == "refused":
        return row["outcome"] == "refused"
    if planned.kind == "new":
        return row["outcome"] == "ticket_created"
    return row["ticket"] == planned.ticket and row["outcome"] not in ("refused", "ignored", "ticket_created")


def check_tickets(config: Path, plan: list[Planned], seeds: dict[str, list[int]]) -> None:
    """One ticket per new message; each reply once on the ticket it named."""
    tickets = cli_json(config, "ticket", "list")
    new = [p for p in plan if p.kind == "new"]
    assert len(tickets) == len(ORGS) * SEEDS_PER_ORG + len(new)
    assert sorted(t["subject"] for t in tickets if t["subject"].startswith("Burst")) == sorted(p.subject for p in new)
    for number in (n for numbers in seeds.values() for n in numbers):
        shown = json.loads(cli(config, "ticket", "show", str(number), "--json"))
        ids = [m["message_id"] for m in shown["messages"] if m["direction"] == "inbound"]
        expected = [p.message_id for p in plan if p.kind == "reply" and p.ticket == number]
        assert sorted(i for i in ids if i and i.startswith("<burst-")) == sorted(expected), number


# ---- the windows a kill can hit, one by one ------------------------------------------------------

def test_refusal_retried_after_a_lost_reply_is_recorded_once(acme):
    # Killed after committing a refusal but before answering 550, the MTA delivers again: refused again, not twice.
    msg = mail("visitor@stranger.example", "Hello?", "Who reads this?")
    first, again = acme.send(msg), acme.send(msg.as_bytes().replace(b"\n", b"\r\n"))
    assert first[0] == again[0] == 550 and "no service account" in again[1]
    rows = acme.inbound()
    assert [r["outcome"] for r in rows] == ["refused", "duplicate"]
    assert f"refused inbound #{rows[0]['id']}" in rows[1]["reason"]
    assert [r["id"] for r in acme.json("inbound", "list", "--outcome", "refused")] == [rows[0]["id"]]


def test_accepted_message_retried_after_a_lost_reply_changes_nothing(acme):
    # Killed after committing but before answering 250, the MTA delivers again: 250, recorded as a duplicate.
    msg = mail("alice@acme.example", "Only once", "The export fails.")
    assert acme.send(msg)[0] == 250
    assert acme.send(msg)[0] == 250
    assert [(r["outcome"], r["ticket"]) for r in acme.inbound()] == [("ticket_created", 1), ("duplicate", 1)]
    assert len(acme.json("ticket", "list")) == 1
    assert len([m for m in acme.ticket(1)["messages"] if m["direction"] == "inbound"]) == 1


# ---- SIGTERM: the message in hand ----------------------------------------------------------------

class SmtpLine:
    """A line-by-line SMTP client that can stop in the middle of DATA (smtplib sends DATA in one go)."""

    def __init__(self, port: int) -> None:
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith("220")

    def reply(self) -> str:
        """The last line of the next reply ("" when the server closed the connection)."""
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            if len(line) < 4 or line[3] != "-":
                return line

    def command(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def begin(self, sender: str) -> None:
        """EHLO, MAIL, RCPT and DATA, ready for the message."""
        for text, code in (("EHLO client.example.net", "250"), (f"MAIL FROM:<{sender}>", "250"),
                           (f"RCPT TO:<{SUPPORT}>", "250"), ("DATA", "354")):
            assert self.command(text).startswith(code), text

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def big_message(sender: str, subject: str, message_id: str) -> bytes:
    msg = mail(sender, subject, "The report export fails; the HAR export is attached.", message_id=message_id)
    msg.add_attachment(b'{"log": {"entries": []}}\n' * 40000, maintype="application", subtype="json",
                       filename="export.har")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")).replace(b"\r\n.", b"\r\n..")


@pytest.fixture
def served(tmp_path, request):
    """`serve` as a process with ACME registered; the shutdown grace in seconds is the test's parameter."""
    port = free_port()
    config = write_config(tmp_path, port=port)
    config.write_text(config.read_text().replace("[smtp]\n", f"[smtp]\nshutdown_grace_seconds = {request.param}\n"))
    cli(config, "init")
    cli(config, "org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example", "--no-mail")
    gateway = GatewayProcess(config, port, tmp_path / "serve.log")
    gateway.start()
    try:
        yield config, gateway
    finally:
        gateway.stop()


@pytest.mark.parametrize("served", [20.0], indirect=True)
def test_sigterm_mid_data_finishes_the_message_in_hand_and_exits_0(served):
    # SIGTERM while DATA arrives: the message is stored and answered 250; an idle connection gets 421; exit 0.
    config, gateway = served
    sending, idle = SmtpLine(gateway.port), SmtpLine(gateway.port)
    assert idle.command("EHLO idle.example.net").startswith("250")
    message = big_message("alice@acme.example", "Sent during shutdown", "<in-hand@acme.example>")
    sending.begin("alice@acme.example")
    half = len(message) // 2
    sending.sock.sendall(message[:half])
    time.sleep(0.3)
    gateway.proc.send_signal(signal.SIGTERM)
    assert idle.reply().startswith("421 4.3.2")   # between transactions: turned away at once
    wait_until(lambda: not _listening(gateway.port), 5, 0.05, "listener closed")
    assert gateway.proc.poll() is None            # still finishing the message in hand
    sending.sock.sendall(message[half:] + b"\r\n.\r\n")
    assert sending.reply().startswith("250 2.0.0")
    assert gateway.proc.wait(timeout=30) == 0, gateway.log_tail()
    rows = cli_json(config, "inbound", "list")
    assert [(r["message_id"], r["outcome"]) for r in rows] == [("<in-hand@acme.example>", "ticket_created")], gateway.log_tail()
    assert [t["subject"] for t in cli_json(config, "ticket", "list")] == ["Sent during shutdown"]
    sending.close()
    idle.close()


@pytest.mark.parametrize("served", [2.0], indirect=True)
def test_sigterm_answers_421_when_data_outlasts_the_grace(served):
    # A client still sending when the grace ends is told 421 (it keeps the mail and retries); nothing stored.
    config, gateway = served
    sending = SmtpLine(gateway.port)
    message = big_message("alice@acme.example", "Too slow", "<too-slow@acme.example>")
    sending.begin("alice@acme.example")
    sending.sock.sendall(message[:len(message) // 2])
    time.sleep(0.3)
    stopped = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    assert sending.reply().startswith("421 4.3.2")
    assert 1.5 < time.monotonic() - stopped < 10
    assert gateway.proc.wait(timeout=30) == 0, gateway.log_tail()
    assert cli_json(config, "inbound", "list") == []
    sending.close()
