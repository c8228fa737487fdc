"""Sender authentication: forged From lines of known people are held or refused, never threaded.

DKIM keys are generated per test session and published through an in-memory resolver
injected into the gateway, so no test touches the network. Mail is signed with dkimpy
exactly as a customer's server would sign it.
"""
import base64
import smtplib
import threading
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import AuthConfig
from gateway.parsing import parse_headers
from gateway.sender_auth import AuthResult, aligned, authenticate
from tests.conftest import EML_DIR, _running_desk, mail


class Zone:
    """DNS TXT records in memory; counts lookups; can be made to time out."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.lookups = 0
        self.down = False
        self.delay = 0.0   # seconds each answer takes

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.lookups += 1
        time.sleep(self.delay)
        if self.down:
            raise TimeoutError("DNS timed out")
        return self.records.get(name)


@pytest.fixture(scope="module")
def keys():
    """One RSA key per signing domain, with its DKIM TXT record."""
    out = {}
    for domain in ("acme.example", "vendor.example", "evil.example"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out[domain] = (pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der))
    return out


@pytest.fixture
def zone(keys) -> Zone:
    z = Zone()
    for domain, (_, txt) in keys.items():
        z.records[f"s1._domainkey.{domain}.".encode()] = txt
    return z


def signed(keys, msg, domain: str) -> bytes:
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")) if not isinstance(msg, bytes) else msg
    signature = dkim.sign(raw, b"s1", domain.encode(), keys[domain][0],
                          include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
    return signature + raw


def start(tmp_path, clock, zone, extra: str = ""):
    gen = _running_desk(tmp_path, clock, extra, resolver=zone)
    desk = next(gen)
    desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
    desk.cli("org", "add", "Globex", "--package", "bronze", "--main-contact", "bob@globex.example")
    desk.cli("agent", "add", "sam@vendor.example", "--name", "Sam Agent")
    return desk, gen


@pytest.fixture
def guarded(tmp_path, clock, zone):
    """The gateway with the default [auth] policy (quarantine) and the in-memory DNS."""
    desk, gen = start(tmp_path, clock, zone)
    yield desk
    gen.close()


@pytest.fixture
def strict(tmp_path, clock, zone):
    """[auth] policy = refuse, with a trusted border MTA."""
    desk, gen = start(tmp_path, clock, zone, '[auth]\npolicy = "refuse"\n'
                      'trusted_authserv_ids = ["mx.desk.example.com"]\n')
    yield desk
    gen.close()


def headers_of(raw: bytes):
    h = parse_headers(raw)
    return h.headers, h.from_addr


# ---- the verdict, table-driven -----------------------------------------------------------------

@pytest.mark.parametrize("case, expected", [
    ("valid signature", "pass"),
    ("body changed after signing", "fail"),
    ("signed by an unrelated domain", "none"),
    ("no signature", "none"),
    ("no signature, domain always signs", "fail"),
    ("key lookup times out", "none"),
    ("key lookup times out, domain always signs", "temperror"),
    ("no key published", "none"),
    ("trusted A-R dmarc=fail", "fail"),
    ("trusted A-R dmarc=pass, no signature", "pass"),
    ("untrusted A-R dmarc=pass, body changed", "fail"),
    ("forged trusted-id A-R below the border's", "fail"),
    ("another hop's A-R dmarc=pass above the border's dmarc=fail", "fail"),
    ("trusted A-R after a comment, in capitals, dmarc=fail", "fail"),
])
def test_authenticate_when(keys, zone, case, expected):
    """One row per way a From domain does or does not vouch for a message."""
    msg = mail("alice@acme.example", "Invoices", "Please send me the invoices.")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    config = AuthConfig()
    if case in ("valid signature", "body changed after signing", "untrusted A-R dmarc=pass, body changed"):
        raw = signed(keys, raw, "acme.example")
    if "body changed" in case:
        raw = raw.replace(b"the invoices", b"all invoices of every customer")
    if case == "signed by an unrelated domain":
        raw = signed(keys, raw, "evil.example")
    if case == "no signature, domain always signs":
        config = AuthConfig(dkim_required_domains=("acme.example",))
    if case.startswith("key lookup times out"):
        raw, zone.down = signed(keys, raw, "acme.example"), True
        if "always signs" in case:
            config = AuthConfig(dkim_required_domains=("acme.example",))
    if case == "no key published":
        raw = signed(keys, raw, "acme.example")
        del zone.records[b"s1._domainkey.acme.example."]
    border = "mx.desk.example.com"
    if case.startswith("trusted A-R"):
        verdict = "fail" if "fail" in case else "pass"
        raw = f"Authentication-Results: {border}; dmarc={verdict} header.from=acme.example\r\n".encode() + raw
        config = AuthConfig(trusted_authserv_ids=(border,))
    if case.startswith("untrusted A-R"):
        raw = b"Authentication-Results: relay.evil.example; dmarc=pass header.from=acme.example\r\n" + raw
        config = AuthConfig(trusted_authserv_ids=(border,))
    if case.startswith("forged trusted-id"):
        raw = (f"Authentication-Results: {border}; dmarc=fail header.from=acme.example\r\n"
               f"Authentication-Results: {border}; dmarc=pass header.from=acme.example\r\n").encode() + raw
        config = AuthConfig(trusted_authserv_ids=(border,))
    if case.startswith("another hop's"):
        raw = (b"Authentication-Results: relay.evil.example; dmarc=pass header.from=acme.example\r\n"
               + f"Authentication-Results: {border}; dmarc=fail header.from=acme.example\r\n".encode() + raw)
        config = AuthConfig(trusted_authserv_ids=(border,))
    if case.startswith("trusted A-R after a comment"):
        raw = (f"Authentication-Results: (checked at the border) {border.upper()};\r\n"
               f"\tdmarc=fail header.from=acme.example\r\n").encode() + raw
        config = AuthConfig(trusted_authserv_ids=(border,))
    headers, from_addr = headers_of(raw)
    assert authenticate(raw, headers, from_addr, config, zone).verdict == expected


def test_alignment_is_relaxed_but_never_crosses_domains():
    assert aligned("acme.example", "eu.acme.example") and aligned("eu.acme.example", "acme.example")
    assert not aligned("acme.example.evil.example", "acme.example") and not aligned("", "acme.example")


def test_verdict_survives_storage():
    result = AuthResult("fail", "dkim", "acme.example", "the DKIM signature of acme.example does not verify")
    assert AuthResult.from_json(result.to_json()) == result
    assert AuthResult.from_json("") is None and AuthResult.from_json("{broken") is None


# ---- over SMTP ---------------------------------------------------------------------------------

def test_forged_from_of_registered_account_with_failing_dkim_is_quarantined(guarded, keys):
    """The attacker re-uses a signed mail of Alice's with a new body: held, never a ticket, nothing sent."""
    raw = signed(keys, mail("alice@acme.example", "Invoices", "Please send me the invoices."), "acme.example")
    forged = raw.replace(b"Please send me the invoices.", b"Add mallory@evil.example as CC.")
    code, text = guarded.send(forged, sender="alice@acme.example")
    assert code == 250
    record = guarded.inbound()[-1]
    assert (record["outcome"], record["reason_code"]) == ("quarantined", "sender-dkim-failed")
    assert "does not verify" in record["reason"]
    assert guarded.json("ticket", "list") == [] and guarded.delivered() == []
    shown = guarded.json("inbound", "show", str(record["id"]))
    assert shown["authentication"]["verdict"] == "fail" and ["Subject", "Invoices"] in shown["headers"]


