"""Threading evidence in order, and evidence of another organisation's ticket never followed."""
from gateway.threader import match_thread
from gateway.tokens import Signer

SUPPORT = "support@desk.example.com"
SIGNER = Signer(b"test-secret")


class Lookup:
    def __init__(self, tickets: dict[int, str], ids: dict[str, int], org: str):
        self.tickets, self.ids, self.org = tickets, ids, org

    def ticket_for_token(self, address):
        return SIGNER.ticket_from_address(address, SUPPORT)

    def tickets_for_message_ids(self, message_ids):
        return {m: self.ids[m] for m in message_ids if m in self.ids}

    def ticket_exists(self, number):
        return number in self.tickets

    def may_write(self, number):
        return self.tickets.get(number) == self.org


TICKETS = {1: "acme", 2: "acme", 3: "globex"}
IDS = {"<a@x>": 1, "<b@x>": 2, "<g@x>": 3}


def test_token_wins_over_headers_and_subject():
    m = match_thread([SIGNER.reply_address(SUPPORT, 2)], ["<a@x>"], [], "[#1] x", Lookup(TICKETS, IDS, "acme"))
    assert (m.ticket_number, m.via) == (2, "token")


def test_in_reply_to_then_references_newest_first():
    lookup = Lookup(TICKETS, IDS, "acme")
    assert match_thread([SUPPORT], ["<b@x>"], ["<a@x>"], "", lookup).via == "in-reply-to"
    m = match_thread([SUPPORT], [], ["<a@x>", "<b@x>", "<unknown@x>"], "", lookup)
    assert (m.ticket_number, m.via) == (2, "references")


def test_subject_tag_is_last_resort():
    m = match_thread([SUPPORT], ["<unknown@x>"], [], "AW: [#1] Export", Lookup(TICKETS, IDS, "acme"))
    assert (m.ticket_number, m.via) == (1, "subject-tag")
    assert "subject tag" in m.reason


def test_forged_token_is_not_followed():
    good = SIGNER.reply_address(SUPPORT, 1)
    local, _, domain = good.partition("@")
    forged = [local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain,   # one character changed
              "support+2-" + local.split("-")[1] + "@" + domain,                  # signature of #1 on #2
              local[:-4] + "@" + domain]                                          # truncated signature
    for address in forged:
        assert match_thread([address], [], [], "", Lookup(TICKETS, IDS, "acme")).ticket_number is None


def test_evidence_of_another_organisation_is_skipped_and_reported():
    lookup = Lookup(TICKETS, IDS, "acme")
    for args in (([SIGNER.reply_address(SUPPORT, 3)], [], [], ""), ([SUPPORT], ["<g@x>"], [], ""),
                 ([SUPPORT], [], [], "Re: [#3] hello")):
        m = match_thread(*args, lookup)
        assert m.ticket_number is None
        assert m.skipped and "#3" in m.skipped[0]


def test_foreign_evidence_does_not_hide_own_evidence_further_down():
    m = match_thread([SUPPORT], ["<g@x>"], [], "Re: [#1] hello", Lookup(TICKETS, IDS, "acme"))
    assert (m.ticket_number, m.via) == (1, "subject-tag")


def test_agent_may_write_anywhere():
    class AgentLookup(Lookup):
        def may_write(self, number):
            return number in self.tickets
    m = match_thread([SUPPORT], ["<g@x>"], [], "", AgentLookup(TICKETS, IDS, "vendor"))
    assert m.ticket_number == 3


def test_no_evidence_is_no_match():
    m = match_thread([SUPPORT], [], [], "Hello", Lookup(TICKETS, IDS, "acme"))
    assert m.ticket_number is None and m.via == "none" and m.reason == "no thread reference"
