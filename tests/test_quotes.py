"""Tests for gateway.quotes: the visible reply text of a mail body.

Bodies are written here the way the named mail clients produce them (names and
addresses are made up, all at example.com/.de). Each row asserts the exact
visible text and the rule id that decided the cut.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.quotes import VisibleText, html_to_text, visible_text

RULES = {
    "none", "quote-header-en", "quote-header-de", "quote-header-fr", "quote-header-nl",
    "quote-header-es", "quote-header-it", "quote-header-pt", "quote-header-other",
    "outlook-header-block", "original-message-separator", "forward-separator", "quoted-lines",
    "signature-dash", "mobile-signature", "html-quote-block", "empty-kept-full",
}

REPLY = "Hallo,\n\ndas Update hat geholfen, danke!\n\nViele Grüße\nMax Mustermann"
REPLY_EN = "Hi,\n\nthe update fixed it, thanks!\n\nBest,\nAnna"

OUTLOOK_DE = REPLY + """

-----Ursprüngliche Nachricht-----
Von: Postdesk Support <support@example.com>
Gesendet: Montag, 3. März 2025 10:00
An: Max Mustermann <max@example.de>
Betreff: AW: Drucker druckt nicht [#1042]

Hallo Herr Mustermann,

bitte installieren Sie das Update.
"""

OUTLOOK_DE_UNDERSCORES = REPLY + """

________________________________
Von: Postdesk Support <support@example.com>
Gesendet: Montag, 3. März 2025 10:00
An: Max Mustermann <max@example.de>
Betreff: AW: Drucker druckt nicht [#1042]

Hallo Herr Mustermann,
"""

OUTLOOK_EN = REPLY_EN + """

From: Postdesk Support <support@example.com>
Sent: Monday, March 3, 2025 10:00 AM
To: Anna Smith <anna@example.com>
Cc: Team <team@example.com>
Subject: RE: Printer offline [#1042]

Hello Anna,
please install the update.
"""

GMAIL_BOLD_OUTLOOK_BLOCK = REPLY_EN + """

*From:* Postdesk Support [mailto:support@example.com]
*Sent:* Monday, March 3, 2025 10:00 AM
*To:* anna@example.com
*Subject:* Printer offline [#1042]

Hello Anna,
"""

GMAIL_EN = REPLY_EN + """

On Mon, 3 Mar 2025 at 10:00, Postdesk Support <support@example.com> wrote:

> Hello Anna,
>
> please install the update.
"""

GMAIL_EN_WRAPPED = REPLY_EN + """

On Mon, Mar 3, 2025 at 10:00 AM Postdesk Support Team <
support+tickets@example.com> wrote:

> Hello Anna,
"""

GMAIL_DE = REPLY + """

Am Mo., 3. März 2025 um 10:00 Uhr schrieb Postdesk Support <
support@example.com>:

> Hallo Herr Mustermann,
"""

GMAIL_DE_WRAPPED_BEFORE_VERB = REPLY + """

Am Mo., 3. März 2025 um 10:00 Uhr
schrieb Postdesk Support <support@example.com>:

> Hallo Herr Mustermann,
"""

GMAIL_DE_NAME_FIRST = REPLY + """

Postdesk Support <support@example.com> schrieb am Mo., 3. März 2025
um 10:00 Uhr:

> Hallo Herr Mustermann,
"""

THUNDERBIRD_DE = REPLY + """

Am 03.03.25 um 10:00 schrieb Postdesk Support:
> Hallo Herr Mustermann,
>
> bitte installieren Sie das Update.
"""

NAME_SCHRIEB = REPLY + """

Postdesk Support schrieb:
> Hallo Herr Mustermann,
"""

APPLE_MAIL_EN = REPLY_EN + """

> On 3 Mar 2025, at 10:00, Postdesk Support <support@example.com> wrote:
>
> Hello Anna,
"""

IPHONE_DE = "Passt, danke!\n\nVon meinem iPhone gesendet\n\n" + """\
> Am 03.03.2025 um 10:00 schrieb Postdesk Support <support@example.com>:
>
> Hallo Herr Mustermann,
"""

IPHONE_EN = "Works now, thanks!\n\nSent from my iPhone"

FOREIGN_HEADERS = [
    ("Le lun. 3 mars 2025 à 10:00, Support <support@example.com> a écrit :", "quote-header-fr"),
    ("Op ma 3 mrt. 2025 om 10:00 schreef Support <support@example.com>:", "quote-header-nl"),
    ("El lun, 3 mar 2025 a las 10:00, Support (<support@example.com>) escribió:", "quote-header-es"),
    ("Il giorno lun 3 mar 2025 alle ore 10:00 Support <support@example.com> ha scritto:",
     "quote-header-it"),
    ("Em seg., 3 de mar. de 2025 às 10:00, Support <support@example.com> escreveu:",
     "quote-header-pt"),
    ("Den 3. mar. 2025 kl. 10.00 skrev Support <support@example.com>:", "quote-header-other"),
    ("2025-03-03 10:00 GMT+01:00 Support <support@example.com>:", "quote-header-other"),
]

SEPARATORS = [
    ("-----Original Message-----", "original-message-separator"),
    ("-----Ursprüngliche Nachricht-----", "original-message-separator"),
    ("-------- Original-Nachricht --------", "original-message-separator"),
    ("----- Original Nachricht ----", "original-message-separator"),
    ("-------- Message d'origine --------", "original-message-separator"),
    ("---------- Forwarded message ---------", "forward-separator"),
    ("Begin forwarded message:", "forward-separator"),
    ("Anfang der weitergeleiteten Nachricht:", "forward-separator"),
    ("-------- Weitergeleitete Nachricht --------", "forward-separator"),
]

OLD_MESSAGE = """\
Von: Postdesk Support <support@example.com>
Datum: 3. März 2025 um 10:00:00 MEZ
Betreff: Drucker druckt nicht
An: max@example.de

Hallo Herr Mustermann,
bitte installieren Sie das Update.
"""


@pytest.mark.parametrize(
    ("body", "text", "rule"),
    [
        pytest.param(OUTLOOK_DE, REPLY, "original-message-separator", id="outlook-de"),
        pytest.param(OUTLOOK_DE_UNDERSCORES, REPLY, "outlook-header-block", id="outlook-de-underscores"),
        pytest.param(OUTLOOK_EN, REPLY_EN, "outlook-header-block", id="outlook-en"),
        pytest.param(GMAIL_BOLD_OUTLOOK_BLOCK, REPLY_EN, "outlook-header-block", id="outlook-bold-keys"),
        pytest.param(GMAIL_EN, REPLY_EN, "quote-header-en", id="gmail-en"),
        pytest.param(GMAIL_EN_WRAPPED, REPLY_EN, "quote-header-en", id="gmail-en-wrapped"),
        pytest.param(GMAIL_DE, REPLY, "quote-header-de", id="gmail-de-wrapped-address"),
        pytest.param(GMAIL_DE_WRAPPED_BEFORE_VERB, REPLY, "quote-header-de", id="gmail-de-wrapped-verb"),
        pytest.param(GMAIL_DE_NAME_FIRST, REPLY, "quote-header-de", id="gmail-de-name-first"),
        pytest.param(THUNDERBIRD_DE, REPLY, "quote-header-de", id="thunderbird-de"),
        pytest.param(NAME_SCHRIEB, REPLY, "quote-header-de", id="name-schrieb"),
        pytest.param(APPLE_MAIL_EN, REPLY_EN, "quoted-lines", id="apple-mail-quoted-header"),
        pytest.param(IPHONE_DE, "Passt, danke!", "mobile-signature", id="iphone-de"),
        pytest.param(IPHONE_EN, "Works now, thanks!", "mobile-signature", id="iphone-en"),
    ],
)
def test_reply_text_is_cut_before_the_history_when_clients_quote(body: str, text: str, rule: str) -> None:
    """Each client's quote marker ends the visible text; the reply above stays exact."""
    result = visible_text(body)
    assert (result.text, result.rule) == (text, rule)


@pytest.mark.parametrize(("header", "rule"), FOREIGN_HEADERS, ids=[r for _h, r in FOREIGN_HEADERS])
def test_reply_text_is_cut_when_the_quote_header_is_localised(header: str, rule: str) -> None:
    """Quote headers of French, Dutch, Spanish, Italian, Portuguese and other clients are recognised."""
    body = f"Merci, ça marche.\n\n{header}\n\n> Bonjour,\n> voici la mise à jour.\n"
    assert visible_text(body) == VisibleText("Merci, ça marche.", rule, body)


@pytest.mark.parametrize(("separator", "rule"), SEPARATORS, ids=[s for s, _r in SEPARATORS])
def test_reply_text_is_cut_when_a_separator_line_starts_the_history(separator: str, rule: str) -> None:
    """Original-message and forward separators end the text and are not part of it."""
    body = f"Siehe unten, bitte prüfen.\n\n{separator}\n{OLD_MESSAGE}"
    result = visible_text(body)
    assert (result.text, result.rule) == ("Siehe unten, bitte prüfen.", rule)


@pytest.mark.parametrize(
    ("body", "text", "rule"),
    [
        pytest.param("Hello\n\nThanks\n-- \nAnna Smith\nExample Ltd", "Hello\n\nThanks", "signature-dash",
                     id="rfc3676-delimiter"),
        pytest.param("Hello\n--\nAnna Smith", "Hello", "signature-dash", id="delimiter-without-space"),
        pytest.param("Hello\n\nGesendet von Mail für Windows", "Hello", "mobile-signature", id="mail-for-windows"),
        pytest.param("Hello\n\nSent from Outlook for iOS", "Hello", "mobile-signature", id="outlook-ios"),
        pytest.param("Hello\n\nGet Outlook for Android<https://aka.ms/ghei36>", "Hello", "mobile-signature",
                     id="outlook-android-link"),
        pytest.param("Hello\n\nSent from my Galaxy S23", "Hello", "mobile-signature", id="android-device"),
        pytest.param("Hi,\n\nwe are fine.\n\nThanks,\nAlex", "Hi,\n\nwe are fine.\n\nThanks,\nAlex", "none",
                     id="sign-off-kept"),
        pytest.param("Steps:\n- open the app\n- press sync\n- wait", "Steps:\n- open the app\n- press sync\n- wait",
                     "none", id="dash-list-kept"),
        pytest.param("Run it with the -- separator, e.g. tool -- file.txt\n--not a delimiter",
                     "Run it with the -- separator, e.g. tool -- file.txt\n--not a delimiter", "none",
                     id="double-dash-inside-line"),
        pytest.param("I sent from my iPhone the photos yesterday, as the support asked me to do.",
                     "I sent from my iPhone the photos yesterday, as the support asked me to do.", "none",
                     id="mobile-words-in-a-sentence"),
    ],
)
def test_signature_is_cut_conservatively_when_a_delimiter_or_mobile_line_appears(
    body: str, text: str, rule: str
) -> None:
    """Only the RFC 3676 delimiter and whole mobile footer lines start a signature."""
    result = visible_text(body)
    assert (result.text, result.rule) == (text, rule)


def test_new_text_between_quotes_is_kept_when_the_reply_is_interleaved() -> None:
    """Answers written between quoted lines are kept, with the quote they answer."""
    body = (
        "Hallo,\n\nAntworten stehen unten.\n\n"
        "Am 03.03.2025 um 10:00 schrieb Postdesk Support <support@example.com>:\n"
        "> Welche Version ist installiert?\n\n"
        "Version 4.2.\n\n"
        "> Tritt der Fehler auch im abgesicherten Modus auf?\n\n"
        "Nein, dort nicht.\n\n"
        "> Viele Grüße\n> Support\n"
    )
    expected = body.split("\n\n> Viele Grüße")[0]
    assert visible_text(body) == VisibleText(expected, "quoted-lines", body)


def test_quote_is_kept_when_it_is_followed_by_an_answer_without_header() -> None:
    """A customer quoting one sentence to answer it keeps both."""
    body = "> Is the printer connected by USB?\n\nNo, over the network."
    assert visible_text(body) == VisibleText(body, "none", body)


def test_wrapped_quote_line_stays_in_the_quote_when_the_client_broke_it() -> None:
    """A quoted line wrapped without its '>' does not count as new text."""
    body = (
        "Danke!\n\nOp 3 mrt. 2025 10:00 schreef Support <support@example.com>:\n"
        "> Beste klant, de update staat klaar in het portaal, log in en klik op\n"
        "installeren.\n>\n"
    )
    assert visible_text(body).text == "Danke!"


def test_header_and_quote_are_dropped_when_the_reply_is_written_below_them() -> None:
    """Bottom-posting: a quote header on the first line and its quote go, the answer below stays."""
    body = (
        "On Mon, 3 Mar 2025 at 10:00, Postdesk Support <support@example.com> wrote:\n"
        "> Does the update help?\n>\n> Support\n\nYes, everything works again.\n"
    )
    assert visible_text(body) == VisibleText("Yes, everything works again.", "quote-header-en", body)


def test_text_above_a_wrapped_header_stays_when_there_is_no_blank_line() -> None:
    """The line right above a two-line header is the customer's, not part of the header."""
    body = (
        "Thanks, will do.\nOn Mon, Mar 3, 2025 at 10:00 AM Postdesk Support <\n"
        "support@example.com> wrote:\n> Please reboot.\n"
    )
    assert visible_text(body).text == "Thanks, will do."


@pytest.mark.parametrize(
    "line",
    [
        "On Monday the printer stopped working again.",
        "On 3 March I wrote to your colleague about it, without an answer",
        "Am Montag hat der Drucker wieder nicht funktioniert.",
        "From: the logs I see error 42",
        "Am 3. März schrieb ich Ihnen Folgendes:",
        "Am 03.03.2025 schrieb ich Ihnen:",
        "On 3 March 2025 at 10:00 I wrote:",
        "Get mail working again, please.",
        "Please write to <support24@example.com>:",
    ],
)
def test_ordinary_lines_are_kept_when_they_only_look_like_headers(line: str) -> None:
    """Sentences that begin like a quote header are customer text."""
    body = f"Hello,\n\n{line}\n\nRegards,\nMax"
    assert visible_text(body) == VisibleText(body, "none", body)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param("----- BEGIN LOG -----\n2025-03-03 10:00:01 ERROR disk full\n----- END LOG -----", id="log"),
        pytest.param("Datum: 12.03.2025\nVon: Hamburg\nNach: Berlin", id="travel-request"),
        pytest.param("Subject: my invoice\nFrom: accounting", id="two-keys"),
    ],
)
def test_customer_blocks_are_kept_when_they_resemble_separators_or_headers(block: str) -> None:
    """Pasted logs and key-value lists without mail headers are the customer's text."""
    body = f"Hello,\n\n{block}\n\nPlease help.\nMax"
    assert visible_text(body) == VisibleText(body, "none", body)


def test_unknown_language_separator_is_cut_when_mail_headers_follow_it() -> None:
    """A dash-framed line in any language counts as a separator when headers with an address follow."""
    body = (
        "Bilginize.\n\n-------- İletilen İleti --------\nKonu: \tFatura\n"
        "Kimden: \tAyşe <ayse@example.com>\nKime: \tsupport@example.com\n\nMerhaba,\n"
    )
    assert visible_text(body) == VisibleText("Bilginize.", "original-message-separator", body)


def test_signature_framed_by_underscores_goes_when_a_quote_header_follows() -> None:
    """A short signature between underscore lines above the quote is cut with it."""
    body = (
        "Passt so.\n\nGruß - Thomas\n______________________________\nThomas Beispiel\nBeispiel GmbH\n\n"
        "Sent via mobile device\n______________________________\n\n"
        "Am 03.03.2025 um 10:00 schrieb Support <support@example.com>:\n\nHallo Thomas,\n"
    )
    assert visible_text(body).text == "Passt so.\n\nGruß - Thomas"


def test_underscore_line_stays_when_long_customer_text_follows_it() -> None:
    """An underscore line above real text is a separator the customer typed, not a signature."""
    text = (
        "Summary:\n______________________________\n"
        "The printer fails every morning when the first job comes from the accounting PC."
    )
    body = text + "\n\nOn Mon, 3 Mar 2025 at 10:00, Support <support@example.com> wrote:\n> Hello"
    assert visible_text(body).text == text


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("---------- Forwarded message ---------\n" + OLD_MESSAGE, id="gmail-forward"),
        pytest.param("> Anfang der weitergeleiteten Nachricht:\n>\n> Von: a@example.com\n>\n> Text\n",
                     id="apple-forward-quoted"),
        pytest.param("> only a quote, nothing else\n", id="quote-only"),
        pytest.param("Von: Postdesk <support@example.com>\nGesendet: Montag, 3. März 2025\n"
                     "Betreff: Info\n\nText", id="outlook-block-at-top"),
    ],
)
def test_full_body_is_kept_when_cutting_would_leave_nothing(body: str) -> None:
    """A forward-only or quote-only mail keeps its whole body instead of becoming empty."""
    result = visible_text(body)
    assert result == VisibleText(body.strip(), "empty-kept-full", body)


