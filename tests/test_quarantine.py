"""Quarantine administration from the command line: list, show, raw download, release, requeue."""
import pytest

from tests.conftest import _running_desk, mail


@pytest.fixture
def held(tmp_path, clock):
    """A gateway that quarantines anything nested deeper than 3 MIME levels."""
    gen = _running_desk(tmp_path, clock, '[limits]\naction = "quarantine"\nmax_mime_depth = 3\n')
    desk = next(gen)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    yield desk
    gen.close()


def deep_mail() -> bytes:
    msg = mail("alice@acme.example", "Nested report", "See the nested parts.")
    inner = msg
    for _ in range(4):
        outer = mail("alice@acme.example", "Nested report", "Level.")
        outer.add_attachment(inner)
        inner = outer
    return inner.as_bytes(policy=inner.policy.clone(linesep="\r\n"))


def test_quarantined_message_is_listed_shown_and_downloadable(held, tmp_path):
    raw = deep_mail()
    assert held.send(raw, sender="alice@acme.example")[0] == 250
    listed = held.json("inbound", "list", "--outcome", "quarantined")
    assert [(r["reason_code"], r["from"]) for r in listed] == [("over-limit", "alice@acme.example")]
    shown = held.json("inbound", "show", str(listed[0]["id"]))
    assert shown["raw_available"] is True and "nested" in shown["reason"]
    assert ["Subject", "Nested report"] in shown["headers"]
    text = held.cli("inbound", "show", str(listed[0]["id"]))
    assert "[over-limit]" in text and "Subject: Nested report" in text
    target = tmp_path / "held.eml"
    held.cli("inbound", "show", str(listed[0]["id"]), "--raw", "--output", str(target))
    assert target.read_bytes() == raw                                   # exactly as received


def test_release_processes_despite_the_hold_and_requeue_holds_again(held):
    held.send(deep_mail(), sender="alice@acme.example")
    record = held.inbound()[-1]
    assert held.json("inbound", "requeue", str(record["id"]))["outcome"] == "quarantined"
    released = held.json("inbound", "release", str(record["id"]))
    assert released["outcome"] == "ticket_created" and released["released_at"]
    assert len(held.delivered("alice@acme.example")) == 1


def test_release_of_a_message_that_is_not_held_is_one_clear_line(held):
    held.send(mail("alice@acme.example", "Fine", "An ordinary mail."))
    record = held.inbound()[-1]
    held.cli("inbound", "release", str(record["id"]), expect=1)
    assert held.last_stderr.strip() == f"postdesk: inbound {record['id']} is ticket_created, not quarantined"
    held.cli("inbound", "show", "999", expect=1)
    assert held.last_stderr.strip() == "postdesk: no inbound message with id 999"


def test_refused_message_has_no_raw_to_download(held):
    held.send(mail("mallory@evil.example", "Hi", "Let me in"))
    record = held.inbound()[-1]
    assert held.json("inbound", "show", str(record["id"]))["raw_available"] is False
    held.cli("inbound", "show", str(record["id"]), "--raw", expect=1)
    assert "only its header summary was kept" in held.last_stderr
