"""PostgreSQL through the URL alone, and several gateway processes on one database.

A private cluster (tests/pg.py) on a loopback port; gateways are real
`postdesk serve` processes; the same message delivered to two of them at once
must create one ticket, and two dispatchers must send each queued mail once.
"""
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from aiosmtpd.controller import Controller

from gateway.clock import FixedClock
from tests.conftest import SUPPORT, _running_desk, free_port, mail, write_config
from tests.pg import pg_cluster  # noqa: F401  (fixture)
from tests.test_serve_process import log_tail, serve_process, wait_port, worker_children


def postdesk(config, *args):
    result = subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def pg_desk(tmp_path, pg_cluster):
    clock = FixedClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    yield from _running_desk(tmp_path, clock, db_url=pg_cluster.new_database())


def test_core_path_runs_on_postgresql(pg_desk, clock=None):
    d = pg_desk
    d.cli("org", "add", "ACME", "--package", "bronze", "--main-contact", "alice@acme.example")
    d.cli("agent", "add", "sam@vendor.example")
    assert d.send(mail("alice@acme.example", "Export fails", "Type: problem\nPriority: high\n\nBroken."))[0] == 250
    ack = d.delivered("alice@acme.example")[0]
    d.send(mail("sam@vendor.example", "Re: [#1] Export fails", "#status solved\nFixed."))
    d.send(mail("alice@acme.example", "Re: x", "Still broken.", in_reply_to=ack["Message-ID"]))
    t = d.ticket(1)
    assert (t["status"], t["type"], t["priority"]) == ("open", "problem", "high")
    assert [r["outcome"] for r in d.inbound()] == ["ticket_created", "reply", "reply"]
    assert t["created_at"].endswith("+00:00")
    code, _ = d.send(mail("mallory@evil.example", "x", "y"))
    assert code == 550


def _send_raw(port: int, raw: bytes, results: list, barrier: threading.Barrier) -> None:
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail("alice@acme.example")
        client.rcpt(SUPPORT)
        barrier.wait()
        results.append(client.data(raw)[0])


def test_same_message_to_two_gateway_processes_creates_one_ticket(tmp_path, pg_cluster):
    url = pg_cluster.new_database()
    configs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        configs.append(write_config(folder, db_url=url))
    postdesk(configs[0], "init")
    postdesk(configs[0], "org", "add", "ACME", "--package", "gold", "--main-contact", "alice@acme.example")
    procs = [subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(c)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in configs]
    try:
        ports = [int(next(line for line in c.read_text().splitlines() if line.startswith("port")).split("=")[1])
                 for c in configs]
        for port in ports:
            wait_port(port)
        for i in range(10):
            raw = mail("alice@acme.example", f"Race {i}", f"Body {i}").as_bytes(policy=None)
            raw = raw.replace(b"\n", b"\r\n")
            results: list = []
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=_send_raw, args=(p, raw, results, barrier)) for p in ports]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert results == [250, 250]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            inbound = json.loads(postdesk(configs[1], "inbound", "list", "--json"))
            if all(r["outcome"] != "pending" for r in inbound) and len(inbound) == 20:
                break
            time.sleep(0.2)
        outcomes = sorted(r["outcome"] for r in inbound)
        assert outcomes == ["duplicate"] * 10 + ["ticket_created"] * 10
        tickets = json.loads(postdesk(configs[0], "ticket", "list", "--json"))
        assert sorted(t["subject"] for t in tickets) == sorted(f"Race {i}" for i in range(10))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(30) == 0, p.stderr.read().decode()[-2000:]


class Sink:
    def __init__(self):
        self.received = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append(envelope.content)
        time.sleep(0.01)   # a slow relay widens the window in which a second dispatcher could interfere
        return "250 OK"


