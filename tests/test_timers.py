"""Timers end to end: mail over SMTP, `postdesk tick --now …`, then state, audit event and outbox.

Every rule is checked the way a person would: the ticket's status, the system
event on it (actor "system", kind = the rule), and exactly one notification in
`outbox list` — also when `tick` runs twice, and when two `tick` processes run
at the same moment.
"""
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from gateway.service import BackgroundWork
from tests.conftest import _running_desk, mail
from tests.pg import pg_cluster  # noqa: F401  (fixture)

SECOND = timedelta(seconds=1)


@pytest.fixture
def shop(tmp_path, clock):
    """ACME (silver: first response within 8 support hours) with Alice and Carol; agent Sam.

    The serve loop's own timer pass is pushed far out, so only the test's `tick` fires rules.
    """
    yield from _shop(tmp_path, clock)


@pytest.fixture
def pg_shop(tmp_path, clock, pg_cluster):
    """The same on a fresh PostgreSQL database."""
    yield from _shop(tmp_path, clock, pg_cluster.new_database())


def _shop(tmp_path, clock, db_url=None):
    runner = _running_desk(tmp_path, clock, "tick_interval_seconds = 86400.0\n", db_url=db_url)
    desk = next(runner)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    desk.cli("account", "add", "carol@acme.example", "--org", "ACME", "--locale", "de")
    desk.cli("agent", "add", "sam@vendor.example", "--name", "Sam Agent")
    yield desk
    next(runner, None)


def open_ticket(desk, body="How do I add a licence?", subject="Licences", **kw) -> int:
    code, text = desk.send(mail("alice@acme.example", subject, body, **kw))
    assert code == 250, text
    return desk.inbound()[-1]["ticket"]


def customer_reply(desk, number, body="Here is what you asked for."):
    desk.send(mail("alice@acme.example", f"Re: [#{number}] Licences", body))
    assert desk.inbound()[-1]["ticket"] == number


def agent_reply(desk, number, body="Which licence do you mean?"):
    desk.send(mail("sam@vendor.example", f"Re: [#{number}] Licences", body))
    assert desk.inbound()[-1]["ticket"] == number


def tick(desk, when: datetime, *extra: str) -> list[dict]:
    return desk.json("tick", "--now", when.isoformat(), *extra)["fired"]


def queued(desk, template: str, number: int | None = None) -> list[dict]:
    return [r for r in desk.json("outbox", "list")
            if r["template"] == template and (number is None or r["ticket"] == number)]


def system_events(desk, number: int, kind: str) -> list[dict]:
    return [e for e in desk.ticket(number)["events"] if e["kind"] == kind and e["actor"] == "system"]


# ---- the 14-day reopen window ----------------------------------------------------------------

def test_reopen_window_close_fires_once_with_event_and_mail(shop, clock):
    number = open_ticket(shop)
    agent_reply(shop, number, "#status solved\nDone.")
    solved_at = clock.now()
    assert tick(shop, solved_at + timedelta(days=14) - SECOND) == []
    assert shop.ticket(number)["status"] == "solved"
    fired = tick(shop, solved_at + timedelta(days=14))
    assert [(f["ticket"], f["rule"]) for f in fired] == [(number, "reopen-window-ended")]
    assert tick(shop, solved_at + timedelta(days=14, hours=1)) == []
    t = shop.ticket(number)
    assert t["status"] == "closed" and t["closed_at"] == (solved_at + timedelta(days=14)).isoformat()
    [event] = system_events(shop, number, "reopen-window-ended")
    assert event["at"] == (solved_at + timedelta(days=14)).isoformat()
    [closed] = queued(shop, "ticket_auto_closed", number)
    assert closed["to"] == ["alice@acme.example"]
    body = shop.delivered("alice@acme.example")[-1].get_body(("plain",)).get_content()
    assert "solved 14 days ago" in body and "follow-up" in body


# ---- 30 days: a service request awaiting the customer ---------------------------------------------

