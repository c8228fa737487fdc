"""Out-of-order arrival (issue 7 item 6): a reply that overtakes its parent still ends on the parent's ticket.

Over SMTP with the real gateway: a reply delivered first waits for its parent and is
processed right after it; a parent that comes after the wait joins the ticket its
reply opened, but only a ticket of its own organisation. The wait's rule itself is
pure and tested row by row.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from gateway.config import settings_from_mapping
from gateway.errors import ConfigError
from gateway.threader import ThreadMatch, match_thread, parent_wait_until
from tests.conftest import _running_desk, mail
from tests.pg import pg_cluster  # noqa: F401  (fixture)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
WAIT = timedelta(seconds=5)
PARENT_ID = "<export-question@acme.example>"
UNKNOWN = ("<p@x>",)


# ---- the pure rule ------------------------------------------------------------------------

@pytest.mark.parametrize("match, waiting_until, may_start, now, expected", [
    (ThreadMatch(None, "none", missing=UNKNOWN), None, True, T0, T0 + WAIT),              # first pass: starts
    (ThreadMatch(None, "none", missing=UNKNOWN), T0 + WAIT, False, T0 + timedelta(seconds=4), T0 + WAIT),
    (ThreadMatch(None, "none", missing=UNKNOWN), T0 + WAIT, False, T0 + WAIT, None),      # exactly at: done
    (ThreadMatch(None, "none", missing=UNKNOWN), None, False, T0, None),                  # requeued, not fresh
    (ThreadMatch(None, "none"), None, True, T0, None),                                    # names nothing unknown
    (ThreadMatch(3, "references", missing=UNKNOWN), None, True, T0, None),                # found its ticket
])
def test_reply_waits_only_when_it_finds_no_ticket_and_names_unknown_messages(match, waiting_until, may_start,
                                                                             now, expected):
    """Waiting starts on a first pass, keeps its deadline on later passes, and never outlives it."""
    assert parent_wait_until(match, waiting_until, may_start, now, WAIT) == expected


def test_no_wait_when_the_wait_is_configured_off():
    """``parent_wait_seconds = 0`` turns the wait off."""
    assert parent_wait_until(ThreadMatch(None, "none", missing=UNKNOWN), None, True, T0, timedelta(0)) is None


@pytest.mark.parametrize("seconds", [-1, 601])
def test_wait_outside_zero_to_ten_minutes_is_a_config_error(seconds):
    """A wait longer than an SMTP client waits for its DATA reply is no longer about mail in flight."""
    with pytest.raises(ConfigError, match=r"\[desk\] parent_wait_seconds"):
        settings_from_mapping({"desk": {"parent_wait_seconds": seconds}})


class Lookup:
    """Tickets 1 (acme) and 2 (globex); ticket 2 holds a reply that named <late@x> before it came."""

    def __init__(self, org):
        self.org = org

    def ticket_for_token(self, address):
        return None

    def tickets_for_message_ids(self, message_ids):
        return {m: 1 for m in message_ids if m == "<known@x>"}

    def ticket_exists(self, number):
        return number in (1, 2)

    def may_write(self, number):
        return {1: "acme", 2: "globex"}[number] == self.org

    def tickets_answering(self, message_id):
        return [2] if message_id == "<late@x>" else []


def test_late_parent_evidence_comes_last_and_respects_the_organisation():
    """Own headers win over a reply that named the message; another organisation's ticket is never joined."""
    assert match_thread([], ["<known@x>"], [], "", Lookup("acme"), message_id="<late@x>").via == "in-reply-to"
    joined = match_thread([], [], [], "", Lookup("globex"), message_id="<late@x>")
    assert (joined.ticket_number, joined.via) == (2, "answered-by")
    refused = match_thread([], [], [], "", Lookup("acme"), message_id="<late@x>")
    assert refused.ticket_number is None and "another organisation" in refused.skipped[0]


# ---- over SMTP ----------------------------------------------------------------------------

def parent(**extra):
    return mail("alice@acme.example", "Export fails", "The CSV export fails since this morning.",
                cc="carol@acme.example", message_id=PARENT_ID, **extra)