def test_two_dispatchers_send_each_queued_mail_once(tmp_path, pg_cluster):
    url = pg_cluster.new_database()
    sink = Sink()
    relay = Controller(sink, hostname="127.0.0.1", port=free_port())
    relay.start()
    try:
        extra = f'\n[outbound]\ntransport = "smtp"\nrelay_host = "127.0.0.1"\nrelay_port = {relay.port}\n'
        config = write_config(tmp_path, db_url=url)
        config.write_text(config.read_text().replace("[outbound]\n", extra.replace("\n[outbound]\n", "[outbound]\n"), 1))
        postdesk(config, "init")
        postdesk(config, "org", "add", "ACME", "--package", "gold", "--main-contact", "alice@acme.example", "--no-mail")
        for i in range(8):
            postdesk(config, "account", "add", f"p{i}@acme.example", "--org", "ACME", "--no-mail")
        for i in range(8):
            path = tmp_path / f"m{i}.eml"
            path.write_bytes(mail(f"p{i}@acme.example", f"Question {i}", "Hello").as_bytes())
            postdesk(config, "replay", str(path))
        queued = json.loads(postdesk(config, "outbox", "list", "--json"))
        assert len(queued) == 8 and {q["status"] for q in queued} == {"queued"}
        flushers = [subprocess.Popen([sys.executable, "-m", "gateway", "outbox", "flush", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
        for f in flushers:
            assert f.wait(120) == 0, f.stderr.read().decode()[-2000:]
        assert len(sink.received) == 8
        assert {q["status"] for q in json.loads(postdesk(config, "outbox", "list", "--json"))} == {"sent"}
    finally:
        relay.stop()


def test_three_worker_processes_process_each_message_once_and_thread_replies(tmp_path, pg_cluster):
    with serve_process(tmp_path, extra="workers = 3", db_url=pg_cluster.new_database()) as (config, port, proc):
        deadline = time.monotonic() + 20
        while len(worker_children(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(worker_children(proc.pid)) == 3
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            for i in range(12):   # each new ticket followed at once by a reply naming it
                first = mail("alice@acme.example", f"Case {i}", f"Problem {i}", message_id=f"<case{i}@acme.example>")
                reply = mail("alice@acme.example", f"Re: Case {i}", f"More on {i}",
                             in_reply_to=f"<case{i}@acme.example>", references=f"<case{i}@acme.example>",
                             message_id=f"<more{i}@acme.example>")
                smtp.send_message(first)
                smtp.send_message(reply)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            inbound = json.loads(postdesk(config, "inbound", "list", "--json"))
            if len(inbound) == 24 and all(r["outcome"] != "pending" for r in inbound):
                break
            time.sleep(0.3)
        by_id = {r["message_id"]: r for r in inbound}
        assert sorted(r["outcome"] for r in inbound) == ["reply"] * 12 + ["ticket_created"] * 12
        for i in range(12):
            assert by_id[f"<more{i}@acme.example>"]["ticket"] == by_id[f"<case{i}@acme.example>"]["ticket"]
        tickets = json.loads(postdesk(config, "ticket", "list", "--json"))
        assert len(tickets) == 12
        proc.terminate()
        assert proc.wait(60) == 0, log_tail(tmp_path)


def test_a_worker_started_while_the_database_is_down_waits_for_it_instead_of_dying(tmp_path, pg_cluster):
    with serve_process(tmp_path, db_url=pg_cluster.new_database()) as (config, port, proc):
        deadline = time.monotonic() + 20
        while not worker_children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        first = worker_children(proc.pid)
        pg_cluster.stop()
        try:
            os.kill(first[0], signal.SIGKILL)
            time.sleep(2.5)
            started = worker_children(proc.pid)
            time.sleep(2.5)
            assert worker_children(proc.pid) == started and len(started) == 1   # one worker, waiting, not respawned
            assert started != first
        finally:
            pg_cluster.resume()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.send_message(mail("alice@acme.example", "Back again", "The database is back."))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tickets = json.loads(postdesk(config, "ticket", "list", "--json"))
            if tickets:
                break
            time.sleep(0.3)
        assert [t["subject"] for t in tickets] == ["Back again"]
        proc.terminate()
        assert proc.wait(60) == 0, log_tail(tmp_path)
