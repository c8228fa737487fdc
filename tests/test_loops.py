"""Loop breaking over SMTP: our own mail coming back, reply caps, rate limits, and real ping-pong.

The auto-responders here are simulated the naive way real ones misbehave: they answer
every mail they get, with no Auto-Submitted header, so nothing but the gateway's own
limits can end the exchange.
"""
import itertools

import pytest

from tests.conftest import SUPPORT, _running_desk, mail

_ids = itertools.count(1)


def setup_people(desk):
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    desk.cli("agent", "add", "sam@vendor.example", "--name", "Sam Agent")
    return desk


@pytest.fixture
def desk_with(tmp_path, clock):
    """Start a gateway with some [loops] keys (none: the defaults)."""
    running = []

    def start(loops: str = ""):
        running.append(_running_desk(tmp_path, clock, f"[loops]\n{loops}\n" if loops else ""))
        return setup_people(next(running[-1]))
    yield start
    for gen in running:
        gen.close()


@pytest.fixture
def looped(desk_with):
    return desk_with()


def new_mails(desk, to: str, seen: set) -> list:
    fresh = [m for m in desk.delivered(to) if m["Message-ID"] not in seen]
    seen.update(m["Message-ID"] for m in fresh)
    return fresh


def responder_answer(original, sender: str, threading: bool):
    """What a naive vacation responder sends back: no Auto-Submitted, no Precedence."""
    if threading:
        return mail(sender, f"Re: {original['Subject']}", "I am out of the office until Monday.",
                    in_reply_to=original["Message-ID"], references=original["Message-ID"])
    return mail(sender, "Thank you for your message", "Thank you for your message. We will get back to you.",
                message_id=f"<auto-{next(_ids)}@acme.example>")


# ---- our own mail ------------------------------------------------------------------------------

def test_our_own_notification_coming_back_is_ignored(looped):
    """A forward-all rule sends our acknowledgment back to the support address: no ticket, no answer."""
    looped.send(mail("alice@acme.example", "Export fails", "The export fails."))
    ack = looped.delivered("alice@acme.example")[0]
    sent_before = len(looped.delivered())
    code, _ = looped.send(ack.as_bytes(policy=ack.policy.clone(linesep="\r\n")), sender="alice@acme.example")
    assert code == 250
    record = looped.inbound()[-1]
    assert (record["outcome"], record["reason_code"]) == ("ignored", "own-mail")
    assert len(looped.json("ticket", "list")) == 1 and len(looped.delivered()) == sent_before
    assert ack["X-Loop"] == SUPPORT and ack["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize("headers, sender", [
    ({"X-Loop": SUPPORT}, "alice@acme.example"),
    ({}, SUPPORT),
    ({}, "support+7-abcdefghijklmnop@desk.example.com"),
])
def test_mail_carrying_our_loop_marks_is_ignored_not_refused(looped, headers, sender):
    code, _ = looped.send(mail(sender, "Whatever", "Copied around by a list.", headers=headers),
                          sender="list-bounces@lists.example")
    assert code == 250                                   # refusing would bounce to us again
    assert looped.inbound()[-1]["reason_code"] == "own-mail"
    assert looped.json("ticket", "list") == [] and looped.delivered() == []


# ---- caps and rate limits ----------------------------------------------------------------------

def test_replies_past_the_cap_are_kept_quietly(desk_with):
    """The third mail from Alice within the hour lands as an internal note; no status change, no notice."""
    looped = desk_with("max_replies_per_ticket_per_address = 2")
    looped.send(mail("alice@acme.example", "Export fails", "The export fails."))
    looped.send(mail("sam@vendor.example", "Re: [#1] Export fails", "Which browser?"))
    looped.send(mail("alice@acme.example", "Re: [#1] Export fails", "Firefox."))
    looped.send(mail("sam@vendor.example", "Re: [#1] Export fails", "Which version?"))
    to_sam = len(looped.delivered("sam@vendor.example"))
    looped.send(mail("alice@acme.example", "Re: [#1] Export fails", "Version 128."))
    record = looped.inbound()[-1]
    assert (record["outcome"], record["reason_code"], record["ticket"]) == ("reply", "reply-cap", 1)
    ticket = looped.ticket(1)
    assert ticket["status"] == "awaiting_reply"
    last = [m for m in ticket["messages"] if m["direction"] == "inbound"][-1]
    assert last["internal"] is True and "Version 128" in last["text"]
    assert any(e["kind"] == "kept-quietly" for e in ticket["events"])
    assert len(looped.delivered("sam@vendor.example")) == to_sam