def test_genuine_signed_mail_of_a_registered_account_opens_its_ticket(guarded, keys):
    raw = signed(keys, mail("alice@acme.example", "Invoices", "Please send me the invoices."), "acme.example")
    code, _ = guarded.send(raw, sender="alice@acme.example")
    assert code == 250 and guarded.inbound()[-1]["outcome"] == "ticket_created"


def test_forged_from_is_refused_in_the_dialogue_when_policy_says_refuse(strict, keys):
    """policy = refuse: 550 with the RFC 7372 code and a reason the sender's server passes on."""
    raw = signed(keys, mail("alice@acme.example", "Invoices", "Send me the invoices."), "acme.example")
    code, text = strict.send(raw.replace(b"Send me", b"Send mallory"), sender="alice@acme.example")
    assert code == 550 and text.startswith("5.7.22") and "could not be authenticated" in text
    assert strict.inbound()[-1]["reason_code"] == "sender-dkim-failed"
    assert strict.json("ticket", "list") == [] and strict.delivered() == []


def test_border_mta_dmarc_fail_is_refused_with_5_7_26(strict):
    raw = mail("alice@acme.example", "Invoices", "Send me the invoices.").as_bytes()
    raw = b"Authentication-Results: mx.desk.example.com; dmarc=fail (p=reject) header.from=acme.example\r\n" + raw
    code, text = strict.send(raw, sender="alice@acme.example")
    assert code == 550 and text.startswith("5.7.26") and "dmarc=fail" in text


def test_forged_authentication_results_from_an_untrusted_host_is_ignored(strict, keys, zone):
    """An A-R field claiming dmarc=pass from anyone but our border MTA proves nothing; DKIM decides."""
    raw = signed(keys, mail("alice@acme.example", "Invoices", "Send me the invoices."), "acme.example")
    raw = raw.replace(b"Send me", b"Send mallory")
    raw = b"Authentication-Results: mail.evil.example; dkim=pass header.d=acme.example; " \
          b"dmarc=pass header.from=acme.example\r\n" + raw
    code, text = strict.send(raw, sender="alice@acme.example")
    assert code == 550 and "does not verify" in text
    assert zone.lookups >= 1                   # our own verification ran
    assert strict.json("ticket", "list") == []


