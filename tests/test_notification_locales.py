"""One message, many recipients: each mail is in its reader's language and has its own headers."""
from __future__ import annotations

from tests.conftest import SUPPORT, mail


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def test_each_recipient_of_a_new_ticket_reads_the_ticket_in_their_language(acme):
    # Alice (en) writes with Dave (en) in CC; Carol (de) follows ACME; Sam is the agent.
    # The ticket block (type, priority) is in each reader's words, and only the
    # follower's mail carries the list headers; every mail carries the loop marker.
    acme.cli("account", "add", "dave@acme.example", "--org", "ACME", "--name", "Dave")
    acme.cli("account", "follow", "carol@acme.example")
    assert acme.send(mail("alice@acme.example", "Export fails", "Type: problem\nPriority: high\n\nRed error.",
                          cc="dave@acme.example"))[0] == 250
    [alice] = acme.delivered("alice@acme.example")
    [dave] = acme.delivered("dave@acme.example")
    [carol] = acme.delivered("carol@acme.example")
    [sam] = acme.delivered("sam@vendor.example")
    for english in (alice, dave, sam):
        assert "Problem" in text_of(english) and "High" in text_of(english)
        assert "Störung" not in text_of(english) and "Hoch" not in text_of(english)
    assert "Typ:        Störung" in text_of(carol) and "Priorität:  Hoch" in text_of(carol)
    assert "Problem" not in text_of(carol) and "High" not in text_of(carol)
    for message in (alice, dave, carol, sam):
        assert message["X-Loop"] == SUPPORT
    assert carol["List-Id"] and carol["List-Unsubscribe"]
    for message in (alice, dave, sam):
        assert message["List-Id"] is None and message["List-Unsubscribe"] is None