@pytest.mark.parametrize("plain", [None, "", "   \n\t\n"])
def test_text_is_empty_when_the_body_is_empty(plain: str | None) -> None:
    """Empty or whitespace-only bodies give empty text and rule 'none'."""
    result = visible_text(plain, None)
    assert (result.text, result.rule) == ("", "none")


def test_line_endings_are_normalised_when_the_body_uses_crlf() -> None:
    """CRLF bodies give LF text in both text and full_text."""
    body = "Danke!\r\n\r\nAm 03.03.2025 um 10:00 schrieb Support <support@example.com>:\r\n> Hallo\r\n"
    result = visible_text(body)
    assert (result.text, result.full_text) == ("Danke!", body.replace("\r\n", "\n"))


def test_long_quote_is_cut_quickly_when_the_body_is_800_kb() -> None:
    """An 800 KB quoted history is handled well within a second."""
    quote = "> " + "this line was quoted many times over in a long thread " * 2 + "\n"
    body = GMAIL_EN + quote * (800_000 // len(quote))
    began = time.perf_counter()
    result = visible_text(body)
    assert time.perf_counter() - began < 1.0
    assert result.text == REPLY_EN


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("x" * 1_000_000, id="one-long-line"),
        pytest.param(("On 3 Mar 2025 wrote wrote wrote " * 9 + "x:\n") * 4000, id="header-like-lines"),
        pytest.param("From: a\nTo: b\n" * 50_000, id="header-keys"),
        pytest.param("> q\nanswer\n" * 60_000, id="interleaved-everywhere"),
    ],
)
def test_pathological_bodies_finish_quickly_when_they_are_1_mb(body: str) -> None:
    """No rule backtracks badly: about 1 MB of adversarial text takes under a second."""
    began = time.perf_counter()
    assert visible_text(body).text
    assert time.perf_counter() - began < 1.0


