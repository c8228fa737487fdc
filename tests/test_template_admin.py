"""`postdesk templates …`: overrides stored in the database, versioned, validated, in force at once.

The CLI runs in-process against the running gateway of the `acme` fixture, so a new override
must change the very next mail without a restart; refused templates must leave the version
in force untouched.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gateway.template_docs import markdown
from tests.conftest import mail
from tests.test_rendering import SSTI_PAYLOADS

README = Path(__file__).resolve().parents[1] / "README.md"


def write(tmp_path: Path, text: str, name: str = "template.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def ack_text(desk, subject: str = "Export fails") -> tuple[str, str]:
    desk.send(mail("alice@acme.example", subject, "The export fails."))
    ack = desk.delivered("alice@acme.example")[-1]
    return ack["Subject"], ack.get_body(("plain",)).get_content()


CUSTOM = ("Subject: [#{{ ticket.number }}] Received: {{ ticket.subject }}\n\n"
          "Dear {{ recipient.name }},\nwe have your request #{{ ticket.number }}.\n")


def test_list_shows_every_template_with_locales_and_override_flag(acme, tmp_path):
    # The JSON listing names every template, its locales, and which locale has an override in force.
    before = {t["name"]: t for t in acme.json("templates", "list")}
    assert {"ticket_created", "agent_reply", "invitation", "welcome", "follower_new_ticket",
            "request_digest", "follow_confirmation"} <= set(before)
    assert all(t["locales"] == ["de", "en"] and t["override"] is False for t in before.values())
    acme.cli("templates", "set", "ticket_created", "--locale", "en", "--file", write(tmp_path, CUSTOM),
             "--author", "hanna")
    entry = {t["name"]: t for t in acme.json("templates", "list")}["ticket_created"]
    assert entry["override"] is True and entry["overrides"]["de"] is None
    assert (entry["overrides"]["en"]["version"], entry["overrides"]["en"]["author"]) == (1, "hanna")
    assert "ccs_refused" in entry["variables"] and "ticket" in entry["variables"]


def test_override_takes_effect_in_running_serve_and_reset_restores_default(acme, tmp_path):
    # `templates set` changes the next mail of the running gateway; `reset` brings the default back.
    acme.cli("templates", "set", "ticket_created", "--locale", "en", "--file", write(tmp_path, CUSTOM))
    subject, text = ack_text(acme)
    assert subject == "[#1] Received: Export fails"
    assert text == "Dear alice@acme.example,\nwe have your request #1.\n"
    ack = acme.delivered("alice@acme.example")[-1]
    assert ack.get_body(("html",)) is None   # the packaged HTML part would show the old words: gone too
    acme.cli("templates", "reset", "ticket_created", "--locale", "en")
    subject, text = ack_text(acme, "Second")
    assert subject == "[#2] Your request: Second" and text.startswith("Hello alice@acme.example,")


def test_invalid_template_is_refused_with_line_and_reason_and_old_version_stays(acme, tmp_path):
    # A typo is refused with its part, line and reason on stderr; version 1 stays in force.
    acme.cli("templates", "set", "ticket_created", "--locale", "en", "--file", write(tmp_path, CUSTOM))
    broken = write(tmp_path, "Subject: [#{{ ticket.number }}] x\n\nHello,\n\n{{ tiket.number }}\n", "broken.txt")
    acme.cli("templates", "set", "ticket_created", "--locale", "en", "--file", broken, expect=1)
    error = acme.last_stderr.strip()
    assert error == ("postdesk: template refused: ticket_created (en, body.txt), line 3: unknown variable "
                     "'tiket'; version 1 stays in force")
    assert len(acme.json("templates", "history", "ticket_created", "--locale", "en")) == 1
    assert ack_text(acme)[0] == "[#1] Received: Export fails"
    no_tag = write(tmp_path, "Subject: Received\n\nHello\n", "notag.txt")
    acme.cli("templates", "set", "ticket_created", "--locale", "en", "--file", no_tag, expect=1)
    assert "must keep the ticket tag" in acme.last_stderr
    syntax = write(tmp_path, "=== text ===\nHello {% if x %}\n", "syntax.txt")
    acme.cli("templates", "set", "agent_reply", "--locale", "de", "--file", syntax, expect=1)
    assert "agent_reply (de, body.txt), line 1: syntax error" in acme.last_stderr
    assert "the default stays in force" in acme.last_stderr


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payload_through_templates_set_is_refused_and_nothing_stored(desk, tmp_path, payload):
    # Known template-injection payloads never become an override, whatever part they are in.
    for marker in ("subject", "text", "html"):
        source = f"=== {marker} ===\n[#{{{{ ticket.number }}}}] {payload}\n"
        desk.cli("templates", "set", "agent_reply", "--locale", "en", "--file", write(tmp_path, source),
                 expect=1)
        assert desk.last_stderr.startswith("postdesk: template refused: agent_reply (en, ")
        assert desk.last_stderr.count("\n") == 1
    assert desk.json("templates", "history", "agent_reply", "--locale", "en") == []


def test_subject_template_cannot_inject_a_header(acme, tmp_path):
    # A subject that renders CR/LF is one header line in the mail that goes out.
    source = ('=== subject ===\n[#{{ ticket.number }}] {{ "x\\r\\nBcc: evil@evil.example\\r\\n\\r\\nbody" }}'
              " {{ ticket.subject }}\n")
    acme.cli("templates", "set", "ticket_created", "--locale", "en", "--file", write(tmp_path, source))
    subject, _ = ack_text(acme)
    ack = acme.delivered("alice@acme.example")[-1]
    assert ack["Bcc"] is None and subject == "[#1] x Bcc: evil@evil.example body Export fails"


def test_preview_renders_sample_data_in_text_and_html(desk, tmp_path):
    # The preview shows subject, text and HTML for the chosen locale, from a file before it is set.
    out = desk.cli("templates", "preview", "ticket_created", "--locale", "de")
    assert out.startswith("Subject: [#1042] Ihre Anfrage: Export nach Excel bricht ab\n\nGuten Tag Jana Müller,")
    assert "--- text/html ---\n<!DOCTYPE html>" in out and "HAR" in out
    data = desk.json("templates", "preview", "welcome", "--locale", "en")
    assert data["subject"] == "Your service account at Postdesk Support for Doe & Partners Ltd"
    assert "support+follow@desk.example.com" in data["text"] and data["html"] is None
    candidate = desk.json("templates", "preview", "agent_reply", "--locale", "en", "--file",
                          write(tmp_path, "=== text ===\nHi {{ recipient.name }}: {{ message.text }}\n"))
    assert candidate["subject"] == "[#1042] Re: Excel export fails"
    assert candidate["text"].startswith("Hi Jane Doe: Hello,") and candidate["html"] is None
    assert desk.json("templates", "history", "agent_reply", "--locale", "en") == []


def test_history_rollback_diff_and_show_keep_every_version(desk, tmp_path):
    # Every change is a version with author and time; rollback and reset add versions too.
    one = write(tmp_path, "=== text ===\nVersion one {{ ticket.number }}\n", "one.txt")
    two = write(tmp_path, "=== text ===\nVersion two {{ ticket.number }}\n", "two.txt")
    desk.cli("templates", "set", "ticket_solved", "--locale", "de", "--file", one, "--author", "ann", "--note", "a")
    desk.cli("templates", "set", "ticket_solved", "--locale", "de", "--file", two, "--author", "ben")
    assert desk.json("templates", "set", "ticket_solved", "--locale", "de", "--file", two)["changed"] is False
    desk.cli("templates", "rollback", "ticket_solved", "--locale", "de", "--version", "1", "--author", "cleo")
    assert "Version one" in desk.cli("templates", "show", "ticket_solved", "--locale", "de")
    diff = desk.cli("templates", "diff", "ticket_solved", "--locale", "de")
    assert "+Version one {{ ticket.number }}" in diff and "-Guten Tag" in diff
    desk.cli("templates", "reset", "ticket_solved", "--locale", "de")
    history = desk.json("templates", "history", "ticket_solved", "--locale", "de")
    assert [(h["version"], h["action"], h["author"]) for h in history][:3] == [
        (1, "set", "ann"), (2, "set", "ben"), (3, "rollback", "cleo")]
    assert history[3]["action"] == "reset" and history[3]["in_force"] is False
    assert all(h["created_at"] for h in history) and history[0]["note"] == "a"
    assert desk.cli("templates", "diff", "ticket_solved", "--locale", "de").strip() == "no differences"
    shown = desk.json("templates", "show", "ticket_solved", "--locale", "de", "--version", "2")
    assert shown["parts"]["body.txt"] == "Version two {{ ticket.number }}\n"
    default = desk.cli("templates", "show", "ticket_solved", "--locale", "de", "--default")
    assert default.startswith("=== subject ===\n[#{{ ticket.number }}]")


def test_show_output_round_trips_through_set(desk, tmp_path):
    # What `show` prints is what `set` takes: storing it unchanged changes no mail.
    shown = desk.cli("templates", "show", "agent_reply", "--locale", "en")
    path = write(tmp_path, shown)
    desk.cli("templates", "set", "agent_reply", "--locale", "en", "--file", path)
    assert desk.cli("templates", "show", "agent_reply", "--locale", "en") == shown
    assert desk.cli("templates", "diff", "agent_reply", "--locale", "en").strip() == "no differences"


def test_edit_opens_the_editor_and_stores_a_valid_result(desk, tmp_path, monkeypatch):
    # `templates edit` hands the template to $EDITOR and stores what comes back, if valid.
    script = tmp_path / "editor.py"
    script.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('Kind regards', 'Best wishes'))\n", encoding="utf-8")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    desk.cli("templates", "edit", "ticket_reopened", "--locale", "en", "--author", "dora")
    assert "Best wishes" in desk.cli("templates", "preview", "ticket_reopened", "--locale", "en")
    assert desk.json("templates", "history", "ticket_reopened", "--locale", "en")[0]["author"] == "dora"
    script.write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_text('=== text ===\\n{{ nope }}\\n')\n",
                      encoding="utf-8")
    desk.cli("templates", "edit", "ticket_reopened", "--locale", "en", expect=1)
    assert "unknown variable 'nope'" in desk.last_stderr and "your text is kept in" in desk.last_stderr
    assert len(desk.json("templates", "history", "ticket_reopened", "--locale", "en")) == 1


def test_test_send_delivers_the_rendered_sample_to_an_address(desk):
    # An admin sees the real mail in their own mail client.
    data = desk.json("templates", "test-send", "request_digest", "--locale", "de", "--to", "admin@vendor.example")
    assert data["status"] == "sent"
    [sent] = desk.delivered("admin@vendor.example")
    assert sent["Subject"] == "[Test] Ihre Anfragen beim Postdesk-Support"
    assert "Export nach Excel bricht ab" in sent.get_body(("plain",)).get_content()
    desk.cli("templates", "test-send", "welcome", "--to", "not an address", expect=1)


def test_validate_checks_everything_in_force(desk, tmp_path):
    # `validate` with no name checks every template of both locales; a file is checked, not stored.
    results = desk.json("templates", "validate")
    assert len(results) == 2 * len(desk.json("templates", "list")) and not any(r["error"] for r in results)
    bad = write(tmp_path, "=== text ===\n{{ message.text.__class__ }}\n")
    desk.cli("templates", "validate", "agent_reply", "--locale", "en", "--file", bad, expect=1)
    assert "agent_reply (en, body.txt)" in desk.last_stderr
    with pytest.raises(SystemExit):   # argparse: only de and en
        desk.cli("templates", "set", "agent_reply", "--locale", "xx", "--file", bad)
    desk.cli("templates", "show", "no_such_template", expect=1)


def test_readme_lists_every_template_and_its_variables():
    # The admins' section of the README is the generated table (`postdesk templates list --markdown`).
    text = README.read_text(encoding="utf-8")
    begin, end = "<!-- templates:begin -->\n", "<!-- templates:end -->"
    assert begin in text and end in text, "README.md lacks the templates section markers"
    section = text.split(begin, 1)[1].split(end, 1)[0]
    assert section == markdown(), ("README.md's template table is out of date: replace the part between the "
                                   "markers with the output of `postdesk templates list --markdown`")
    assert json.dumps(markdown()).count("not described yet") == 0