def test_trusted_border_pass_lets_unsigned_mail_through(strict, zone):
    raw = mail("alice@acme.example", "Export", "The export fails.").as_bytes()
    raw = b"Authentication-Results: mx.desk.example.com; spf=pass smtp.mailfrom=acme.example; " \
          b"dmarc=pass header.from=acme.example\r\n" + raw
    code, _ = strict.send(raw, sender="alice@acme.example")
    assert code == 250 and strict.inbound()[-1]["outcome"] == "ticket_created"
    assert zone.lookups == 0                   # the trusted result is used, no DNS


def test_forged_agent_mail_is_never_threaded(guarded, keys):
    """A forged reply 'from the agent' must not reach the customer as support's answer."""
    guarded.send(mail("alice@acme.example", "Export", "The export fails."))
    raw = signed(keys, mail("sam@vendor.example", "Re: [#1] Export", "#status solved\nAll fine."), "vendor.example")
    code, _ = guarded.send(raw.replace(b"All fine.", b"Send your password to mallory@evil.example."),
                           sender="sam@vendor.example")
    assert code == 250
    assert guarded.inbound()[-1]["outcome"] == "quarantined"
    ticket = guarded.ticket(1)
    assert ticket["status"] == "open" and all(m["author"] != "sam@vendor.example" for m in ticket["messages"])
    assert not any("mallory" in m.get_body(("plain",)).get_content() for m in guarded.delivered())


def test_dns_timeout_quarantines_mail_of_a_domain_that_always_signs(tmp_path, clock, keys, zone):
    desk, gen = start(tmp_path, clock, zone, '[auth]\ndkim_required_domains = ["acme.example"]\n')
    try:
        zone.down = True
        raw = signed(keys, mail("alice@acme.example", "Export", "The export fails."), "acme.example")
        assert desk.send(raw, sender="alice@acme.example")[0] == 250
        assert desk.inbound()[-1]["reason_code"] == "sender-auth-temperror"
    finally:
        gen.close()


def test_signed_mail_whose_key_cannot_be_looked_up_is_treated_as_unsigned(guarded, keys, zone):
    """Without DNS (or without a published key) a signature proves nothing either way: the ticket opens."""
    zone.down = True
    raw = signed(keys, mail("alice@acme.example", "Export", "The export fails."), "acme.example")
    assert guarded.send(raw, sender="alice@acme.example")[0] == 250
    assert guarded.inbound()[-1]["outcome"] == "ticket_created"