# --- HTML ----------------------------------------------------------------------

GMAIL_HTML = """<div dir="ltr">Hi,<div><br></div><div>the update fixed it, thanks!</div>
<div><br></div><div>Best,</div><div>Anna</div></div><br><div class="gmail_quote">
<div dir="ltr" class="gmail_attr">On Mon, 3 Mar 2025 at 10:00, Postdesk Support &lt;<a
href="mailto:support@example.com">support@example.com</a>&gt; wrote:<br></div>
<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">Hello Anna,<br>please install the
update.</blockquote></div>"""

OUTLOOK_WEB_HTML = """<html><head><style>p {margin:0}</style></head><body dir="ltr">
<div style="font-family:Calibri">Hallo,</div><div><br></div>
<div>das Update hat geholfen, danke!</div><div><br></div><div>Viele Grüße<br>Max Mustermann</div>
<div id="appendonsend"></div><hr style="display:inline-block;width:98%">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>Von:</b> Postdesk Support
&lt;support@example.com&gt;<br><b>Gesendet:</b> Montag, 3. März 2025 10:00<br><b>An:</b> Max
Mustermann<br><b>Betreff:</b> AW: Drucker</font><div>&nbsp;</div></div>
<div>Hallo Herr Mustermann, bitte installieren Sie das Update.</div></body></html>"""