def reply_from(sender: str, body: str = "Same here, also with the PDF export.", message_id: str | None = None):
    cc = "alice@acme.example" if sender != "alice@acme.example" else None
    return mail(sender, "Re: Export fails", body, cc=cc, in_reply_to=PARENT_ID, references=PARENT_ID,
                message_id=message_id)


def wait_until_settled(desk, timeout: float = 10.0) -> None:
    """Until no message is pending or deferred (the worker polls every 0.2 s in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [r for r in desk.inbound() if r["outcome"] in ("pending", "deferred")]:
            return
        time.sleep(0.05)
    raise AssertionError(f"still waiting: {desk.inbound()}")


def mails_sent(desk) -> list[tuple[str, str, str]]:
    """Recipient, subject and the message each mail answers, of every mail the test's messages caused."""
    def answered(m) -> str:   # our own Message-IDs differ from run to run
        return "(our earlier mail)" if (m["In-Reply-To"] or "").startswith("<pd.") else m["In-Reply-To"]
    return sorted((m["To"], m["Subject"], answered(m)) for m in desk.delivered())


@pytest.mark.parametrize("reply_first", [False, True], ids=["parent-first", "reply-first"])
def test_reply_and_parent_end_on_one_ticket_in_either_order_with_ccs(acme, reply_first):
    """Carol's reply-all delivered before Alice's question waits for it, then threads onto its ticket."""
    question, answer = parent(), reply_from("carol@acme.example")
    first, second = (answer, question) if reply_first else (question, answer)
    acme.send(first)
    if reply_first:
        (row,) = acme.inbound()
        assert row["outcome"] == "pending" and row["waiting_for_parent"]
        assert PARENT_ID in row["reason"] and row["wait_until"]
        assert acme.json("ticket", "list") == []
    acme.send(second)
    assert [t["number"] for t in acme.json("ticket", "list")] == [1]
    ticket = acme.ticket(1)
    inbound = [m for m in ticket["messages"] if m["direction"] == "inbound"]
    assert [m["message_id"] for m in inbound] == [PARENT_ID, answer["Message-ID"]]
    assert ticket["requester"] == "alice@acme.example" and "carol@acme.example" in ticket["ccs"]
    by_sender = {r["from"]: (r["outcome"], r["ticket"]) for r in acme.inbound()}
    assert by_sender == {"alice@acme.example": ("ticket_created", 1), "carol@acme.example": ("reply", 1)}
    assert len([m for m in acme.delivered("alice@acme.example") if "[#1]" in m["Subject"]]) == 1


def test_the_same_mails_go_out_whichever_arrives_first(tmp_path_factory, clock):
    """Waiting restores the order: acknowledgment, CC notice and agent notices are those of the in-order case."""
    sent = {}
    for reply_first in (False, True):
        runner = _running_desk(tmp_path_factory.mktemp("order"), clock)
        desk = next(runner)
        try:
            desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
            desk.cli("account", "add", "carol@acme.example", "--org", "ACME")
            desk.cli("agent", "add", "sam@vendor.example")
            messages = [parent(), reply_from("carol@acme.example", message_id="<same-here@acme.example>")]
            for message in reversed(messages) if reply_first else messages:
                desk.send(message)
            sent[reply_first] = mails_sent(desk)
        finally:
            next(runner, None)
    assert sent[True] == sent[False]
    assert [m for m in sent[True] if "alice@acme.example" in m[0]][0][2] == PARENT_ID   # her acknowledgment


def test_agent_answer_delivered_before_the_question_waits_instead_of_being_ignored(acme):
    """An agent's reply naming a message not received yet is not dropped: it lands once the question is in."""
    acme.send(reply_from("sam@vendor.example", "#status solved\nPlease update to 4.2.1."))
    assert acme.inbound()[0]["outcome"] == "pending" and acme.inbound()[0]["waiting_for_parent"]
    acme.send(parent())
    assert acme.ticket(1)["status"] == "solved"
    answer = [m for m in acme.delivered("alice@acme.example") if "4.2.1" in m.get_body(("plain",)).get_content()]
    assert len(answer) == 1


