"""No input crashes the listener: malformed real-world samples over SMTP, and a fuzz test of the whole path.

Invariants (issue 5, item 6): every message gets a 2xx, 4xx or 5xx reply; an accepted
message is stored byte for byte and processed (never left pending, never a crash in the
worker); the listener keeps serving; a readable ticket comes out of readable-enough mail.
"""
import smtplib
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.intake import receive
from gateway.service import build_runtime
from gateway.worker import process_inbound
from gateway.config import load_settings
from storage import admin
from storage.db import transaction
from storage.models import Inbound, MessageRecord, Ticket
from tests.conftest import EML_DIR, SUPPORT, write_config

MALFORMED = sorted(p.name for p in EML_DIR.glob("malformed_*.eml"))


def as_alice(name: str) -> bytes:
    return (EML_DIR / name).read_bytes().replace(b"alice@customer.example", b"alice@acme.example")


def stored(desk, inbound_id: int) -> Inbound:
    with transaction(desk.runtime.engine) as session:
        return session.get(Inbound, inbound_id)


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_sample_is_answered_stored_and_readable(acme, name):
    """Each real-world breakage: a definite reply, the raw bytes kept, a ticket with readable text."""
    raw = as_alice(name)
    code, text = acme.send(raw, sender="alice@acme.example")
    assert code in (250, 550), text
    record = acme.inbound()[-1]
    if code == 550:   # only an unusable From may be refused
        assert record["outcome"] == "refused" and "From header" in record["reason"]
        return
    assert stored(acme, record["id"]).raw == raw
    assert record["outcome"] == "ticket_created", record
    ticket = acme.ticket(record["ticket"])
    first = ticket["messages"][0]
    assert ticket["subject"].strip() and first["full_text"].strip()
    assert "\x00" not in first["text"] and "\ufffd" not in ticket["subject"][:3]
    assert acme.send(acme_mail(), sender="alice@acme.example")[0] == 250   # still serving


def acme_mail() -> bytes:
    return (b"From: alice@acme.example\r\nTo: support@desk.example.com\r\nSubject: Still there?\r\n"
            b"Message-ID: <still-%d@acme.example>\r\n\r\nYes.\r\n" % id(object()))


def test_specific_repairs_of_the_malformed_samples(acme):
    """What a reader of the ticket sees for the trickiest samples."""
    expectations = {
        "malformed_unknown_charset_x_unknown.eml": ("Export fails with unknown charset", "Größe"),
        "malformed_encoded_word_none_charset.eml": ("again", "charset NONE"),
        "malformed_broken_base64_text_body.eml": ("Broken base64 body", "The report page crashes"),
        "malformed_8bit_latin1_headers.eml": ("Fehler beim Export – Größe", "zu groß"),
        "malformed_absurd_date.eml": ("Absurd date", "cannot be a real date"),
    }
    for name, (subject, text) in expectations.items():
        acme.send(as_alice(name), sender="alice@acme.example")
        ticket = acme.ticket(acme.inbound()[-1]["ticket"])
        assert subject in ticket["subject"], (name, ticket["subject"])
        assert text in ticket["messages"][0]["full_text"], (name, ticket["messages"][0]["full_text"])


def test_empty_and_binary_data_get_a_definite_answer(acme):
    for raw in (b"", b"\r\n", b"\x00" * 64 + b"\r\n", bytes(range(1, 256)).replace(b"\n", b"") + b"\r\n"):
        with smtplib.SMTP("127.0.0.1", acme.port, timeout=10) as client:
            client.ehlo("client.example.net")
            assert client.mail("alice@acme.example")[0] == 250
            client.rcpt(SUPPORT)
            code, _ = client.data(raw)
            assert code // 100 in (2, 4, 5)
            assert client.noop()[0] == 250
    acme.wait_processed()
    assert all(r["outcome"] != "pending" for r in acme.inbound())


# ---- fuzz: the whole pipeline from raw bytes ---------------------------------------------------

NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Content-Type",
         "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version", "Auto-Submitted", "Precedence",
         "List-Id", "Return-Path", "Authentication-Results", "DKIM-Signature", "X-Loop", "Sender", "Reply-To"]