OUTLOOK_DESKTOP_HTML = """<html><head><meta name=Generator content="Microsoft Word 15">
<style><!-- p.MsoNormal {margin:0cm;} --></style></head><body lang=DE>
<div class=WordSection1><p class=MsoNormal>Hallo,<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>das Update hat geholfen, danke!<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Viele Grüße<o:p></o:p></p><p class=MsoNormal>Max Mustermann<o:p></o:p></p>
<div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b>Von:</b> Postdesk Support &lt;support@example.com&gt; <br><b>Gesendet:</b>
Montag, 3. März 2025 10:00<br><b>An:</b> Max Mustermann &lt;max@example.de&gt;<br><b>Betreff:</b>
AW: Drucker<o:p></o:p></p></div><p class=MsoNormal>Hallo Herr Mustermann,<o:p></o:p></p></div></body></html>"""

APPLE_MAIL_HTML = """<html><body style="word-wrap: break-word;">Hi,<div><br></div><div>the update fixed it,
thanks!</div><div><br></div><div>Best,</div><div>Anna<br><div><br><blockquote type="cite"><div>On 3 Mar
2025, at 10:00, Postdesk Support &lt;support@example.com&gt; wrote:</div><br><div><div>Hello Anna,</div>
</div></blockquote></div><br></div></body></html>"""

