"""Limits on hostile MIME: refused with a reason, or accepted with the offending parts dropped and noted.

Hostile messages are generated here (nesting, part floods, attachment floods, header
bombs) and sent over SMTP; the pure measuring and trimming are checked directly too.
"""
import smtplib
import time

import pytest

from gateway.config import LimitsConfig
from gateway.limits import measure, trimmed, violations
from gateway.parsing import parse_message
from tests.conftest import _running_desk

HEAD = (b"From: Alice <alice@acme.example>\r\nTo: support@desk.example.com\r\nSubject: Hostile\r\n"
        b"Message-ID: <hostile-%d@acme.example>\r\nMIME-Version: 1.0\r\n")


def nested(depth: int, n: int = 1) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nThe innermost text.\r\n"
    for level in range(depth):
        b = b"b%d" % level
        body = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n" + body
                + b"\r\n--" + b + b"--\r\n")
    return HEAD % n + body


def flood(parts: int, attachment: bool = False, size: int = 10, n: int = 1) -> bytes:
    disposition = b'Content-Disposition: attachment; filename="f%d.bin"\r\n' if attachment else b""
    ctype = b"application/octet-stream" if attachment else b"text/plain"
    content = b"\r\n".join([b"x" * 76] * (size // 76) + [b"x" * (size % 76)])
    entities = b"".join(b"--B\r\nContent-Type: " + ctype + b"\r\n" + (disposition % i if attachment else b"")
                        + b"\r\n" + content + b"\r\n" for i in range(parts))
    return (HEAD % n + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
            + b"--B\r\nContent-Type: text/plain\r\n\r\nSee the attachments.\r\n" + entities + b"--B--\r\n")


def header_bomb(n: int = 1, lines: int = 12_000) -> bytes:
    return (HEAD % n).replace(b"MIME-Version", b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 20)
                                                         for i in range(lines)) + b"MIME-Version") \
        + b"\r\nBody.\r\n"


SMALL = LimitsConfig(max_mime_parts=50, max_mime_depth=5, max_attachments=3, max_attachment_bytes=1000,
                     max_header_bytes=20_000)


# ---- pure --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, limit", [
    (nested(8), "max_mime_depth"),
    (nested(2500), "max_mime_depth"),            # deeper than the stdlib parser can follow
    (flood(60), "max_mime_parts"),
    (flood(5, attachment=True), "max_attachments"),
    (flood(1, attachment=True, size=5000), "max_attachment_bytes"),
    (header_bomb(lines=2000), "max_header_bytes"),
])
def test_violation_when_message_is_past_one_limit(raw, limit):
    assert [v.limit for v in violations(raw, SMALL)] == [limit]


def test_ordinary_mail_is_measured_without_parsing():
    shape = measure(nested(2), SMALL)
    assert violations(nested(2), SMALL) == [] and shape.depth <= SMALL.max_mime_depth


def test_trimmed_drops_the_offending_parts_and_says_which():
    raw = flood(5, attachment=True) + b""
    kept, notes = trimmed(raw, SMALL)
    names = [a.filename for a in parse_message(kept).attachments]
    assert names == ["f0.bin", "f1.bin", "f2.bin"] and len(notes) == 2
    assert all("more than 3 attachments" in n for n in notes)
    kept, notes = trimmed(flood(1, attachment=True, size=5000), SMALL)
    assert parse_message(kept).attachments == () and "bytes dropped" in notes[0]
    assert parse_message(kept).text.startswith("See the attachments.")


def test_trimmed_cuts_deep_nesting_and_keeps_the_headers():
    kept, notes = trimmed(nested(2500), SMALL)
    parsed = parse_message(kept)
    assert parsed.subject == "Hostile" and parsed.from_addr == "alice@acme.example" and notes


def test_measuring_a_bomb_stays_within_a_time_budget():
    started = time.monotonic()
    for raw in (nested(2500), flood(20_000), header_bomb(lines=20_000)):
        violations(raw, LimitsConfig())
        trimmed(raw, LimitsConfig())
    assert time.monotonic() - started < 10


# ---- over SMTP ---------------------------------------------------------------------------------

