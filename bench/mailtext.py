"""Mail as customers' clients write it: German and English text, quoting, HTML, attachments, headers.

``compose`` turns one planned message into the bytes an MTA would send after DATA
(CRLF line endings, dot-stuffed, with the terminating ``.`` line). The header sets
imitate Outlook, Gmail, Thunderbird and Apple Mail, because that is what the SMTP
edge and the parser really see; every random choice comes from the caller's
seeded ``random.Random``.
"""
from __future__ import annotations

import base64
import html
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Sequence
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from bench.people import SUPPORT, Person

_PROBLEMS = {
    "de": ("Beim Export der Monatsübersicht erscheint seit heute früh eine rote Fehlermeldung.",
           "Die Rechnungsnummern werden im PDF doppelt vergeben, das Finanzamt fragt bereits nach.",
           "Nach dem Update auf die neue Version können sich zwei Kolleginnen nicht mehr anmelden.",
           "Die mobile App stürzt beim Öffnen der Aufgabenliste ab (Android 14, Pixel 7).",
           "Der Abgleich mit unserem DATEV-Export bricht nach etwa 500 Zeilen ohne Meldung ab.",
           "Seit Montag dauert das Laden der Berichte mehr als zwei Minuten."),
    "en": ("Since this morning the monthly export fails with a red error banner.",
           "Invoice numbers are assigned twice in the PDF run; our auditors noticed.",
           "After the upgrade two colleagues can no longer sign in, the page just reloads.",
           "The mobile app crashes when opening the task list (iOS 17.4, iPhone 13).",
           "The sync with our accounting export stops after about 500 rows without any message.",
           "Loading reports has taken more than two minutes since Monday."),
}
_DETAILS = {
    "de": ("Wir haben es in Chrome und Firefox versucht, jeweils mit dem gleichen Ergebnis.",
           "Betroffen sind alle Nutzer am Standort Köln, in Hamburg funktioniert es.",
           "Ein Neustart des Browsers und das Leeren des Caches haben nicht geholfen.",
           "Im Anhang finden Sie einen Screenshot und das Protokoll von heute Vormittag.",
           "Bitte melden Sie sich kurz, ob Sie weitere Informationen benötigen."),
    "en": ("We tried Chrome and Firefox, same result in both.",
           "It affects every user at the Leeds office; Bristol works fine.",
           "Restarting the browser and clearing the cache did not help.",
           "Attached are a screenshot and this morning's log.",
           "Please let us know if you need anything else from our side."),
}
_REPLIES = {
    "de": ("Danke für die schnelle Rückmeldung, das Update hat leider nichts geändert.",
           "Ich habe es eben noch einmal getestet: der Fehler tritt weiterhin auf.",
           "Kurze Ergänzung: der Fehler tritt nur bei Berichten mit mehr als 12 Spalten auf.",
           "Vielen Dank, jetzt funktioniert es wieder. Das Ticket kann geschlossen werden.",
           "Wann können wir mit einer Lösung rechnen? Der Monatsabschluss steht an."),
    "en": ("Thanks for the quick answer, unfortunately the update did not change anything.",
           "I tested it again just now: the error is still there.",
           "A quick addition: it only happens for reports with more than 12 columns.",
           "Thank you, it works again now. Feel free to close the ticket.",
           "When can we expect a fix? Month-end closing is coming up."),
}
_AGENT_REPLIES = {
    "de": ("vielen Dank für Ihre Nachricht. Wir haben den Fehler nachgestellt und arbeiten an einer Korrektur.",
           "bitte installieren Sie Version 4.2.1, dort ist das Problem behoben.",
           "könnten Sie uns bitte die genaue Uhrzeit und den Benutzernamen nennen?"),
    "en": ("thank you for your message. We reproduced the error and are working on a fix.",
           "please install version 4.2.1, which fixes the problem.",
           "could you tell us the exact time and the user name, please?"),
}
_SUBJECTS = {
    "de": ("Fehler beim Export", "Rechnungsnummern doppelt", "Anmeldung nicht möglich", "App stürzt ab",
           "DATEV-Abgleich bricht ab", "Berichte laden sehr langsam", "Frage zur Lizenz", "Druckansicht leer"),
    "en": ("Export fails", "Duplicate invoice numbers", "Cannot sign in", "App crashes",
           "Accounting sync stops", "Reports load slowly", "Licence question", "Print preview empty"),
}
_FIELDS = {
    "de": ("Typ: Störung\nPriorität: hoch\nModul: Reporting", "Typ: Störung\nPriorität: mittel\nModul: Billing",
           "Typ: Serviceanfrage\nModul: nicht sicher"),
    "en": ("Type: problem\nPriority: high\nModule: Reporting", "Type: problem\nPriority: low\nModule: Mobile app",
           "Type: service request\nModule: not sure"),
}
_GREETING = {"de": ("Guten Tag,", "Hallo zusammen,", "Sehr geehrte Damen und Herren,"),
             "en": ("Hello,", "Hi team,", "Dear support team,")}