THUNDERBIRD_HTML = """<html><head><meta http-equiv="content-type" content="text/html; charset=UTF-8">
</head><body><p>Hi,</p><p>the update fixed it, thanks!</p><p>Best,<br>Anna<br></p>
<div class="moz-cite-prefix">On 03.03.25 10:00, Postdesk Support wrote:<br></div>
<blockquote type="cite" cite="mid:abc@example.com">Hello Anna,<br></blockquote></body></html>"""

YAHOO_HTML = """<html><body><div class="ydp1"><div>Hi,</div><div><br></div><div>the update fixed it,
thanks!</div><div><br></div><div>Best,</div><div>Anna</div></div><div id="yahoo_quoted_123"
class="yahoo_quoted"><div>On Monday, 3 March 2025, 10:00:00 CET, Postdesk Support
&lt;support@example.com&gt; wrote:</div><div><br></div><div>Hello Anna,</div></div></body></html>"""

GMX_HTML = """<html><head></head><body><div style="font-family: Verdana"><div>Hallo,</div>
<div>&nbsp;</div><div>das Update hat geholfen, danke!</div><div>&nbsp;</div><div>Viele Gr&uuml;&szlig;e</div>
<div>Max Mustermann</div><div>&nbsp;<div name="quote" style="margin:10px 5px 5px 10px">
<div><b>Gesendet:</b>&nbsp;Montag, 03. M&auml;rz 2025 um 10:00 Uhr<br/><b>Von:</b>&nbsp;support@example.com
</div><div name="quoted-content">Hallo Herr Mustermann</div></div></div></div></body></html>"""