@pytest.fixture
def desk_with(tmp_path, clock):
    running = []

    def start(extra: str = ""):
        running.append(_running_desk(tmp_path, clock, extra))
        desk = next(running[-1])
        desk.cli("org", "add", "ACME", "--package", "silver", "--main-contact", "alice@acme.example")
        return desk
    yield start
    for gen in running:
        gen.close()


def test_mime_bombs_are_refused_with_a_clear_reason(desk_with):
    """Default action refuse: 552 5.3.4 naming the limit; the server goes on serving."""
    desk = desk_with()
    for n, (raw, words) in enumerate([(nested(60, 1), "nested"), (flood(600, n=2), "MIME parts"),
                                      (header_bomb(3), "header section")]):
        code, text = desk.send(raw, sender="alice@acme.example")
        assert code == 552 and text.startswith("5.3.4") and words in text, text
    assert [r["reason_code"] for r in desk.inbound()] == ["over-limit"] * 3
    assert desk.json("ticket", "list") == []
    assert desk.send(flood(3, n=9), sender="alice@acme.example")[0] == 250


def test_size_is_advertised_and_enforced_at_mail_from(desk_with):
    desk = desk_with()
    with smtplib.SMTP("127.0.0.1", desk.port) as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == desk.settings.smtp.max_message_bytes
        code, text = client.mail("alice@acme.example", [f"SIZE={desk.settings.smtp.max_message_bytes + 1}"])
        assert code == 552
        assert client.noop()[0] == 250


def test_drop_mode_keeps_the_mail_and_notes_what_was_dropped(desk_with):
    desk = desk_with('[limits]\naction = "drop"\nmax_attachments = 2\nmax_attachment_bytes = 2000\n')
    raw = flood(4, attachment=True)
    big = b"\r\n".join([b"x" * 76] * 53)   # about 4000 bytes: the last attachment is too big, too
    raw = raw.replace(b"x" * 10 + b"\r\n--B--", big + b"\r\n--B--")
    code, _ = desk.send(raw, sender="alice@acme.example")
    assert code == 250
    record = desk.inbound()[-1]
    assert record["outcome"] == "ticket_created" and "dropped for the limits" in record["reason"]
    ticket = desk.ticket(record["ticket"])
    assert [a["filename"] for a in ticket["attachments"]] == ["f0.bin", "f1.bin"]
    notes = [e["detail"] for e in ticket["events"] if e["kind"] == "parts-dropped"]
    assert any("f3.bin" in n and "bytes dropped" in n for n in notes) and any("f2.bin" in n for n in notes)


def test_quarantine_mode_holds_until_released(desk_with):
    desk = desk_with('[limits]\naction = "quarantine"\nmax_mime_depth = 5\n')
    code, _ = desk.send(nested(9), sender="alice@acme.example")
    assert code == 250
    record = desk.inbound()[-1]
    assert (record["outcome"], record["reason_code"]) == ("quarantined", "over-limit")
    assert desk.json("ticket", "list") == []
    requeued = desk.json("inbound", "requeue", str(record["id"]))
    assert requeued["outcome"] == "quarantined"                        # the same rules hold it again
    released = desk.json("inbound", "release", str(record["id"]))
    assert released["outcome"] == "ticket_created"
    events = desk.ticket(released["ticket"])["events"]
    assert any(e["kind"] == "parts-dropped" and "deeper than 5" in e["detail"] for e in events)


def test_oversized_header_in_drop_mode_is_quarantined(desk_with):
    desk = desk_with('[limits]\naction = "drop"\nmax_header_bytes = 20000\n')
    assert desk.send(header_bomb(lines=2000), sender="alice@acme.example")[0] == 250
    assert desk.inbound()[-1]["outcome"] == "quarantined"


def test_config_refuses_unknown_policies_and_zero_limits(tmp_path):
    from gateway.config import load_settings
    from gateway.errors import ConfigError
    for text, words in [('[auth]\npolicy = "ignore"\n', "[auth] policy"),
                        ('[limits]\naction = "bounce"\n', "[limits] action"),
                        ("[limits]\nmax_mime_parts = 0\n", "[limits] max_mime_parts"),
                        ("[loops]\nwindow_minutes = 0\n", "[loops] window_minutes")]:
        path = tmp_path / "bad.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            load_settings(path)