def test_automatic_answers_to_one_address_are_rate_limited(desk_with):
    """Three new tickets in a minute: two acknowledgments, the third is noted, not sent; agents still hear."""
    looped = desk_with("max_auto_replies_per_address = 2")
    for n in range(3):
        looped.send(mail("alice@acme.example", f"Question {n}", f"Question number {n}."))
    assert len(looped.json("ticket", "list")) == 3
    assert len(looped.delivered("alice@acme.example")) == 2
    assert len(looped.delivered("sam@vendor.example")) == 3
    events = [e for e in looped.ticket(3)["events"] if e["kind"] == "notification-suppressed"]
    assert events and "loop protection" in events[0]["detail"]
    looped.send(mail("sam@vendor.example", "Re: [#3] Question 2", "Here is the answer."))
    assert len(looped.delivered("alice@acme.example")) == 3      # what a person writes is never limited


def test_automatic_answers_about_one_ticket_are_rate_limited(desk_with):
    looped = desk_with("max_auto_replies_per_ticket = 1")
    looped.send(mail("alice@acme.example", "Export fails", "The export fails."))      # ack 1
    for _ in range(2):
        looped.send(mail("sam@vendor.example", "Re: [#1] Export fails", "#status solved\nFixed."))
        looped.send(mail("alice@acme.example", "Re: [#1] Export fails", "Still broken."))   # reopened
    reopened = [m for m in looped.delivered("alice@acme.example") if m["Auto-Submitted"] != "no"]
    assert len(reopened) == 1                                      # only the first automatic mail
    assert any(e["kind"] == "notification-suppressed" for e in looped.ticket(1)["events"])


# ---- two-way loops -----------------------------------------------------------------------------

def run_exchange(desk, threading: bool, rounds: int = 40) -> int:
    """Alice's mailbox answers everything it gets; returns how many mails it answered."""
    seen: set = set()
    desk.send(mail("alice@acme.example", "Export fails", "The export fails."))
    answered = 0
    for _ in range(rounds):
        fresh = new_mails(desk, "alice@acme.example", seen)
        if not fresh:
            return answered
        for original in fresh:
            desk.send(responder_answer(original, "alice@acme.example", threading))
            answered += 1
    raise AssertionError(f"the loop was still running after {rounds} rounds")


def test_loop_with_an_autoresponder_that_drops_threading_stops(looped):
    """Every answer opens a new ticket and would be acknowledged: the per-address limit (5) ends it."""
    answered = run_exchange(looped, threading=False)
    assert answered <= looped.settings.loops.max_auto_replies_per_address
    assert len(looped.json("ticket", "list")) <= answered + 1


def test_loop_with_an_autoresponder_that_threads_stops_at_once(looped):
    answered = run_exchange(looped, threading=True)
    assert answered == 1
    assert len(looped.json("ticket", "list")) == 1


def test_loop_between_two_autoresponders_through_the_ticket_stops(looped):
    """Sam's and Alice's responders answer each other through ticket #1: the reply cap ends it."""
    seen_alice: set = set()
    seen_sam: set = set()
    looped.send(mail("alice@acme.example", "Export fails", "The export fails."))
    new_mails(looped, "alice@acme.example", seen_alice)              # the acknowledgment: not answered
    exchanges = 0
    for _ in range(40):
        to_sam = new_mails(looped, "sam@vendor.example", seen_sam)
        to_alice = new_mails(looped, "alice@acme.example", seen_alice)
        if not (to_sam or to_alice):
            break
        for original in to_sam:
            looped.send(responder_answer(original, "sam@vendor.example", threading=True))
        for original in to_alice:
            looped.send(responder_answer(original, "alice@acme.example", threading=True))
        exchanges += len(to_sam) + len(to_alice)
    else:
        raise AssertionError("the two responders were still talking after 40 rounds")
    assert exchanges <= 2 * looped.settings.loops.max_replies_per_ticket_per_address + 2
    assert len(looped.json("ticket", "list")) == 1