def test_service_request_left_unanswered_closes_after_30_days(shop, clock):
    number = open_ticket(shop, cc="carol@acme.example")
    agent_reply(shop, number)
    answered_at = clock.now()
    assert shop.ticket(number)["awaiting_since"] == answered_at.isoformat()
    assert shop.ticket(number)["next_timer"] == {"rule": "service-request-inactive",
                                                 "at": (answered_at + timedelta(days=30)).isoformat()}
    assert tick(shop, answered_at + timedelta(days=30) - SECOND) == []
    assert [f["rule"] for f in tick(shop, answered_at + timedelta(days=30))] == ["service-request-inactive"]
    assert tick(shop, answered_at + timedelta(days=30)) == []
    assert shop.ticket(number)["status"] == "closed"
    assert len(system_events(shop, number, "service-request-inactive")) == 1
    mails = queued(shop, "ticket_auto_closed", number)
    assert sorted(m["to"][0] for m in mails) == ["alice@acme.example", "carol@acme.example"]   # once each
    carol = shop.delivered("carol@acme.example")[-1]
    assert "automatisch geschlossen" in carol.get_body(("plain",)).get_content()
    # closed means closed: the next mail opens a follow-up
    clock.advance(days=31)
    shop.send(mail("alice@acme.example", f"Re: [#{number}] Licences", "Still there?"))
    assert shop.inbound()[-1]["outcome"] == "followup_created"


def test_customer_reply_at_day_29_resets_the_clock_and_the_agent_answer_restarts_it(shop, clock):
    number = open_ticket(shop)
    agent_reply(shop, number)
    first_answer = clock.now()
    clock.advance(days=29)
    customer_reply(shop, number)
    assert shop.ticket(number)["status"] == "open" and shop.ticket(number)["awaiting_since"] is None
    assert tick(shop, first_answer + timedelta(days=30)) == []
    clock.advance(hours=2)
    agent_reply(shop, number, "Thanks, one more question.")
    second_answer = clock.now()
    assert tick(shop, second_answer + timedelta(days=30) - SECOND) == []
    assert shop.ticket(number)["status"] == "awaiting_reply"
    assert [f["rule"] for f in tick(shop, second_answer + timedelta(days=30))] == ["service-request-inactive"]
    assert len(queued(shop, "ticket_auto_closed", number)) == 1


# ---- 30 + 5 days: a problem awaiting the customer ---------------------------------------------

def test_problem_gets_one_status_request_at_30_days_and_closes_5_days_later(shop, clock):
    number = open_ticket(shop, body="Type: problem\nPriority: high\n\nThe export fails.", subject="Export fails")
    agent_reply(shop, number, "Please try version 4.2.1.")
    answered_at = clock.now()
    assert tick(shop, answered_at + timedelta(days=30) - SECOND) == []
    assert [f["rule"] for f in tick(shop, answered_at + timedelta(days=30))] == ["problem-status-request"]
    assert tick(shop, answered_at + timedelta(days=31)) == []          # once per waiting period
    t = shop.ticket(number)
    assert t["status"] == "awaiting_reply"
    assert t["status_request_sent_at"] == (answered_at + timedelta(days=30)).isoformat()
    assert len(system_events(shop, number, "problem-status-request")) == 1
    [request] = queued(shop, "status_update_request", number)
    assert request["to"] == ["alice@acme.example"]
    text = shop.delivered("alice@acme.example")[-1].get_body(("plain",)).get_content()
    assert "persists" in text and "within 5 days" in text
    assert tick(shop, answered_at + timedelta(days=35) - SECOND) == []
    assert [f["rule"] for f in tick(shop, answered_at + timedelta(days=35))] == ["problem-inactive"]
    assert tick(shop, answered_at + timedelta(days=36)) == []
    assert shop.ticket(number)["status"] == "closed"
    assert len(system_events(shop, number, "problem-inactive")) == 1
    assert len(queued(shop, "ticket_auto_closed", number)) == 1
    assert len(queued(shop, "status_update_request", number)) == 1