GMAIL_FORWARD_HTML = """<div dir="ltr"><br><br><div class="gmail_quote"><div dir="ltr"
class="gmail_attr">---------- Forwarded message ---------<br>From: <strong>Anna</strong>
&lt;anna@example.com&gt;<br>Date: Mon, 3 Mar 2025 at 10:00<br>Subject: Printer<br></div><br>
<div dir="ltr">The printer is offline.</div></div></div>"""

REPLY_EN_HTML_TEXT = "Hi,\n\nthe update fixed it, thanks!\n\nBest,\nAnna"


@pytest.mark.parametrize(
    ("html", "text", "rule"),
    [
        pytest.param(GMAIL_HTML, REPLY_EN_HTML_TEXT, "html-quote-block", id="gmail"),
        pytest.param(OUTLOOK_WEB_HTML, REPLY, "html-quote-block", id="outlook-web"),
        pytest.param(OUTLOOK_DESKTOP_HTML, REPLY, "outlook-header-block", id="outlook-desktop"),
        pytest.param(APPLE_MAIL_HTML, REPLY_EN_HTML_TEXT, "html-quote-block", id="apple-mail"),
        pytest.param(THUNDERBIRD_HTML, REPLY_EN_HTML_TEXT, "html-quote-block", id="thunderbird"),
        pytest.param(YAHOO_HTML, REPLY_EN_HTML_TEXT, "html-quote-block", id="yahoo"),
        pytest.param(GMX_HTML, REPLY, "html-quote-block", id="gmx-webde"),
    ],
)
def test_html_quote_containers_are_dropped_when_there_is_no_plain_part(html: str, text: str, rule: str) -> None:
    """HTML-only replies lose the clients' quote containers and keep the reply exactly."""
    result = visible_text(None, html)
    assert (result.text, result.rule) == (text, rule)
    assert result.full_text == html_to_text(html)