_CLOSING = {"de": ("Viele Grüße", "Mit freundlichen Grüßen", "Beste Grüße"),
            "en": ("Kind regards", "Best wishes", "Thanks,")}
_OUTLOOK_STYLE = ("<style><!--\n@font-face {font-family:\"Cambria Math\"; panose-1:2 4 5 3 5 4 6 3 2 4;}\n"
                  "@font-face {font-family:Calibri; panose-1:2 15 5 2 2 2 4 3 2 4;}\n"
                  "p.MsoNormal, li.MsoNormal, div.MsoNormal {margin:0cm; font-size:11.0pt; "
                  "font-family:\"Calibri\",sans-serif;}\nspan.EmailStyle17 {mso-style-type:personal-compose;}\n"
                  ".MsoChpDefault {mso-style-type:export-only;}\n@page WordSection1 {size:612.0pt 792.0pt; "
                  "margin:70.85pt 70.85pt 2.0cm 70.85pt;}\ndiv.WordSection1 {page:WordSection1;}\n--></style>")


@dataclass(frozen=True)
class Planned:
    """One message to compose: who, what, and the thread headers it carries."""

    sender: Person
    org_name: str
    client: str
    message_id: str
    date: datetime
    subject: str
    text: str
    to: tuple[str, ...] = (SUPPORT,)
    cc: tuple[str, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    html: bool = False
    attachments: tuple[tuple[str, str, bytes], ...] = ()


def new_ticket_text(rng: random.Random, person: Person, org_name: str, with_fields: bool) -> str:
    lang = person.locale
    lines = [rng.choice(_FIELDS[lang]), ""] if with_fields else []
    lines += [rng.choice(_GREETING[lang]), "", rng.choice(_PROBLEMS[lang]), " ".join(rng.sample(_DETAILS[lang], 2)),
              "", rng.choice(_CLOSING[lang]), person.name]
    return "\n".join(lines) + _signature(person, org_name)


def reply_text(rng: random.Random, person: Person, org_name: str, quoted: Planned, agent: bool) -> str:
    lang = person.locale
    if agent:
        command = "#status solved\n" if rng.random() < 0.2 else ""
        salutation = f"Hallo {quoted.sender.name}," if lang == "de" else f"Dear {quoted.sender.name},"
        body = (f"{command}{salutation}\n\n{rng.choice(_AGENT_REPLIES[lang])}\n\n"
                f"{rng.choice(_CLOSING[lang])}\n{person.name}")
    else:
        body = f"{rng.choice(_GREETING[lang])}\n\n{rng.choice(_REPLIES[lang])}\n\n{rng.choice(_CLOSING[lang])}\n" \
               f"{person.name}{_signature(person, org_name)}"
    return f"{body}\n\n{_quote_header(quoted, lang, rng)}\n{_quoted(quoted.text)}"


def new_subject(rng: random.Random, lang: str) -> str:
    return rng.choice(_SUBJECTS[lang])


def reply_subject(subject: str, lang: str) -> str:
    return f"{'AW' if lang == 'de' else 'Re'}: {subject}"


def attachments_for(rng: random.Random, lang: str) -> tuple[tuple[str, str, bytes], ...]:
    """One or two files between a few KB and about 200 KB (log-uniform), as customers attach them."""
    files = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        size = int(3_000 * (200_000 / 3_000) ** rng.random())
        kind = rng.choice(("png", "pdf", "log", "csv"))
        if kind == "png":
            files.append(("Bildschirmfoto.png" if lang == "de" else "screenshot.png", "image/png",
                          b"\x89PNG\r\n\x1a\n" + rng.randbytes(size)))
        elif kind == "pdf":
            files.append(("Rechnung_2025-03.pdf" if lang == "de" else "invoice_2025-03.pdf", "application/pdf",
                          b"%PDF-1.7\n" + rng.randbytes(size)))
        else:
            line = "2025-03-03 08:14:{:02d},{:03d} ERROR export.worker row {} rejected: column 13 out of range\n"
            text = "".join(line.format(i % 60, i % 1000, i) for i in range(size // 80 + 1))
            files.append((f"export.{kind}", "text/plain" if kind == "log" else "text/csv", text.encode()))
    return tuple(files)


def compose(plan: Planned, rng: random.Random) -> bytes:
    """The DATA payload of ``plan``: CRLF, dot-stuffed, ending with the ``.`` line.

    The MIME body comes from the standard library; the header block is written
    here, folded the way mail clients fold it (the library would turn long
    References into encoded words, which no client sends).
    """
    body = EmailMessage(policy=SMTP)
    cte = {"outlook": "quoted-printable", "gmail": "quoted-printable", "thunderbird": "8bit",
           "apple": "quoted-printable"}[plan.client]
    body.set_content(plan.text, charset="utf-8", cte=cte)
    if plan.html:
        body.add_alternative(_html(plan), subtype="html", charset="utf-8",
                             cte="base64" if plan.client == "gmail" else "quoted-printable")
    for filename, ctype, content in plan.attachments:
        maintype, subtype = ctype.split("/")
        body.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    for part in body.walk():   # the library would draw boundaries from the global random generator
        if part.is_multipart():
            part.set_boundary(f"----=_Part_{rng.randbytes(12).hex()}")
        del part["MIME-Version"]          # written once, in the header block below
    fields = [*_trace_fields(plan, rng), *_CLIENT_FIELDS[plan.client](plan, rng), *_address_fields(plan)]
    head = "".join(f"{name}: {value}\r\n" for name, value in fields if value is not None)
    return dot_stuff(head.encode("ascii") + b"MIME-Version: 1.0\r\n" + body.as_bytes(policy=SMTP))


def dot_stuff(payload: bytes) -> bytes:
    r"""RFC 5321 §4.5.2 transparency plus the end-of-data line.

    >>> dot_stuff(b".a\r\nb\r\n.c")
    b'..a\r\nb\r\n..c\r\n.\r\n'
    """
    data = payload.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _signature(person: Person, org_name: str) -> str:
    phone = "Tel. +49 221 4711-0" if person.locale == "de" else "Phone +44 113 496 0000"
    return f"\n\n-- \n{person.name}\n{org_name}\n{phone}"


def _quote_header(quoted: Planned, lang: str, rng: random.Random) -> str:
    when = quoted.date.strftime("%d.%m.%Y %H:%M") if lang == "de" else quoted.date.strftime("%a, %d %b %Y at %H:%M")
    who = f"{quoted.sender.name} <{quoted.sender.email}>"
    if rng.random() < 0.5:
        return f"Am {when} schrieb {who}:" if lang == "de" else f"On {when}, {who} wrote:"
    labels = ("Von", "Gesendet", "An", "Betreff") if lang == "de" else ("From", "Sent", "To", "Subject")
    return "\n".join(f"{label}: {value}" for label, value in
                     zip(labels, (who, when, "Support <support@desk.example.com>", quoted.subject)))


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines()[:60])


def _html(plan: Planned) -> str:
    paragraphs = "".join(f"<p class=MsoNormal>{html.escape(line) or '<o:p>&nbsp;</o:p>'}</p>\n"
                         for line in plan.text.splitlines())
    head = _OUTLOOK_STYLE if plan.client == "outlook" else ""
    return (f"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">{head}</head>"
            f"<body lang=DE link=\"#0563C1\"><div class=WordSection1>\n{paragraphs}</div></body></html>")


def _token(rng: random.Random, n: int) -> str:
    return base64.b64encode(rng.randbytes(n)).decode()


def _words(text: str) -> str:
    """A header phrase or text: as is when ASCII, else RFC 2047 encoded words."""
    return text if text.isascii() else Header(text, "utf-8").encode(linesep="\r\n")


def _fold(items: Sequence[str], separator: str = "") -> str:
    return f"{separator}\r\n ".join(items)


def _address_fields(plan: Planned) -> list[tuple[str, str | None]]:
    to = [f"Support <{a}>" if a == SUPPORT else a for a in plan.to]
    return [
        ("From", f"{_words(plan.sender.name)} <{plan.sender.email}>"),
        ("To", _fold(to, ",")),
        ("Cc", _fold(plan.cc, ",") if plan.cc else None),
        ("Subject", _words(plan.subject)),
        ("Date", format_datetime(plan.date)),
        ("Message-ID", plan.message_id),
        ("In-Reply-To", plan.in_reply_to),
        ("References", _fold(plan.references) if plan.references else None),
    ]


def _trace_fields(plan: Planned, rng: random.Random) -> list[tuple[str, str]]:
    """What our border MTA adds on top: Received and its Authentication-Results (DKIM and DMARC pass)."""
    domain = plan.sender.email.rpartition("@")[2]
    return [
        ("Received", f"from mail-{rng.randint(1, 250)}.{domain} ([192.0.2.{rng.randint(1, 254)}])\r\n"
                     f"\tby mx.desk.example.com (Postfix) with ESMTPS id {rng.randbytes(5).hex().upper()}\r\n"
                     f"\tfor <{SUPPORT}>; {format_datetime(plan.date)}"),
        ("Authentication-Results", f"mx.desk.example.com;\r\n\tdkim=pass (2048-bit key) header.d={domain} "
                                   f"header.s=selector1 header.b={_token(rng, 6)[:8]};\r\n"
                                   f"\tdmarc=pass (p=quarantine dis=none) header.from={domain};\r\n"
                                   f"\tspf=pass smtp.mailfrom={domain}"),
        ("DKIM-Signature", _dkim(domain, rng)),
    ]


def _dkim(domain: str, rng: random.Random) -> str:
    signature = _token(rng, 256)
    lines = [signature[i:i + 70] for i in range(0, len(signature), 70)]
    return ("v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + domain + "; s=selector1;\r\n\t"
            "h=From:Date:Subject:Message-ID:Content-Type:MIME-Version;\r\n\t"
            f"bh={_token(rng, 32)};\r\n\tb=" + "\r\n\t  ".join(lines))


def _outlook(plan: Planned, rng: random.Random) -> list[tuple[str, str]]:
    tenant = plan.message_id.split("@")[1].rstrip(">")
    lang = "de-DE" if plan.sender.locale == "de" else "en-GB"
    return [
        ("Received", f"from {tenant.upper()} ([fe80::{rng.randint(1, 9999):x}]) by {tenant.upper()}\r\n"
                     f" ([fe80::{rng.randint(1, 9999):x}%4]) with mapi id 15.20.7362.019;\r\n"
                     f" {format_datetime(plan.date)}"),
        ("Thread-Topic", _words(plan.subject.split(": ", 1)[-1])),
        ("Thread-Index", _token(rng, 22)),
        ("Accept-Language", "de-DE, en-US" if plan.sender.locale == "de" else "en-GB, en-US"),
        ("Content-Language", lang),
        ("X-MS-Has-Attach", "yes" if plan.attachments else ""),
        ("X-MS-TNEF-Correlator", ""),
        ("X-MS-Exchange-Organization-SCL", "1"),
        ("X-MS-Office365-Filtering-Correlation-Id", str(uuid.UUID(bytes=rng.randbytes(16)))),
        ("X-MS-Exchange-CrossTenant-Network-Message-Id", str(uuid.UUID(bytes=rng.randbytes(16)))),
    ]


def _gmail(plan: Planned, rng: random.Random) -> list[tuple[str, str]]:
    return [
        ("Received", f"by mail-ed1-f41.google.com with SMTP id {rng.randbytes(6).hex()}\r\n"
                     f"        for <{SUPPORT}>; {format_datetime(plan.date)}"),
        ("X-Google-DKIM-Signature", "v=1; a=rsa-sha256; c=relaxed/relaxed; d=1e100.net; s=20230601;\r\n"
                                    f"        bh={_token(rng, 32)};\r\n        b={_token(rng, 48)}"),
        ("X-Gm-Message-State", _token(rng, 45)),
        ("X-Google-Smtp-Source", _token(rng, 48)),
        ("X-Received", f"by 2002:a05:6402:{rng.randint(1000, 9999)} with SMTP id {rng.randbytes(6).hex()};\r\n"
                       f"        {format_datetime(plan.date)}"),
    ]


def _thunderbird(plan: Planned, rng: random.Random) -> list[tuple[str, str]]:
    return [("User-Agent", "Mozilla Thunderbird"),
            ("Content-Language", "de-DE" if plan.sender.locale == "de" else "en-GB")]


def _apple(plan: Planned, rng: random.Random) -> list[tuple[str, str]]:
    return [("X-Mailer", "Apple Mail (2.3774.400.31)"), ("Content-Language", plan.sender.locale)]


_CLIENT_FIELDS = {"outlook": _outlook, "gmail": _gmail, "thunderbird": _thunderbird, "apple": _apple}


def message_id_for(client: str, domain: str, rng: random.Random) -> str:
    """A Message-ID in the shape ``client`` makes (unique enough: 80+ random bits)."""
    if client == "outlook":
        return f"<{rng.randbytes(20).hex().upper()}@AM0PR10MB{rng.randint(1000, 9999)}.eurprd10.prod.outlook.com>"
    if client == "gmail":
        token = base64.urlsafe_b64encode(rng.randbytes(33)).decode().rstrip("=")
        return f"<CA{token}@mail.gmail.com>"
    if client == "apple":
        hexes = rng.randbytes(16).hex().upper()
        return f"<{hexes[:8]}-{hexes[8:12]}-{hexes[12:16]}-{hexes[16:20]}-{hexes[20:]}@{domain}>"
    return f"<{rng.randbytes(16).hex()}@{domain}>"
