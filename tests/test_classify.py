"""Classify stage: auto-generated, bounce, out-of-office and list mail; role addresses."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gateway.classify import ROLE_LOCAL_PARTS, classify, is_role_address
from gateway.parsing import parse_headers, parse_message

EML_DIR = Path(__file__).parent / "data" / "eml"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(
    not (CORPUS / "expected" / "auto_reply_suppression.tsv").is_file(),
    reason=f"shared mail corpus not found at {CORPUS} (it lives beside the work tree)",
)
# Sources of ordinary helpdesk and person-written mail in the corpus.
HELPDESK_SOURCES = frozenset({"zammad", "otobo", "rt", "talon", "fiedl-erp", "django-helpdesk"})


def message(*headers: str, body: str = "Hello") -> bytes:
    """A small message from header lines."""
    lines = ["From: Alice <alice@customer.example>", "To: support@desk.example.com", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


@pytest.mark.parametrize(
    ("headers", "signal"),
    [
        (["Auto-Submitted: auto-replied"], "auto-submitted"),
        (["Auto-Submitted: auto-generated (vacation)"], "auto-submitted"),
        (["X-Autoreply: yes"], "x-autoreply"),
        (["X-Autorespond: Vacation"], "x-autoreply"),
        (["X-Autoresponder: 1"], "x-autoreply"),
        (["X-Auto-Response-Suppress: All"], "x-auto-response-suppress"),
        (["X-Auto-Response-Suppress: DR, OOF, AutoReply"], "x-auto-response-suppress"),
        (["Precedence: bulk"], "precedence-bulk"),
        (["Precedence: junk"], "precedence-junk"),
        (["Precedence: list"], "precedence-list"),
        (["Precedence: auto_reply"], "precedence-auto_reply"),
        (["List-Id: Customers <customers.lists.example.org>"], "list-id"),
        (["List-Unsubscribe: <mailto:leave@lists.example.org>"], "list-unsubscribe"),
        (["Return-Path: <>"], "null-return-path"),
        (["Content-Type: multipart/report; report-type=delivery-status; boundary=x"], "delivery-status"),
        (["Content-Type: multipart/report; report-type=feedback-report; boundary=x"], "multipart-report"),
        (["Content-Type: message/delivery-status"], "delivery-status"),
        (["Subject: Automatische Antwort: Ihre Anfrage"], "subject-out-of-office"),
        (["Subject: Abwesenheitsnotiz: Urlaub bis 28.03."], "subject-out-of-office"),
        (["Subject: Out of Office: Re: Export"], "subject-out-of-office"),
        (["Subject: Automatic reply: Export"], "subject-out-of-office"),
        (["Subject: Auto reply: Nyaan"], "subject-out-of-office"),
        (["Subject: Undeliverable: Export"], "subject-bounce"),
        (["Subject: Unzustellbar: Export"], "subject-bounce"),
        (["Subject: Delivery Status Notification (Failure)"], "subject-bounce"),
        (["Subject: Mail delivery failed: returning message to sender"], "subject-bounce"),
        (["Subject: Returned mail: see transcript for details"], "subject-bounce"),
    ],
)
def test_auto_generated_when_one_rule_fires(headers: list[str], signal: str) -> None:
    """Each rule alone marks a message as never to be answered automatically."""
    result = classify(parse_message(message(*headers)), "alice@customer.example")
    assert result.auto_generated
    assert signal in result.signals


@pytest.mark.parametrize(
    "from_header",
    [
        "MAILER-DAEMON@mx.customer.example",
        "Mail Delivery System <MAILER-DAEMON@mx.customer.example>",
        "Mail Delivery Subsystem <MAILER-DAEMON>",
        "postmaster@customer.example",
        "post_master@customer.example",
        "noreply@customer.example",
        "no-reply@customer.example",
        "Gmail Team <gmail-noreply@customer.example>",
        "donotreply@customer.example",
        "do-not-reply@customer.example",
        "customers-bounces@lists.example.org",
        "customers-request@lists.example.org",
        "customers-admin@lists.example.org",
        "MAILER-DAEMON <>",
    ],
)
def test_auto_generated_when_sender_is_a_machine(from_header: str) -> None:
    """System and no-reply senders are machines, also without any other header."""
    raw = f"From: {from_header}\r\nSubject: Hello\r\n\r\nBody\r\n".encode()
    assert classify(parse_message(raw), None).auto_generated


@pytest.mark.parametrize("envelope_sender", ["", "<>"])
def test_auto_generated_when_envelope_sender_is_null(envelope_sender: str) -> None:
    """A null SMTP envelope sender marks a notification (RFC 5321 section 4.5.5)."""
    result = classify(parse_message(message("Subject: Hi")), envelope_sender)
    assert result.auto_generated and "null-sender" in result.signals


@pytest.mark.parametrize(
    "headers",
    [
        ["Subject: Urlaub im August: wer vertritt mich im Portal?"],
        ["Subject: Re: Automatic reply settings do not save"],
        ["Subject: Frage zur Abwesenheitsnotiz im Kalender-Modul"],
        ["Subject: Why was my mail undeliverable?"],
        ["Auto-Submitted: no"],
        ["X-Auto-Response-Suppress: DR, RN, NRN"],
        ["Precedence: first-class"],
        ["Return-Path: <alice@customer.example>"],
    ],
)
def test_not_auto_generated_when_person_writes_about_such_topics(headers: list[str]) -> None:
    """Free words and harmless header values do not fire any rule."""
    result = classify(parse_message(message(*headers)), "alice@customer.example")
    assert result == classify(parse_message(message(*headers)), "alice@customer.example")
    assert (result.auto_generated, result.signals) == (False, ())


def test_envelope_sender_unknown_when_none_is_given() -> None:
    """None means "not known", not a null sender."""
    assert classify(parse_message(message("Subject: Hi")), None).signals == ()


def test_bounce_when_postfix_sends_a_dsn() -> None:
    """A Postfix DSN is a bounce and not an out-of-office."""
    result = classify(parse_message((EML_DIR / "bounce_postfix_dsn_5_1_1.eml").read_bytes()), "")
    assert (result.auto_generated, result.bounce, result.out_of_office) == (True, True, False)
    assert not result.list_mail
    assert {"null-sender", "null-return-path", "system-sender", "delivery-status"} <= set(result.signals)


def test_bounce_when_mailer_daemon_sends_plain_failure_text() -> None:
    """A qmail-style plain-text failure notice from MAILER-DAEMON is a bounce."""
    raw = b"From: MAILER-DAEMON@mx.customer.example\r\nSubject: failure notice\r\n\r\nSorry.\r\n"
    assert classify(parse_message(raw), "").bounce


def test_out_of_office_when_exchange_answers_in_german() -> None:
    """The Exchange auto-reply fixture is out of office, not a bounce."""
    result = classify(parse_message((EML_DIR / "autoreply_outlook_de_abwesenheit.eml").read_bytes()), None)
    assert (result.auto_generated, result.bounce, result.out_of_office) == (True, False, True)
    assert result.signals == ("auto-submitted", "x-auto-response-suppress", "subject-out-of-office")


def test_out_of_office_when_vacation_responder_sets_auto_replied() -> None:
    """RFC 3834 ``auto-replied`` without a report is a vacation-style reply."""
    result = classify(parse_message(message("Auto-Submitted: auto-replied", "Subject: Re: Export")), None)
    assert result.out_of_office and not result.bounce


def test_list_mail_when_list_headers_are_present() -> None:
    """List-Id, List-Unsubscribe or Precedence: list mark list mail."""
    for header in ("List-Id: <customers.lists.example.org>", "List-Unsubscribe: <https://x.example>",
                   "Precedence: list"):
        result = classify(parse_message(message(header)), "alice@customer.example")
        assert result.list_mail and result.auto_generated
    assert not classify(parse_message(message("Precedence: bulk")), None).list_mail


def test_header_summary_is_enough_when_classifying_at_the_smtp_edge() -> None:
    """classify() accepts the cheap HeaderSummary and gives the same header verdict."""
    raw = (EML_DIR / "autoreply_outlook_de_abwesenheit.eml").read_bytes()
    assert classify(parse_headers(raw), None) == classify(parse_message(raw), None)


@pytest.mark.parametrize("name", sorted(p.name for p in EML_DIR.glob("*.eml")
                                        if p.name.startswith(("new_", "reply_"))))
def test_not_auto_generated_when_customer_writes_from_a_real_client(name: str) -> None:
    """None of the person-written fixtures fires any rule."""
    result = classify(parse_message((EML_DIR / name).read_bytes()), "alice@customer.example")
    assert result.signals == ()


# -- role addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("info@customer.example", True),
        ("INFO@customer.example", True),
        ("support+tickets@customer.example", True),
        ("buchhaltung@customer.example", True),
        ("kontakt@customer.example", True),
        ("no-reply@customer.example", True),
        ("alice@customer.example", False),
        ("information.office@customer.example", False),
        ("alice+info@customer.example", False),
        ("", False),
        ("not-an-address", False),
    ],
)
def test_role_address_when_local_part_is_shared(addr: str, expected: bool) -> None:
    """The local part before any +tag decides, ignoring case."""
    assert is_role_address(addr) is expected


def test_role_address_when_admin_adds_local_parts() -> None:
    """Configured extra local parts count too, ignoring case."""
    assert is_role_address("Empfang-Nord@customer.example", ["empfang-nord"])
    assert not is_role_address("alice@customer.example", ["empfang-nord"])
    assert {"info", "support", "team", "office", "sales", "kontakt"} <= ROLE_LOCAL_PARTS


# -- shared corpus -------------------------------------------------------------------


def corpus_rows(table: str) -> list[dict[str, str]]:
    """Rows of one expectation table of the shared corpus."""
    with open(CORPUS / "expected" / table, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def corpus_bytes(name: str) -> bytes:
    """One corpus file, read in place (never copied into the project)."""
    return (CORPUS / "corpus" / name).read_bytes()


@needs_corpus
def test_corpus_recall_when_messages_must_not_be_answered() -> None:
    """Every message of auto_reply_suppression.tsv is auto-generated (full parse and headers only)."""
    rows = corpus_rows("auto_reply_suppression.tsv")
    missed = [r["file"] for r in rows
              if not classify(parse_message(corpus_bytes(r["file"])), None).auto_generated]
    missed_edge = [r["file"] for r in rows
                   if not classify(parse_headers(corpus_bytes(r["file"])), None).auto_generated]
    assert len(rows) == 359
    assert missed == [] and missed_edge == []


@needs_corpus
def test_corpus_bounces_when_table_lists_delivery_reports() -> None:
    """Delivery reports in dsn_reports.tsv are classified as bounces."""
    rows = corpus_rows("dsn_reports.tsv")
    missed = [r["file"] for r in rows if not classify(parse_message(corpus_bytes(r["file"])), None).bounce]
    assert missed == []


@needs_corpus
def test_corpus_role_senders_when_sender_is_a_role_or_system_address() -> None:
    """role_senders.tsv: the From address is read exactly and is a role address."""
    rows = corpus_rows("role_senders.tsv")
    wrong = [(r["file"], r["from_address"]) for r in rows
             if parse_message(corpus_bytes(r["file"])).from_addr != r["from_address"].lower()
             or not is_role_address(r["from_address"])]
    assert wrong == []


@needs_corpus
def test_corpus_false_positives_when_helpdesk_mail_is_ordinary() -> None:
    """Helpdesk and reply-parser messages outside the table fire only on no-reply senders."""
    listed = {r["file"] for r in corpus_rows("auto_reply_suppression.tsv")}
    ordinary = [r["file"] for r in corpus_rows("corpus_manifest.tsv")
                if r["kind"] == "message" and r["source"] in HELPDESK_SOURCES and r["file"] not in listed]
    flagged = {}
    for name in ordinary:
        parsed = parse_message(corpus_bytes(name))
        result = classify(parsed, None)
        if result.auto_generated:
            flagged[name] = (parsed.from_addr, result.signals)
    assert len(ordinary) == 109
    # zammad mail099 really is automated: a newsletter from noreply@, not in the table.
    assert flagged == {"zammad__mail099.box": ("noreply@example.org", ("system-sender",))}