def test_html_full_text_is_kept_when_the_mail_is_only_a_forward() -> None:
    """An HTML forward whose content sits in the quote container is not emptied."""
    result = visible_text(None, GMAIL_FORWARD_HTML)
    assert result.rule == "empty-kept-full"
    assert result.text.startswith("---------- Forwarded message ---------\nFrom: Anna <anna@example.com>")
    assert result.text.endswith("The printer is offline.")


def test_plain_part_is_used_when_the_message_has_both_parts() -> None:
    """The plain part wins; the HTML part is only a fallback."""
    result = visible_text(GMAIL_EN, GMAIL_HTML)
    assert (result.text, result.full_text) == (REPLY_EN, GMAIL_EN)


def test_html_part_is_used_when_the_plain_part_is_blank() -> None:
    """A blank plain alternative does not hide the HTML body."""
    assert visible_text(" \r\n", GMAIL_HTML).text == REPLY_EN_HTML_TEXT


@pytest.mark.parametrize(
    ("html", "text"),
    [
        pytest.param("<p>One</p><p>Two</p>", "One\n\nTwo", id="paragraphs"),
        pytest.param("Line<br>next<br/>last", "Line\nnext\nlast", id="breaks"),
        pytest.param("<div>a</div><div><br></div><div>b</div>", "a\n\nb", id="gmail-blank-div"),
        pytest.param("<p class=MsoNormal>a</p><p class=MsoNormal>b</p>", "a\nb", id="outlook-lines"),
        pytest.param("<ul><li>one</li><li>two</li></ul><ol><li>first</li><li>second</li></ol>",
                     "- one\n- two\n\n1. first\n2. second", id="lists"),
        pytest.param("<ul><li>a<ul><li>b</li></ul></li></ul>", "- a\n  - b", id="nested-list"),
        pytest.param("<head><title>T</title><style>p{color:red}</style></head><body><script>x()</script>"
                     "Hi</body>", "Hi", id="head-style-script-dropped"),
        pytest.param("Fish &amp; chips &lt;3&gt; caf&eacute;&nbsp;ok &#8364;", "Fish & chips <3> café ok €",
                     id="entities"),
        pytest.param("<p>a</p><blockquote>q1<br>q2<blockquote>qq</blockquote></blockquote><p>b</p>",
                     "a\n\n> q1\n> q2\n>\n> > qq\n\nb", id="blockquote"),
        pytest.param("<pre>  indented\n    code</pre>", "  indented\n    code", id="pre"),
        pytest.param("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc", id="table"),
        pytest.param("  spaced \n  out   words  ", "spaced out words", id="whitespace"),
        pytest.param("<!-- hidden --><div>shown</div>", "shown", id="comment"),
    ],
)
def test_html_is_readable_text_when_converted(html: str, text: str) -> None:
    """Block elements, lists, quotes and entities convert to plain text as a reader expects."""
    assert html_to_text(html) == text


def test_html_conversion_is_fast_when_the_body_is_large() -> None:
    """Half a megabyte of typical mail HTML converts well within a second."""
    html = "<div>" + "<p>Hello <b>there</b>, see <a href='https://example.com'>this</a>.</p>\n" * 6000 + "</div>"
    began = time.perf_counter()
    assert visible_text(None, html).text.startswith("Hello there, see this.")
    assert time.perf_counter() - began < 1.0


_LINES = st.sampled_from([
    "", "Hello,", "Thanks,", "Max", "-- ", "--", "> quoted", ">", "Sent from my iPhone",
    "On Mon, 3 Mar 2025 at 10:00, Support <support@example.com> wrote:",
    "Am 03.03.2025 um 10:00 schrieb Support <support@example.com>:", "-----Original Message-----",
    "Von: Support <support@example.com>", "Gesendet: Montag, 3. März 2025 10:00", "Betreff: Test",
    "________________________________", "support@example.com> wrote:", "- item",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_LINES, st.text(max_size=40)), max_size=30))
def test_visible_text_only_cuts_whole_lines_when_given_any_body(lines: list[str]) -> None:
    """Whatever the body, the text is non-empty for a non-blank body, made of its own lines,
    and the rule is a documented id."""
    body = "\n".join(lines)
    result = visible_text(body)
    assert result.rule in RULES
    if body.strip():
        assert result.text.strip()
    full_lines = {line.rstrip() for line in result.full_text.split("\n")}
    assert all(line in full_lines for line in result.text.split("\n"))