VALUES = st.one_of(
    st.sampled_from([
        "alice@acme.example", "Alice <alice@acme.example>", "sam@vendor.example", "mallory@evil.example",
        "<>", "support@desk.example.com", "a@b@c", '"x@y" <alice@acme.example>', "alice@acme.example, b@x.example",
        "multipart/mixed; boundary=B", "multipart/report; report-type=delivery-status; boundary=B",
        "message/rfc822", "text/plain; charset=x-unknown", "text/html; charset=utf-7", "base64",
        "quoted-printable", "auto-replied", "bulk", "=?utf-8?b?w7w=?=", "=?NONE?Q?x?=", "=?utf-8?q?a=0D=0Ab?=",
        "Mon, 32 Jan 99999 99:99:99 +9999", "<pd.1.0123456789abcdef.aaaaaaaaaaaaaaaa@desk.example.com>",
        "mx.desk.example.com; dmarc=pass header.from=acme.example", "v=1; d=acme.example; s=s1; b=AAAA; bh=AA",
        "[#1] Export fails", "attachment; filename*=utf-8''%FF%FE", "",
    ]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
)
BODY_LINES = st.one_of(
    st.sampled_from(["--B", "--B--", "Content-Type: text/plain", "Content-Type: multipart/mixed; boundary=B",
                     "Status: 5.1.1", "Action: failed", "Final-Recipient: rfc822; alice@acme.example",
                     "Message-ID: <pd.1.0123456789abcdef.aaaaaaaaaaaaaaaa@desk.example.com>", "", ".", "..",
                     "=?utf-8?b?!!!?=", "SGVsbG8=", "AAAA*", "Type: problem", "#status solved"]),
    st.text(max_size=80),
)


@st.composite
def messages(draw) -> bytes:
    """Mail-shaped bytes, sometimes badly broken, sometimes no mail at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))
    headers = draw(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=12))
    lines = [f"{name}: {value}" for name, value in headers] + [""] + draw(st.lists(BODY_LINES, max_size=25))
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    raw = "\r\n".join(lines).encode(encoding, "replace")
    if draw(st.booleans()):
        raw = raw.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r", b"\r\n"])))
    return raw + draw(st.sampled_from([b"", b"\x00\xff\xfe", b"\r\n.\r\n", b"=\r\n"]))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The real intake, worker and database without the listener (fast enough to fuzz)."""
    folder = tmp_path_factory.mktemp("fuzz")
    runtime = build_runtime(load_settings(write_config(folder)))
    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    with transaction(runtime.engine) as session:
        admin.add_organization(session, runtime.settings, now, "ACME", "silver", "alice@acme.example")
        admin.add_agent(session, now, "sam@vendor.example")
    yield runtime, now
    runtime.engine.dispose()


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=messages(), null_sender=st.booleans())
def test_fuzz_whole_pipeline_keeps_the_invariants(pipeline, raw, null_sender):
    """intake.receive + the worker on generated bytes: a definite result, stored exactly, processed."""
    runtime, now = pipeline
    envelope_from = "" if null_sender else "alice@acme.example"
    result = receive(runtime.engine, runtime.settings, raw, envelope_from, [SUPPORT], now, "smtp",
                     resolver=lambda name, timeout=5: None)
    assert result.status in ("accepted", "duplicate", "refused")
    with transaction(runtime.engine) as session:
        row = session.get(Inbound, result.inbound_id)
        assert row is not None
        if result.status == "accepted":
            assert row.raw == raw
    process_inbound(runtime.engine, runtime.deps, result.inbound_id, now)
    with transaction(runtime.engine) as session:
        row = session.get(Inbound, result.inbound_id)
        assert row.outcome != "pending"
        assert row.reason_code != "processing-failed", row.error
        if row.ticket_number is not None:
            assert session.get(Ticket, row.ticket_number) is not None
            texts = session.query(MessageRecord).filter(MessageRecord.inbound_id == row.id).all()
            assert all("\x00" not in m.text + m.full_text + m.subject for m in texts)   # PostgreSQL-safe


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=messages())
def test_fuzz_over_smtp_always_answers_and_keeps_serving(acme, raw):
    """The listener answers every generated message with 2xx, 4xx or 5xx and stays up."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")   # SMTP needs CRLF lines
    with smtplib.SMTP("127.0.0.1", acme.port, timeout=10) as client:
        client.ehlo("client.example.net")
        assert client.mail("alice@acme.example")[0] == 250
        client.rcpt(SUPPORT)
        try:
            code, _ = client.data(data)
        except smtplib.SMTPDataError as exc:
            code = exc.smtp_code
        assert code // 100 in (2, 4, 5)
        assert client.noop()[0] == 250


def test_a_failing_intake_check_quarantines_instead_of_crashing(acme, monkeypatch):
    """Fault injection: a check that raises must not cost the message nor loop on 451."""
    import gateway.limits

    def broken(*args, **kwargs):
        raise RuntimeError("limits check exploded")
    monkeypatch.setattr(gateway.limits, "violations", broken)
    raw = acme_mail()
    code, _ = acme.send(raw, sender="alice@acme.example")
    assert code == 250
    record = acme.inbound()[-1]
    assert (record["outcome"], record["reason_code"]) == ("quarantined", "check-failed")
    assert stored(acme, record["id"]).raw == raw
    monkeypatch.undo()
    assert acme.json("inbound", "release", str(record["id"]))["outcome"] == "ticket_created"