def test_status_request_is_sent_again_only_in_a_new_waiting_period(shop, clock):
    number = open_ticket(shop, body="Type: problem\n\nThe export fails.", subject="Export fails")
    agent_reply(shop, number)
    tick(shop, clock.now() + timedelta(days=30))
    clock.advance(days=32)
    customer_reply(shop, number, "Yes, it still fails.")            # within the 5 days: no close
    assert tick(shop, clock.now() + timedelta(days=3)) == []
    agent_reply(shop, number, "Fixed in 4.2.2, please check.")       # a new waiting period starts
    restarted = clock.now()
    assert [f["rule"] for f in tick(shop, restarted + timedelta(days=30))] == ["problem-status-request"]
    assert len(queued(shop, "status_update_request", number)) == 2
    assert shop.ticket(number)["status"] == "awaiting_reply"


def test_dry_run_lists_what_would_fire_and_changes_nothing(shop, clock):
    number = open_ticket(shop, body="Type: problem\n\nBroken.")
    agent_reply(shop, number)
    before = shop.json("outbox", "list")
    fired = tick(shop, clock.now() + timedelta(days=30), "--dry-run")
    assert [(f["ticket"], f["rule"]) for f in fired] == [(number, "problem-status-request")]
    assert shop.json("outbox", "list") == before
    assert shop.ticket(number)["status_request_sent_at"] is None
    assert system_events(shop, number, "problem-status-request") == []


# ---- exactly once, also across processes ------------------------------------------------------