def test_a_slow_dns_answer_holds_up_only_its_own_delivery(guarded, keys, zone):
    """DKIM verification waits for DNS in a thread: other senders are answered meanwhile."""
    zone.delay = 3.0
    raw = signed(keys, mail("alice@acme.example", "Export", "The export fails."), "acme.example")
    answers = {}

    def deliver(name: str, sender: str, message: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", guarded.port, timeout=20) as client:
            client.sendmail(sender, ["support@desk.example.com"], message)
        answers[name] = time.monotonic()   # the 250 after DATA, not the processing

    waiting = threading.Thread(target=deliver, args=("signed", "alice@acme.example", raw))
    waiting.start()
    time.sleep(0.3)   # the signed message is waiting for its key now
    deliver("plain", "bob@globex.example", mail("bob@globex.example", "Printing", "Printing fails.").as_bytes())
    waiting.join(20)
    assert answers["plain"] < answers["signed"] - 1.0
    guarded.wait_processed()
    assert [r["outcome"] for r in guarded.inbound()] == ["ticket_created", "ticket_created"]


def test_unknown_senders_cost_no_dns_lookup(guarded, keys, zone):
    raw = signed(keys, mail("mallory@evil.example", "Hi", "x"), "evil.example")
    code, _ = guarded.send(raw, sender="mallory@evil.example")
    assert code == 550 and zone.lookups == 0


# ---- the Ticket Trick --------------------------------------------------------------------------

@pytest.mark.parametrize("subject", [None, "[#1] Confirm your email address", "Re: [#1] Export fails"])
def test_signup_verification_mail_opens_nothing_and_reveals_nothing(guarded, subject):
    """A third party's verification mail to the support address: no ticket, no mail, code never echoed."""
    guarded.send(mail("alice@acme.example", "Export fails", "The export fails."))
    guarded.flush()
    before = {m["Message-ID"] for m in guarded.delivered()}
    raw = (EML_DIR / "signup_verification_workspace_provider.eml").read_bytes()
    if subject:   # the attacker names the workspace after a ticket number
        raw = raw.replace(b"Subject: Confirm your email address to join Acme's workspace",
                          f"Subject: {subject}".encode())
    code, _ = guarded.send(raw, sender="bounces+82914-a7c1-support=desk.example.com@em.workspace-provider.example")
    assert code in (250, 550)
    record = guarded.inbound()[-1]
    assert record["outcome"] in ("ignored", "refused") and record["ticket"] is None
    assert len(guarded.json("ticket", "list")) == 1
    assert all(m["author"] != "no-reply@workspace-provider.example" for m in guarded.ticket(1)["messages"])
    new = [m for m in guarded.delivered() if m["Message-ID"] not in before]
    assert new == []
    outbox = b"".join(bytes(m) for m in guarded.delivered())
    assert b"VERIFY-CODE-493-817" not in outbox and b"f1e2d3c4b5a6978877665544" not in outbox


# -- the Authentication-Results parser: authres's grammar, patterns compiled once ----------------

AR_FIELDS = [
    "mx.desk.example.com; dkim=pass (2048-bit key) header.d=acme.example header.s=sel header.b=AbCd1234;"
    " dmarc=pass (p=quarantine dis=none) header.from=acme.example; spf=pass smtp.mailfrom=acme.example",
    "mx.google.com; dkim=pass header.i=@acme.example header.s=20230601 header.b=\"Xy/+=\";"
    " spf=pass (google.com: domain of a@acme.example designates 192.0.2.1 as permitted sender)"
    " smtp.mailfrom=a@acme.example; dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=acme.example",
    "example.org 1; none",
    "(a (nested) comment) example.com; auth=pass (cram-md5) smtp.auth=sender@example.com; spf=pass"
    " smtp.mailfrom=example.com",
    "example.com; sender-id=fail header.from=example.com; dkim=pass (good signature) header.d=example.com",
    "example.com; dkim=pass reason=\"good signature\" header.i=@mail-router.example.net;"
    " dkim=fail reason=\"bad signature\" header.i=@newyork.example.com",
    "mx.example; dmarc=fail header.from=\"quoted.example\"",
    "mx.example; dkim=pass header.d=acme.example;",            # trailing semicolon: not the grammar
    "mx.example; dkim=",                                        # cut off
    "mx.example; dkim=pass (unclosed comment header.d=acme.example",
    "",
]


def _shape(parse, value):
    """What a parse gives, comparably: the results' fields, or the error it raised."""
    try:
        header = parse(value)
    except Exception as exc:  # noqa: BLE001 -- errors must match too
        return ("error", type(exc).__name__, str(exc))
    return (header.authserv_id, header.version, [
        (str(r.method), str(r.result), r.reason, [(p.type, p.name, str(p.value)) for p in r.properties or []])
        for r in header.results])


@pytest.mark.parametrize("value", AR_FIELDS + [f[:cut] for f in AR_FIELDS[:2] for cut in range(0, 260, 7)])
def test_results_parser_reads_every_field_as_stock_authres_does(value):
    import authres

    from gateway.sender_auth import _ResultsParser
    stock = _shape(authres.AuthenticationResultsHeader.parse_value, value)
    ours = _shape(lambda v: _ResultsParser.parse_value(authres.core_features(), v), value)
    assert ours == stock


@pytest.mark.parametrize("fields, config, asks", [
    ("DKIM-Signature: v=1; d=acme.example; s=s1; b=x\r\n", {}, True),
    ("", {}, False),                                                            # nothing to verify
    ("DKIM-Signature: v=1; d=acme.example; s=s1; b=x\r\n", {"verify_dkim": False}, False),
    ("DKIM-Signature: v=1; d=acme.example; s=s1; b=x\r\n", {"policy": "off"}, False),
    ("Authentication-Results: mx.desk.example.com; dkim=pass header.d=acme.example\r\n"
     "DKIM-Signature: v=1; d=acme.example; s=s1; b=x\r\n", {"trusted_authserv_ids": ("mx.desk.example.com",)}, False),
    ("Authentication-Results: mx.desk.example.com; dkim=pass header.d=acme.example\r\n"   # not ours to trust
     "DKIM-Signature: v=1; d=acme.example; s=s1; b=x\r\n", {}, True),
    ("Authentication-Results: mx.desk.example.com; dkim=(broken\r\n"                       # trusted, unreadable
     "DKIM-Signature: v=1; d=acme.example; s=s1; b=x\r\n", {"trusted_authserv_ids": ("mx.desk.example.com",)}, True),
])
def test_whether_judging_may_wait_for_dns(fields, config, asks):
    from gateway.sender_auth import may_ask_dns
    raw = fields.encode() + mail("alice@acme.example", "Export", "x").as_bytes()
    assert may_ask_dns(parse_headers(raw).headers, AuthConfig(**config)) is asks
