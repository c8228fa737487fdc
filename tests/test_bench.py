"""The benchmark harness (``bench/``): its corpus says what it means, its checks catch what they should.

The corpus tests parse every generated message with the gateway's own parser, so
the threading the benchmark expects is the threading the mail really carries. The
end-to-end test runs ``bench/run.py`` on SQLite at concurrency 1, where every
message is stored and processed in order, so every message must end on the
expected ticket.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.corpus import make_corpus
from bench.mailtext import dot_stuff
from bench.people import SUPPORT, make_directory
from bench.smtpclient import Sent
from bench.verify import Row, check_threading
from gateway.parsing import parse_message

ROOT = Path(__file__).resolve().parents[1]


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n")
    body = wire[:-3].replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(make_directory(seed=3, n_orgs=12, n_agents=3), n_messages=80, seed=3, existing=40)


def test_corpus_is_the_same_for_the_same_seed_and_differs_for_another(corpus):
    """Runs are comparable only when the corpus is reproducible."""
    again = make_corpus(make_directory(seed=3, n_orgs=12, n_agents=3), n_messages=80, seed=3, existing=40)
    other = make_corpus(make_directory(seed=4, n_orgs=12, n_agents=3), n_messages=80, seed=4, existing=40)
    assert [m.wire for m in again.messages] == [m.wire for m in corpus.messages]
    assert [m.wire for m in other.messages] != [m.wire for m in corpus.messages]


def test_corpus_mixes_the_kinds_of_mail_the_issue_asks_for(corpus):
    """New tickets and replies, replies to existing tickets, HTML, attachments, German and English."""
    summary = corpus.summary()
    assert summary["new"] and summary["replies"] and summary["replies_to_existing"] and summary["from_agents"]
    assert 0 < summary["html_share"] < 1 and 0 < summary["german_share"] < 1 and summary["with_attachments"]


def test_every_message_parses_to_the_headers_the_benchmark_expects(corpus):
    """The gateway's parser reads the Message-ID, sender and thread references the expectations rely on."""
    by_id = {m.message_id: m for m in corpus.messages}
    for message in corpus.messages:
        parsed = parse_message(_unstuff(message.wire))
        assert parsed.message_id == message.message_id
        assert parsed.from_addr == message.envelope_from
        assert SUPPORT in parsed.to
        if message.kind == "reply":
            assert message.root in parsed.references
            assert all(by_id[mid].index < message.index for mid in message.answers)
        if message.kind == "existing":
            tag = f"[#{message.existing_ticket}]"
            assert tag in parsed.subject or any(f"pf-{message.existing_ticket}-" in r for r in parsed.references)


def test_dot_stuffing_escapes_leading_dots_and_ends_the_data():
    """RFC 5321 §4.5.2: a line starting with a dot gets another one."""
    assert dot_stuff(b".x\r\n.\r\ny") == b"..x\r\n..\r\ny\r\n.\r\n"


def test_threading_check_reports_wrong_ticket_missing_row_and_early_arrival(corpus):
    """A reply on the wrong ticket, a message stored twice and a reply stored before its parent are all counted."""
    messages = corpus.messages
    reply = next(m for m in messages if m.kind == "reply")
    root = next(m for m in messages if m.message_id == reply.root)
    lonely = next(m for m in messages if m.kind == "new" and m is not root)
    sent = [Sent(m.index, 250, "250 OK", 0.0, 0.001) for m in (root, reply, lonely)]
    rows = [Row(10, root.message_id, "ticket_created", 7, ""), Row(9, reply.message_id, "ticket_created", 8, ""),
            Row(11, lonely.message_id, "ticket_created", 9, ""), Row(12, lonely.message_id, "duplicate", 9, "")]
    result = check_threading(corpus, sent, rows)
    assert result["checked"] == 3
    assert result["mismatches"] == 2
    assert result["replies_arrived_before_parent"] >= 1
    good = check_threading(corpus, sent[:2], [Row(1, root.message_id, "ticket_created", 7, ""),
                                               Row(2, reply.message_id, "reply", 7, "")])
    assert good["mismatches"] == 0


def test_bench_run_on_sqlite_threads_every_message_at_concurrency_one(tmp_path):
    """The one command runs end to end, prints the tables and writes its results; nothing is lost or misthreaded."""
    pytest.importorskip("psutil", reason="the benchmark needs psutil (pip install -e '.[bench]')")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--db", "sqlite", "--messages", "24", "--concurrency", "1",
         "--existing", "30", "--large", "120", "--ingest-concurrency", "1", "--orgs", "6", "--agents", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "bare aiosmtpd" in result.stdout and "postdesk sqlite" in result.stdout
    data = json.loads((tmp_path / "bench-results.json").read_text())
    postdesk = [r for r in data["results"] if r["server"] == "postdesk"]
    assert [r["existing"] for r in postdesk] == [30, 120]
    for cell in postdesk:
        assert cell["error"] is None, cell["error"]
        assert cell["accepted"] == 24 and cell["sustained_rate"] > 0
        assert cell["threading"]["checked"] == 24
        assert cell["threading"]["mismatches"] == 0, cell["threading"]["examples"]