def test_parent_after_the_wait_joins_the_ticket_its_reply_opened(acme, clock):
    """The reply opens its own ticket once the wait is over; the late parent then joins it, its author a CC."""
    acme.send(reply_from("carol@acme.example"))
    clock.advance(seconds=6)
    wait_until_settled(acme)
    (opened,) = acme.json("ticket", "list")
    assert opened["requester"] == "carol@acme.example"
    before = {m["id"] for m in acme.json("outbox", "list")}
    acme.send(parent())
    assert [t["number"] for t in acme.json("ticket", "list")] == [opened["number"]]
    ticket = acme.ticket(opened["number"])
    assert [m["author"] for m in ticket["messages"] if m["direction"] == "inbound"] == \
        ["carol@acme.example", "alice@acme.example"]
    assert "alice@acme.example" in ticket["ccs"]
    late = [r for r in acme.inbound() if r["from"] == "alice@acme.example"][0]
    assert (late["outcome"], late["ticket"]) == ("reply", opened["number"])
    assert "a reply to it that arrived first" in late["reason"]
    assert any(e["kind"] == "late-parent" for e in ticket["events"])
    # The reply's acknowledgment stands; the late parent adds no second "ticket created" mail.
    added = [m["template"] for m in acme.json("outbox", "list") if m["id"] not in before]
    assert added == ["agent_notice"]


def test_late_parent_of_another_organisation_does_not_join(acme, clock):
    """A Globex mail whose Message-ID an ACME reply named opens a Globex ticket; the ACME ticket stays ACME's."""
    globex_id = "<q3-plan@globex.example>"
    acme.send(mail("alice@acme.example", "Re: Q3 plan", "Answering Bob's mail.", in_reply_to=globex_id,
                   references=globex_id))
    clock.advance(seconds=6)
    wait_until_settled(acme)
    acme.send(mail("bob@globex.example", "Q3 plan", "Our plan for Q3.", message_id=globex_id))
    tickets = {t["number"]: t for t in acme.json("ticket", "list")}
    assert sorted((t["organization"], t["requester"]) for t in tickets.values()) == \
        [("ACME", "alice@acme.example"), ("Globex", "bob@globex.example")]
    acme_ticket = next(n for n, t in tickets.items() if t["organization"] == "ACME")
    assert [m["author"] for m in acme.ticket(acme_ticket)["messages"] if m["direction"] == "inbound"] == \
        ["alice@acme.example"]
    bob = [r for r in acme.inbound() if r["from"] == "bob@globex.example"][0]
    assert bob["outcome"] == "ticket_created" and "another organisation" in bob["reason"]


def test_mail_replayed_by_hand_does_not_wait(acme, tmp_path):
    """Only mail `serve` receives waits for a parent; a replayed file is processed at once."""
    path = tmp_path / "reply.eml"
    path.write_bytes(reply_from("carol@acme.example").as_bytes())
    record = acme.json("replay", str(path), "--sender", "carol@acme.example")
    assert record["outcome"] == "ticket_created"


def test_both_rules_hold_on_postgresql(tmp_path, clock, pg_cluster):
    """The wake-up and the join are plain SQL on the indexed table: the same on PostgreSQL."""
    runner = _running_desk(tmp_path, clock, db_url=pg_cluster.new_database())
    desk = next(runner)
    try:
        desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
        desk.cli("account", "add", "carol@acme.example", "--org", "ACME")
        desk.send(reply_from("carol@acme.example"))
        desk.send(parent())                                      # the reply waited: one ticket, Alice's
        later_id = "<second-question@acme.example>"
        desk.send(mail("carol@acme.example", "Re: Import", "Same with the import.", in_reply_to=later_id))
        clock.advance(seconds=6)
        wait_until_settled(desk)                                 # waited in vain: Carol's own ticket
        desk.send(mail("alice@acme.example", "Import", "The import fails too.", message_id=later_id))
        tickets = [(t["number"], t["requester"]) for t in desk.json("ticket", "list")]
        assert tickets == [(1, "alice@acme.example"), (2, "carol@acme.example")]
        authors = [[m["author"] for m in desk.ticket(n)["messages"] if m["direction"] == "inbound"]
                   for n, _ in tickets]
        assert authors == [["alice@acme.example", "carol@acme.example"], ["carol@acme.example", "alice@acme.example"]]
        assert {r["outcome"] for r in desk.inbound()} == {"ticket_created", "reply"}
    finally:
        next(runner, None)