# `postdesk tick …` in a fresh interpreter that has done its imports and waits for a common start
# moment, so that two processes really overlap (a plain `python -m gateway tick` spends most of its
# short life importing, and one would usually finish before the other begins).
TICK_AT_THE_SAME_MOMENT = (
    "import sys, time\n"
    "import gateway.service, gateway.timers\n"
    "from gateway.cli import main\n"
    "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def test_two_tick_processes_at_the_same_moment_fire_each_rule_once(shop, clock):
    two_ticks_at_once(shop, clock)


def test_two_tick_processes_on_postgresql_fire_each_rule_once(pg_shop, clock):
    # Row locks with SKIP LOCKED: the processes really run side by side here, nothing serialises them.
    two_ticks_at_once(pg_shop, clock)


def two_ticks_at_once(shop, clock):
    numbers = []
    for sender in ("alice@acme.example", "carol@acme.example") * 3:
        shop.send(mail(sender, f"Question {len(numbers)}", "How do I add a licence?"))
        numbers.append(shop.inbound()[-1]["ticket"])
        agent_reply(shop, numbers[-1], "#status solved\nDone.")
    when = (clock.now() + timedelta(days=14)).isoformat()
    start_at = str(time.time() + 3.0)
    command = [sys.executable, "-c", TICK_AT_THE_SAME_MOMENT, start_at,
               "tick", "--now", when, "--config", str(shop.config), "--json"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in results]
    fired = [f["ticket"] for out, _ in results for f in json.loads(out)["fired"]]
    assert sorted(fired) == numbers                                 # each ticket fired by one of the two
    for number in numbers:
        assert shop.ticket(number)["status"] == "closed"
        assert len(system_events(shop, number, "reopen-window-ended")) == 1
        assert len(queued(shop, "ticket_auto_closed", number)) == 1


def test_a_tick_holding_stale_candidates_fires_nothing_another_tick_fired(shop, clock):
    # The interleaving the two processes above may or may not hit, made certain: a second tick found its
    # candidates before the first one fired them; the re-check on the locked row stops it.
    from gateway import timers
    number = open_ticket(shop, body="Type: problem\n\nBroken.")
    agent_reply(shop, number)
    when = clock.now() + timedelta(days=30)
    stale = timers._candidates(shop.runtime.engine, shop.settings, when)
    assert stale == [number]
    assert [f.rule for f in timers.run_due(shop.runtime.engine, shop.runtime.deps, when)] == ["problem-status-request"]
    assert timers._fire(shop.runtime.engine, shop.runtime.deps, number, when, False) is None
    assert len(queued(shop, "status_update_request", number)) == 1
    assert len(system_events(shop, number, "problem-status-request")) == 1


def test_serve_loop_runs_the_same_timers_with_its_clock(shop, clock):
    number = open_ticket(shop)
    agent_reply(shop, number, "#status solved\nDone.")
    clock.advance(days=14)
    BackgroundWork(shop.runtime).one_pass()
    assert shop.ticket(number)["status"] == "closed"
    assert len(queued(shop, "ticket_auto_closed", number)) == 1
    assert tick(shop, clock.now()) == []


# ---- first-response targets -----------------------------------------------------------------

def test_first_response_target_warns_agents_once_per_stage(shop, clock):
    # opened Monday 10:00 Berlin; silver: 8 support hours -> due Monday 18:00 Berlin (17:00 UTC)
    number = open_ticket(shop)
    due = datetime(2026, 3, 2, 17, 0, tzinfo=timezone.utc)
    assert shop.ticket(number)["first_response_due_at"] == due.isoformat()
    assert tick(shop, due - timedelta(hours=1) - SECOND) == []
    assert [f["rule"] for f in tick(shop, due - timedelta(hours=1))] == ["first-response-due-soon"]
    assert tick(shop, due - timedelta(minutes=30)) == []
    assert [f["rule"] for f in tick(shop, due)] == ["first-response-missed"]
    assert tick(shop, due + timedelta(days=2)) == []
    warnings = queued(shop, "target_warning", number)
    assert [w["to"] for w in warnings] == [["sam@vendor.example"], ["sam@vendor.example"]]
    assert "First response due soon" in warnings[0]["subject"]
    assert "First-response target missed" in warnings[1]["subject"]
    assert len(system_events(shop, number, "first-response-due-soon")) == 1
    assert len(system_events(shop, number, "first-response-missed")) == 1
    assert shop.ticket(number)["status"] == "open"


def test_ticket_list_filters_tickets_close_to_or_past_their_target(shop, clock):
    early = open_ticket(shop, subject="Early")                      # due Monday 17:00 UTC
    clock.advance(hours=3)
    late = open_ticket(shop, subject="Late")                        # 13:00 Berlin: due Tuesday 12:00 Berlin
    at = datetime(2026, 3, 2, 15, 30, tzinfo=timezone.utc)         # Monday 16:30 Berlin
    listed = shop.json("ticket", "list", "--due-within", "2", "--now", at.isoformat())
    assert [(t["number"], t["support_hours_left"], t["overdue"]) for t in listed] == [(early, 1.5, False)]
    assert [t["number"] for t in shop.json("ticket", "list", "--due-within", "4.4", "--now", at.isoformat())] \
        == [early]
    wider = shop.json("ticket", "list", "--due-within", "4.5", "--now", at.isoformat())
    assert [(t["number"], t["support_hours_left"]) for t in wider] == [(early, 1.5), (late, 4.5)]   # 1.5 h + 3 h
    assert shop.json("ticket", "list", "--overdue", "--now", at.isoformat()) == []
    evening = datetime(2026, 3, 2, 19, 0, tzinfo=timezone.utc)
    overdue = shop.json("ticket", "list", "--overdue", "--now", evening.isoformat())
    assert [(t["number"], t["overdue"]) for t in overdue] == [(early, True)]
    agent_reply(shop, early)                                        # answered: no longer listed, no warning
    assert shop.json("ticket", "list", "--overdue", "--now", evening.isoformat()) == []
    assert shop.ticket(early)["first_responded_at"] == clock.now().isoformat()
    assert tick(shop, evening) == []


def test_ticket_opened_friday_1759_is_due_on_monday(shop, clock):
    clock.advance(days=4, hours=7, minutes=59)                     # Friday 2026-03-06 17:59 Berlin
    number = open_ticket(shop)
    # one minute on Friday, then 7 h 59 min from Monday 09:00 Berlin
    assert shop.ticket(number)["first_response_due_at"] == "2026-03-09T15:59:00+00:00"
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc)
    assert shop.json("ticket", "list", "--due-within", "7.5", "--now", saturday.isoformat()) == []
    assert [t["support_hours_left"] for t in
            shop.json("ticket", "list", "--due-within", "8", "--now", saturday.isoformat())] == [7.98]
