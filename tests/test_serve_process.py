"""The README path in a real process: `postdesk serve`, a mail sent with swaks, the ticket and the Maildir.

swaks is an SMTP client nobody here wrote. Without it these tests are skipped,
unless POSTDESK_REQUIRE_SWAKS is set (as CI does), where its absence fails.
"""
import json
import mailbox
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from tests.conftest import SUPPORT, free_port, mail, write_config

SWAKS = shutil.which("swaks")
if SWAKS is None and os.environ.get("POSTDESK_REQUIRE_SWAKS"):
    raise RuntimeError("swaks is required (POSTDESK_REQUIRE_SWAKS is set) but not installed")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks not installed (apt-get install swaks)")


def postdesk(config, *args, check=True):
    result = subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def swaks(port: int, sender: str, subject: str, body: str, *extra: str):
    return subprocess.run([SWAKS, "--server", f"127.0.0.1:{port}", "--from", sender, "--to", SUPPORT,
                           "--header", f"Subject: {subject}", "--body", body, *extra],
                          capture_output=True, text=True, timeout=60)


@contextmanager
def serve_process(folder, extra: str = "", db_url: str | None = None):
    """`postdesk serve` as its own process on a fresh installation (ACME, agent Sam); yields (config, port, proc).

    Its log goes to ``folder/serve.log``; ``log_tail(folder)`` shows the end of it."""
    port = free_port()
    config = write_config(folder, extra, port=port, db_url=db_url)
    postdesk(config, "init")
    postdesk(config, "org", "add", "ACME", "--package", "bronze", "--main-contact", "alice@acme.example")
    postdesk(config, "agent", "add", "sam@vendor.example")
    with open(folder / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            wait_port(port)
            yield config, port, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def log_tail(folder) -> str:
    return (folder / "serve.log").read_text(errors="replace")[-2000:]


@pytest.fixture
def served(tmp_path):
    with serve_process(tmp_path) as running:
        yield running


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached")


@needs_swaks
def test_readme_path_swaks_mail_becomes_ticket_and_acknowledgment(served, tmp_path):
    config, port, proc = served
    result = swaks(port, "alice@acme.example", "Export fails",
                   "Typ: Störung\nPriorität: hoch\n\nDer Export bricht mit einer roten Fehlermeldung ab.")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout
    ticket = wait_for(lambda: (r := postdesk(config, "ticket", "show", "1", "--json", check=False)).returncode == 0
                      and json.loads(r.stdout))
    assert (ticket["status"], ticket["type"], ticket["priority"]) == ("open", "problem", "high")
    box = mailbox.Maildir(tmp_path / "maildir", create=False)
    acks = wait_for(lambda: [m for m in box if "alice@acme.example" in m["To"] and "[#1]" in m["Subject"]])
    assert "[#1]" in acks[0]["Subject"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@needs_swaks
def test_swaks_unknown_sender_gets_550_with_reason(served):
    config, port, _ = served
    result = swaks(port, "mallory@evil.example", "Hello", "Let me in")
    assert result.returncode != 0
    assert "550 5.7.1" in result.stdout and "no service account" in result.stdout
    refused = json.loads(postdesk(config, "inbound", "list", "--outcome", "refused", "--json").stdout)
    assert refused[0]["from"] == "mallory@evil.example"


@needs_swaks
def test_swaks_wrong_recipient_gets_550_at_rcpt(served):
    _, port, _ = served
    result = subprocess.run([SWAKS, "--server", f"127.0.0.1:{port}", "--from", "alice@acme.example",
                             "--to", "billing@desk.example.com"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "550 5.1.1" in result.stdout


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    config = write_config(tmp_path)
    result = postdesk(config, "org", "add", "X", "--package", "diamond", "--main-contact", "x@x.example",
                      check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "unknown package" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nprot = 1\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "ticket", "list", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "unknown key 'prot' in [smtp]" in result.stderr


def worker_children(pid: int) -> list[int]:
    """The worker processes `serve` started (beside multiprocessing's resource tracker)."""
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except OSError:
        return []
    return [int(child) for child in text.split() if "spawn_main" in _cmdline(int(child))]


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def send_smtp(port: int, sender: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(mail(sender, subject, "The nightly export stopped with an error."))


def test_serve_runs_the_worker_in_a_child_and_starts_it_again_when_it_dies(served):
    config, port, proc = served
    first = wait_for(lambda: worker_children(proc.pid))
    assert len(first) == 1
    os.kill(first[0], signal.SIGKILL)
    second = wait_for(lambda: [pid for pid in worker_children(proc.pid) if pid != first[0]], timeout=15)
    assert len(second) == 1
    send_smtp(port, "alice@acme.example", "Export fails after the worker died")
    ticket = wait_for(lambda: (r := postdesk(config, "ticket", "show", "1", "--json", check=False)).returncode == 0
                      and json.loads(r.stdout), timeout=20)
    assert ticket["subject"] == "Export fails after the worker died"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    wait_for(lambda: not alive(second[0]), timeout=10)


def test_worker_child_stops_when_serve_is_killed(served):
    config, port, proc = served
    child = wait_for(lambda: worker_children(proc.pid))[0]
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: not alive(child), timeout=15)
    with pytest.raises(OSError):   # nothing answers any more: no half-alive gateway left
        send_smtp(port, "alice@acme.example", "Nobody listens")


STUCK_CHILD = """
import os, threading
from gateway.service import _exit_when_orphaned
threading.Thread(target=_exit_when_orphaned, args=(os.getppid(), 0.5, 0.05), daemon=True).start()
lock = threading.Lock(); lock.acquire(); lock.acquire()   # stuck for good, as on a lock a dead process held
"""
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_worker_stuck_on_a_lock_of_a_killed_serve_ends_after_the_grace_time():
    """``serve`` SIGKILLed while holding a lock it shares with the worker: the worker still ends."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, STUCK_CHILD], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    assert alive(child)   # stuck, and its parent is there: it stays
    parent.kill()
    parent.wait(timeout=10)
    wait_for(lambda: not alive(child), timeout=10)


def test_worker_thread_mode_processes_mail_without_a_child(tmp_path):
    with serve_process(tmp_path, extra='worker = "thread"') as (config, port, proc):
        send_smtp(port, "alice@acme.example", "Export fails in thread mode")
        ticket = wait_for(lambda: (r := postdesk(config, "ticket", "show", "1", "--json", check=False))
                          .returncode == 0 and json.loads(r.stdout))
        assert ticket["subject"] == "Export fails in thread mode"
        assert worker_children(proc.pid) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_tail(tmp_path)


def test_worker_child_runs_at_a_lower_cpu_priority_than_the_listener(served):
    config, port, proc = served
    child = wait_for(lambda: worker_children(proc.pid))[0]
    listener = os.getpriority(os.PRIO_PROCESS, proc.pid)
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, child) == listener + 10)   # set once the child has started
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == listener


def test_mail_answered_250_while_the_database_is_locked_survives_sigkill_in_the_spool(tmp_path):
    # SQLite: 250 means "in the spool"; serve dies before it could file the message; the next serve files it.
    with serve_process(tmp_path) as (config, port, proc):
        database = tmp_path / "postdesk.db"
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")   # another process holds the database's write lock
        try:
            send_smtp(port, "alice@acme.example", "Accepted while the database was busy")
            proc.kill()
            proc.wait(timeout=10)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM inbound WHERE subject LIKE 'Accepted%'").fetchone() == (0,)
    with sqlite3.connect(tmp_path / "postdesk.spool.db") as spool:
        assert spool.execute("SELECT count(*) FROM spool").fetchone() == (1,)
    listed = postdesk(config, "inbound", "list", "--json")
    assert json.loads(listed.stdout) == [] and "1 accepted message waits in the spool" in listed.stderr
    with open(tmp_path / "serve-again.log", "w") as log:
        again = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=log)
        try:
            ticket = wait_for(lambda: (r := postdesk(config, "ticket", "show", "1", "--json", check=False))
                              .returncode == 0 and json.loads(r.stdout), timeout=30)
            assert ticket["subject"] == "Accepted while the database was busy"
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=30) == 0
        finally:
            if again.poll() is None:
                again.kill()
    inbound = json.loads(postdesk(config, "inbound", "list", "--json").stdout)
    assert [(i["subject"], i["outcome"]) for i in inbound] == [("Accepted while the database was busy",
                                                                "ticket_created")]


def test_sigterm_during_a_backlog_stops_after_the_messages_in_hand_and_the_rest_waits(tmp_path):
    # A burst left hundreds of messages pending: SIGTERM must not wait for all of them (a service manager
    # would SIGKILL it); what is left stays pending and is processed, once, by the next start.
    from gateway.config import load_settings
    from gateway.intake import receive
    from gateway.service import build_runtime
    with serve_process(tmp_path) as (config, port, proc):
        proc.kill()   # only the installation is wanted here: the backlog is stored while nothing runs
        proc.wait(timeout=10)
    text = config.read_text().replace("[smtp]\n", "[smtp]\nshutdown_grace_seconds = 0.2\n", 1)
    config.write_text(text)
    settings = load_settings(config)
    runtime = build_runtime(settings, create=False)
    for n in range(400):
        raw = mail("alice@acme.example", f"Backlog {n}", "The export fails.").as_bytes()
        assert receive(runtime.engine, settings, raw, "alice@acme.example", [SUPPORT],
                       runtime.clock.now()).status == "accepted"
    counts = lambda: dict(sqlite3.connect(tmp_path / "postdesk.db").execute(   # noqa: E731
        "SELECT outcome, count(*) FROM inbound GROUP BY outcome").fetchall())
    with open(tmp_path / "serve-2.log", "w") as log:
        again = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for(lambda: counts().get("ticket_created", 0) >= 5, timeout=30)
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=60) == 0
        finally:
            if again.poll() is None:
                again.kill()
    stopped = counts()
    assert stopped.get("pending", 0) > 0 and stopped.get("ticket_created", 0) >= 5
    tickets = json.loads(postdesk(config, "ticket", "list", "--json").stdout)
    assert len(tickets) == stopped["ticket_created"]   # each processed message made its ticket, once
    with open(tmp_path / "serve-3.log", "w") as log:
        third = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for(lambda: counts() == {"ticket_created": 400}, timeout=120)
        finally:
            third.send_signal(signal.SIGTERM)
            third.wait(timeout=60)
    assert len(json.loads(postdesk(config, "ticket", "list", "--json").stdout)) == 400


def test_the_doorbell_wakes_a_child_and_never_waits_for_one():
    """Waking the workers: a full pipe or a child that is gone costs the listener nothing."""
    import multiprocessing
    import threading

    from gateway.service import Doorbell, _listen_for_wakes
    bell = Doorbell()
    reader, writer = multiprocessing.Pipe(duplex=False)
    bell.connect(0, writer)
    woken, stopping = threading.Event(), threading.Event()
    listening = threading.Thread(target=_listen_for_wakes, args=(reader, woken, stopping), daemon=True)
    listening.start()
    bell.set()
    assert woken.wait(5) and not stopping.is_set()
    full_reader, full_writer = multiprocessing.Pipe(duplex=False)   # nobody reads this one
    bell.connect(1, full_writer)
    gone_reader, gone_writer = multiprocessing.Pipe(duplex=False)
    gone_reader.close()                                              # its child died
    bell.connect(2, gone_writer)
    ringing = threading.Thread(target=lambda: [bell.set() for _ in range(100_000)], daemon=True)
    ringing.start()            # far more rings than a pipe holds
    ringing.join(10)
    assert not ringing.is_alive()
    bell.stop(most_seconds=0.5)   # the full pipe is given up on after a while; the reading child is asked
    assert wait_for(stopping.is_set, timeout=5)
    woken.clear()
    bell.close()               # serve gone: the child's end sees the pipe close and wakes to notice
    listening.join(5)
    assert woken.is_set() and not listening.is_alive()
    full_reader.close()
