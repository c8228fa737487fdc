"""Reply-text extraction: what the customer wrote, without the quoted history.

Stage: a pure helper of the parse stage. Input is the decoded plain-text and/or
HTML body of one message; output is a :class:`VisibleText`. No I/O here, no
clock, no logging of bodies.

How the visible text is found, in this order:

1. HTML only (no usable plain part): known quote containers are dropped before
   converting to text (Gmail ``div.gmail_quote``, Outlook ``#appendonsend`` /
   ``#divRplyFwdMsg`` and everything after, Yahoo ``yahoo_quoted``, Apple Mail
   and Thunderbird ``blockquote type=cite`` / ``moz-cite-prefix``, GMX and
   WEB.DE ``div name=quote``); other ``<blockquote>`` become ``>`` lines.
2. The first quote marker in reading order ends the text: a quote header
   (``On … wrote:``, ``Am … schrieb …:`` and other languages, also wrapped over
   up to three lines), a separator line (``-----Original Message-----``,
   ``---------- Forwarded message ---------`` …), an Outlook header block
   (``Von:``/``Gesendet:``/``An:``/``Betreff:`` …) or a trailing block of
   ``>`` lines. Blank and rule lines above it go too, and so does a short
   signature set off by an underscore line right above it.
3. Customer text is never dropped between quotes: a ``>`` block followed by
   new text is kept (interleaved reply), together with its header.
   A reply header on the very first line followed by a ``>`` quote is
   bottom-posting: header and quote are dropped, the text below is kept.
4. Signatures, conservatively: an RFC 3676 delimiter line (``-- ``) and
   whole-line mobile footers ("Sent from my iPhone", "Von meinem iPhone
   gesendet", "Get Outlook for iOS" …). Sign-offs such as "Thanks,\\nAlex"
   stay.
5. If nothing is left, the full body is returned (rule ``empty-kept-full``),
   so a forward-only or quote-only mail never becomes an empty ticket.

Rule ids (stored in the audit trail, so they are stable): ``none``,
``quote-header-{en,de,fr,nl,es,it,pt,other}``, ``outlook-header-block``,
``original-message-separator``, ``forward-separator``, ``quoted-lines``,
``signature-dash``, ``mobile-signature``, ``html-quote-block``,
``empty-kept-full``. ``rule`` names the cut that decided where the visible
text ends (the earliest one); a dropped leading header, or else dropped HTML
quote containers, count when no other rule cut.

The rules are our own rather than a layer over email-reply-parser: on the
shared corpus they meet 110 of 118 visible-text checks, email-reply-parser
alone 66 and with these rules on top 102 (it drops ``>`` lines everywhere,
also the quote an interleaved answer refers to).

Every pattern works on single lines of bounded length (a header is at most
three lines, 400 characters), so the work is linear in the size of the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["VisibleText", "html_to_text", "visible_text"]


@dataclass(frozen=True)
class VisibleText:
    """The new text of a message and why it was cut there.

    :ivar text: what the customer wrote, quoted history and separators
        removed, without surrounding blank lines; empty only for an empty body.
    :ivar rule: stable kebab-case id of the rule that decided the cut.
    :ivar full_text: the whole body as text (HTML converted when there was no
        plain part), line endings normalised to ``\\n``.
    """

    text: str
    rule: str
    full_text: str


def visible_text(plain: str | None, html: str | None = None) -> VisibleText:
    """Return the visible reply text of a message body.

    The plain part is used when it has any text; the HTML part only otherwise.

    >>> visible_text("Works now, thanks!\\n\\nOn Mon, 3 Mar 2025 at 10:00, Support"
    ...              " <help@example.com> wrote:\\n> Please try again.").text
    'Works now, thanks!'
    """
    if plain and plain.strip():
        full = _normalise(plain)
        return _extract(full, full, "none")
    if html and html.strip():
        full, trimmed = _convert_html(html)
        pre_rule = "html-quote-block" if trimmed != full else "none"
        return _extract(trimmed, full, pre_rule)
    return VisibleText("", "none", _normalise(plain or ""))


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")


def _extract(text: str, full: str, pre_rule: str) -> VisibleText:
    lines = [line.rstrip() for line in text.split("\n")]
    start, end, rule = _find_quote_cut(lines)
    sig_end, sig_rule = _find_signature(lines, start, end)
    if sig_rule:
        end, rule = sig_end, sig_rule
    visible = _strip_blank_lines(lines[start:end])
    if not visible:
        kept = _strip_blank_lines([line.rstrip() for line in full.split("\n")])
        return VisibleText(kept, "empty-kept-full" if kept else "none", full)
    return VisibleText(visible, rule or pre_rule, full)


def _strip_blank_lines(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


# --- quote markers -----------------------------------------------------------

_MAX_HEADER_LINE = 300
_MAX_HEADER_CHARS = 400
_QUOTE_LINE = re.compile(r"^[ \t]{0,3}>")
_RULE_LINE = re.compile(r"^\s*[-_=*~#+]{3,}\s*$")
_UNDERSCORE_LINE = re.compile(r"^\s*_{10,}\s*$")
_DIGIT = re.compile(r"\d")
_CONTINUATION_START = re.compile(r"^\s*(?:[<(>]|[^\s@]+@)")  # "<a@b.c>" or "a@b.c>" wrapped
_WRAPPED_ADDRESS_END = re.compile(r"^>\s*:$")  # Gmail wraps "<a@b.c\n>:"
_TIME = re.compile(r"\d{1,2}:\d{2}|\b\d{1,2}h\d{2}\b|\bklo?\.?\s\d{1,2}\.\d{2}\b")  # 10:00 10h00 kl. 10.00
_FIRST_PERSON = re.compile(r"\bschrieb (?:ich|wir)\b|\b(?:I|[Ww]e) wrote\b")
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")

# Anchored reply headers: opener … verb; they need a time, an address or a year.
_ANCHORED_HEADERS = [
    ("quote-header-en", re.compile(r"^On\s.{1,300}?\swrote\s*:?$")),
    ("quote-header-de", re.compile(r"^Am\s.{1,300}?\sschrieb\s.{0,200}:$")),
    ("quote-header-de", re.compile(r"^Zitat von\s.{1,300}:$")),  # Horde webmail
    ("quote-header-en", re.compile(r"^Quoting\s.{1,300}:$")),
    ("quote-header-fr", re.compile(r"^Le\s.{1,300}?\sa\s+écrit\s*:$")),
    ("quote-header-nl", re.compile(r"^Op\s.{1,300}?\s(?:schreef|geschreven)\b.{0,200}:$")),
    ("quote-header-es", re.compile(r"^El\s.{1,300}?\sescribió\s*:$")),
    ("quote-header-it", re.compile(r"^Il\s.{1,300}?\sha\s+scritto\s*:$")),
    ("quote-header-pt", re.compile(r"^Em\s.{1,300}?\sescreveu\s*:$")),
    ("quote-header-other", re.compile(r"^(?:Den|Dnia)\s.{1,300}?\s(?:skrev|napisał\(a\)).{0,200}:$")),
]
_VERB_RULES = {
    "wrote": "quote-header-en", "schrieb": "quote-header-de", "geschrieben": "quote-header-de",
    "a écrit": "quote-header-fr", "schreef": "quote-header-nl", "escribió": "quote-header-es",
    "ha scritto": "quote-header-it", "escreveu": "quote-header-pt",
}
_VERBS = "|".join([
    "wrote", "schrieb", "geschrieben", "a écrit", "schreef", "escribió", "ha scritto", "escreveu",
    "skrev", "kirjoitti", r"napisał\(a\)", "napisał", "napisała", "написал", "написала", "написав",
    "írta", "yazdı", "napsal", "napísal", "scrise",
])
# Unanchored: "… <verb> …:" anywhere; needs a digit and a time or an address.
_VERB_HEADER = re.compile(r"^.{0,300}?(?<!\w)(" + _VERBS + r")(?!\w).{0,200}:$")
# "Bob Smith wrote:" without a date: only when a ">" quote follows.
_NAME_ONLY_HEADER = re.compile(r"^\S.{0,120}?\s(" + _VERBS + r")\s*:$")
# Time, name and "<address>:" with no verb (Russian clients, mail.ru, Crisp).
_ADDRESS_HEADER = re.compile(r"^.{0,300}?<[^<>\s@]+@[^<>\s]+\s*>\s*:$")
_GMAIL_ISO_HEADER = re.compile(r"^\d{4}-\d{2}-\d{2}\s+\d{1,2}:\d{2}\s+GMT[+-]\d{1,2}:?\d{2}\b")

_ORIGINAL_PHRASES = {
    "original message", "ursprüngliche nachricht", "original-nachricht", "original nachricht",
    "message d'origine", "message original", "mensaje original", "messaggio originale",
    "oorspronkelijk bericht", "mensagem original", "oprindelig besked", "opprinnelig melding",
    "ursprungligt meddelande", "alkuperäinen viesti", "wiadomość oryginalna", "původní zpráva",
    "исходное сообщение", "eredeti üzenet", "reply message",
}
_FORWARD_PHRASES = {
    "forwarded message", "begin forwarded message", "weitergeleitete nachricht",
    "anfang der weitergeleiteten nachricht", "message transféré", "début du message réexpédié",
    "début du message transféré", "mensaje reenviado", "messaggio inoltrato",
    "inizio messaggio inoltrato", "doorgestuurd bericht", "mensagem encaminhada",
    "videresendt meddelelse", "videresendt melding", "vidarebefordrat meddelande",
    "välitetty viesti", "wiadomość przekazana dalej", "přeposlaná zpráva",
    "пересылаемое сообщение", "továbbított üzenet", "forwarded email",
    "treść przekazanej wiadomości", "preposlaná správa",
}
_DASH_WRAPPED = re.compile(r"^\s*-{4,}\s*(\S.{1,60}?)\s*-{4,}")

# Outlook-style header blocks; each key maps to what it names.
_HEADER_KEY = re.compile(r"^\s*\*{0,2}([^\W\d_][\w .()/-]{0,24}?)\s*\*{0,2}\s*:(?!//)")
_KEY_KINDS = {
    "from": ("from", "von", "de", "van", "da", "fra", "från", "od", "от", "feladó", "nadawca",
             "lähettäjä", "afzender", "remitente", "expéditeur"),
    "sent": ("sent", "gesendet", "envoyé", "envoyé le", "verzonden", "enviado", "enviada",
             "inviato", "skickat", "sendt", "wysłano", "отправлено", "elküldve",
             "lähetetty", "message du", "date", "datum", "dátum", "dato", "fecha", "data", "дата"),
    "to": ("to", "an", "à", "a", "aan", "para", "til", "till", "do", "кому", "címzett",
           "vastaanottaja", "komu", "pre", "adresat", "cc", "kopie", "kopie (cc)", "copie",
           "copie à", "cópia", "copia", "kópia",
           "kopia", "копия", "másolat", "reply-to", "antwort an"),
    "subject": ("subject", "betreff", "objet", "onderwerp", "asunto", "oggetto", "assunto",
                "ämne", "emne", "temat", "тема", "tárgy", "aihe", "sujet", "predmet", "předmět"),
}
_ANY_HEADER_KEY = re.compile(r"^\s*\*{0,2}[^\W\d_][^:\uff1a]{0,24}[:\uff1a]\s*\S")  # U+FF1A: CJK colon
_KEY_KIND = {key: kind for kind, keys in _KEY_KINDS.items() for key in keys}


def _is_quote(line: str) -> bool:
    return _QUOTE_LINE.match(line) is not None


@dataclass(frozen=True)
class _Scan:
    """A body's lines with hints computed once per line, so the costlier
    patterns only run where a marker can be."""

    lines: list[str]
    key_kinds: list[str | None]  # the _KEY_KINDS kind of a "Key: value" line
    header_ends: list[bool]  # the line can be the last line of a reply header

    @classmethod
    def of(cls, lines: list[str]) -> _Scan:
        kinds = [_header_key_kind(line) if ":" in line[:40] else None for line in lines]
        ends = [_can_end_header(line) for line in lines]
        return cls(lines, kinds, ends)


def _can_end_header(line: str) -> bool:
    """Cheap test: reply headers end with a colon (or a bare "wrote")."""
    last = line.rstrip(" -*")
    if last.endswith((":", "wrote")):
        return True
    return last[:1].isdigit() and _GMAIL_ISO_HEADER.match(last) is not None


def _find_quote_cut(lines: list[str]) -> tuple[int, int, str | None]:
    """Return ``(start, end, rule)``: the visible lines are ``lines[start:end]``."""
    n, start, i = len(lines), 0, 0
    scan = _Scan.of(lines)
    lead_rule = None
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        if _is_quote(lines[i]):
            block_end = _quote_block_end(lines, i)
            if _has_new_text(scan, block_end):
                i = block_end
                continue
            return start, _walk_back(lines, i, start), "quoted-lines"
        hit = _match_marker(scan, i)
        if hit is None:
            i += 1
            continue
        rule, kind, size = hit
        at_top = _skip_blank(lines, start) >= i
        if kind == "reply":
            after = _skip_blank(lines, i + size)
            if after < n and _is_quote(lines[after]):
                block_end = _quote_block_end(lines, after)
                if at_top:
                    start = i = block_end
                    lead_rule = rule
                    continue
                if _has_new_text(scan, block_end):
                    i = block_end
                    continue
        return start, _walk_back(lines, i, start), rule
    return start, n, lead_rule


def _skip_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _quote_block_end(lines: list[str], i: int) -> int:
    """End (exclusive) of the ``>`` block at *i*; blank lines and single lines
    wrapped by the client between two quote lines belong to it."""
    n, last, k = len(lines), i, i
    while k < n:
        if _is_quote(lines[k]):
            last = k
        elif lines[k].strip():
            wrapped = k + 1 < n and _is_quote(lines[k - 1]) and _is_quote(lines[k + 1])
            if not wrapped:
                break
        k += 1
    return last + 1


def _has_new_text(scan: _Scan, i: int) -> bool:
    """True if customer text follows at *i*, before any signature or footer."""
    lines = scan.lines
    for k in range(i, len(lines)):
        line = lines[k]
        stripped = line.strip()
        if not stripped or _is_quote(line) or _is_mobile_signature(stripped):
            continue
        if line == "--" or _UNDERSCORE_LINE.match(line) or _match_marker(scan, k):
            return False  # a signature, a list footer or the next quote
        if not _RULE_LINE.match(line):
            return True
    return False


def _walk_back(lines: list[str], cut: int, start: int) -> int:
    """Move a cut above the blank and rule lines that introduce the quote, and
    above a short signature that an underscore line sets off right before it
    (a name, then ``__________``, then title and company): at most six short
    lines, so real text below such a line is never taken."""
    while cut > start and (not lines[cut - 1].strip() or _RULE_LINE.match(lines[cut - 1])):
        cut -= 1
    seen, k = 0, cut - 1
    while k > start and seen <= 6 and len(lines[k]) <= 60:
        if _UNDERSCORE_LINE.match(lines[k]) and _skip_blank(lines, start) < k:
            cut = k
        seen += bool(lines[k].strip())
        k -= 1
    return cut


def _match_marker(scan: _Scan, i: int) -> tuple[str, str, int] | None:
    """Match a quote marker starting at line *i*: ``(rule, kind, line_count)``
    with kind ``reply`` (a quote header), ``separator`` or ``block``."""
    line = scan.lines[i]
    if _is_quote(line):
        return None
    if any(scan.header_ends[i:i + 3]) and len(line) <= _MAX_HEADER_LINE:
        reply = _match_reply_header(scan.lines, i)
        if reply:
            return reply
    separator = _match_separator(scan.lines, i)
    if separator:
        return separator, "separator", 1
    size = _header_block_size(scan, i)
    if size:
        return "outlook-header-block", "block", size
    return None


def _match_separator(lines: list[str], i: int) -> str | None:
    line = lines[i]
    if len(line) <= 80:
        core = " ".join(line.strip(" \t-_=*>").rstrip(":").split()).lower()
        if core in _FORWARD_PHRASES:
            return "forward-separator"
        if core in _ORIGINAL_PHRASES:
            return "original-message-separator"
    if "----" not in line[:40]:
        return None
    # Any other "---- words ----" line only when mail headers follow it (other
    # languages); "----- BEGIN LOG -----" above pasted text is the customer's.
    wrapped = _DASH_WRAPPED.match(line)
    if wrapped and any(c.isalpha() for c in wrapped.group(1)):
        following = _skip_blank(lines, i + 1)
        if _header_key_kind(line[wrapped.end():]) or _headers_follow(lines, following):
            return "original-message-separator"
    return None


def _headers_follow(lines: list[str], i: int) -> bool:
    """True if ``Key: value`` lines in any language, one with an address, start at *i*."""
    window = [line for line in lines[i:i + 6] if line.strip()]
    keyed = [line for line in window if _ANY_HEADER_KEY.match(line)]
    return len(keyed) >= 2 and any("@" in line for line in keyed)


def _match_reply_header(lines: list[str], i: int) -> tuple[str, str, int] | None:
    for size in (1, 2, 3):
        if i + size > len(lines):
            return None
        last_line = lines[i + size - 1]
        if not last_line.strip() or len(last_line) > _MAX_HEADER_LINE:
            return None
        if ">" in last_line[:4] and _is_quote(last_line):
            if size == 1 or not _WRAPPED_ADDRESS_END.match(last_line):
                return None
        if not _can_end_header(last_line):
            continue
        window = lines[i:i + size]
        hit = _reply_header_rule(window, lines, i + size)
        if hit is None:
            continue
        # A wrapped header that also matches from the next line on, at least
        # as surely, starts there: the line above is text, not header.
        if size > 1 and not _CONTINUATION_START.match(window[1]):
            rest = _reply_header_rule(window[1:], lines, i + size)
            if rest is not None and rest[1] >= hit[1]:
                return None
        return hit[0], "reply", size
    return None


def _reply_header_rule(window: list[str], lines: list[str], after: int) -> tuple[str, int] | None:
    """``(rule, strength)`` of the reply header in *window* (joined lines):
    strength 2 for the anchored forms, 1 for the looser ones."""
    text = " ".join(line.strip() for line in window).strip(" -*")
    if not text or len(text) > _MAX_HEADER_CHARS or _FIRST_PERSON.search(text):
        return None  # "Am 3. März 2025 schrieb ich Ihnen:" introduces the customer's text
    if len(window) == 1 and _GMAIL_ISO_HEADER.match(text):
        return "quote-header-other", 2
    # Real headers carry a time or an address; "On 3 March I wrote:" does not.
    timed = _TIME.search(text) is not None
    addressed = "@" in text
    if timed or addressed or _YEAR.search(text):
        for rule, pattern in _ANCHORED_HEADERS:
            if pattern.match(text):
                return rule, 2
    verb = _VERB_HEADER.match(text)
    if verb and (timed or addressed and _DIGIT.search(text)):
        return _VERB_RULES.get(verb.group(1), "quote-header-other"), 1
    if timed and _ADDRESS_HEADER.match(text):
        return "quote-header-other", 1
    name_only = _NAME_ONLY_HEADER.match(text)
    if name_only and len(window) == 1:
        following = _skip_blank(lines, after)
        if following < len(lines) and _is_quote(lines[following]):
            return _VERB_RULES.get(name_only.group(1), "quote-header-other"), 1
    return None


def _header_key_kind(line: str) -> str | None:
    match = _HEADER_KEY.match(line)
    if match is None:
        return None
    return _KEY_KIND.get(" ".join(match.group(1).lower().split()))


def _header_block_size(scan: _Scan, i: int) -> int:
    """Line count of an Outlook-style header block at *i*, or 0.

    A block is consecutive ``Key: value`` lines (wrapped values allowed) with a
    sender key and two other kinds, e.g. ``Von:``/``Gesendet:``/``An:``.
    """
    lines, kinds = scan.lines, scan.key_kinds
    if kinds[i] is None or (i > 0 and kinds[i - 1] is not None):
        return 0  # a block is matched from the first key line of a run
    seen: set[str] = set()
    k, n, wrapped = i, len(lines), 0
    while k < n and k - i < 12 and lines[k].strip():
        if kinds[k] is None:
            wrapped += 1
            if wrapped > 2:
                break
        else:
            seen.add(kinds[k])
            wrapped = 0
        k += 1
    # Sender plus two of date, recipient, subject: "Von: Hamburg / Datum: …"
    # in a travel request is text, a mail header block names more.
    if "from" in seen and len(seen) >= 3:
        return k - i - wrapped
    return 0


# --- signatures --------------------------------------------------------------

_MOBILE_SIGNATURES = re.compile(
    r"^(?:"
    r"sent from my \S[\w .,'®™()-]{0,40}"
    r"|(?:sent from|get) outlook for (?:ios|android|mac)\b.{0,20}"
    r"|sent from (?:mail|outlook) for windows(?: \d+)?"
    r"|sent from (?:yahoo mail|aol mobile|samsung mobile|protonmail|the \w+ app)\b.{0,25}"
    r"|sent (?:with|via) .{0,30}(?:iphone|ipad|android|blackberry|mobile|phone|app)\b.{0,20}"
    r"|von meinem .{1,40} gesendet"
    r"|gesendet von meinem .{1,40}"
    r"|gesendet (?:von|mit|über) .{0,30}"
    r"(?:iphone|ipad|android|mobil|smartphone|handy|app|mail für windows|outlook)\b.{0,20}"
    r"|(?:sendt|skickat) (?:fra|från) min .{1,30}"
    r"|envoyé (?:de|depuis) mon .{1,30}"
    r"|enviado (?:desde|do) (?:mi|meu) .{1,30}"
    r"|inviato da(?:l mio)? .{0,30}(?:iphone|ipad|android|mobile|smartphone)\b.{0,10}"
    r"|verzonden (?:vanaf|met) (?:mijn )?.{1,30}"
    r"|wysłane z (?:mojego )?.{1,30}"
    r")[.!]?$",
    re.IGNORECASE,
)
_MOBILE_FIRST_WORDS = {
    "sent", "get", "von", "gesendet", "sendt", "skickat", "envoyé", "enviado", "inviato",
    "verzonden", "wysłane",
}
_TRAILING_LINK = re.compile(r"\s*<https?://[^>]{1,200}>$")


def _is_mobile_signature(stripped: str) -> bool:
    if len(stripped) > 120 or stripped[:12].split(" ", 1)[0].lower() not in _MOBILE_FIRST_WORDS:
        return False
    candidate = _TRAILING_LINK.sub("", stripped)
    return len(candidate.split()) <= 9 and _MOBILE_SIGNATURES.match(candidate) is not None


def _find_signature(lines: list[str], start: int, end: int) -> tuple[int, str | None]:
    """First signature cut in ``lines[start:end]`` that leaves text above it."""
    has_text = False
    for k in range(start, end):
        line = lines[k]
        stripped = line.strip()
        # RFC 3676 4.3 "-- " (right-stripped here; some clients drop the space anyway)
        if has_text and line == "--":
            return k, "signature-dash"
        if has_text and _is_mobile_signature(stripped):
            return k, "mobile-signature"
        has_text = has_text or bool(stripped)
    return end, None


# --- HTML --------------------------------------------------------------------

_SKIPPED_TAGS = {"script", "style", "title", "template", "noscript"}
_VOID_TAGS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr",
}
_PARAGRAPH_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "pre", "blockquote",
}
_BLOCK_TAGS = _PARAGRAPH_TAGS | {
    "address", "article", "aside", "center", "dd", "details", "div", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "nav",
    "section", "summary", "tbody", "tfoot", "thead", "tr",
}
# Everything from one of these on is the quoted message (Outlook web/new Outlook).
_QUOTE_TAIL_IDS = {
    "appendonsend", "divrplyfwdmsg", "mail-editor-reference-message-container", "stopspelling",
}
_QUOTE_CLASSES = {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "moz-cite-prefix"}
_SPACE_RUN = re.compile(r"[ \t\n\r\f]+")  # HTML white space; NBSP is not collapsed
_BLANK_RUN = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Convert an HTML body to readable plain text.

    Block elements and ``<br>`` become line breaks, list items get ``- `` or
    ``1. ``, ``<blockquote>`` lines get ``> ``, and ``<head>`` metadata,
    ``<style>`` and ``<script>`` are dropped. Entities are decoded.

    >>> html_to_text("<p>Hello&nbsp;Anna,</p><ul><li>one</li><li>two</li></ul>")
    'Hello Anna,\\n\\n- one\\n- two'
    """
    return _convert_html(html)[0]


def _convert_html(html: str) -> tuple[str, str]:
    """Return ``(full_text, text_without_quote_containers)``."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.full.result(), parser.trimmed.result()


class _TextBuilder:
    """Builds text line by line; ``>`` prefixes follow the blockquote depth."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.depth_at_start = 0
        self.marker_only = False

    def text(self, data: str, depth: int, keep_space: bool = False) -> None:
        if not self.current:
            data = data if keep_space else data.lstrip(" ")
            if not data:
                return
            self.depth_at_start = depth
        self.current.append(data)
        self.marker_only = False

    def marker(self, data: str, depth: int) -> None:
        """Start a list item; its first block stays on the marker's line."""
        if self.current:
            self.end_line(depth)
        self.text(data, depth, keep_space=True)
        self.marker_only = True

    def end_line(self, depth: int) -> None:
        if not self.current:
            self.depth_at_start = depth
        text = "".join(self.current).replace("\xa0", " ").rstrip()
        prefix = "> " * self.depth_at_start
        self.lines.append((prefix + text).rstrip())
        self.current = []
        self.marker_only = False

    def block(self, depth: int, blank: bool = False) -> None:
        if self.marker_only:
            return
        if self.current:
            self.end_line(depth)
        if not blank or not self.lines:
            return
        separator = ("> " * depth).rstrip()
        if self.lines[-1].strip("> "):
            self.lines.append(separator)
        elif len(separator) < len(self.lines[-1]):
            self.lines[-1] = separator  # leaving a blockquote: a plain blank line

    def result(self) -> str:
        if self.current:
            self.end_line(self.depth_at_start)
        return _BLANK_RUN.sub("\n\n", "\n".join(self.lines)).strip("\n")


class _HtmlText(HTMLParser):
    """One pass over the HTML, writing the full text and the text without
    quote containers side by side."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.full = _TextBuilder()
        self.trimmed = _TextBuilder()
        self.skip_tag: str | None = None
        self.skip_depth = 0
        self.drop_tag: str | None = None
        self.drop_depth = 0
        self.tail_dropped = False
        self.quote_depth = 0
        self.pre_depth = 0
        self.lists: list[int | None] = []
        self.paragraph_margin = True
        self.outputs = [self.full, self.trimmed]  # just full while dropping

    def _block(self, blank: bool = False) -> None:
        for out in self.outputs:
            out.block(self.quote_depth, blank)

    def _text(self, data: str) -> None:
        for out in self.outputs:
            out.text(data, self.quote_depth, keep_space=self.pre_depth > 0)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_tag is not None:
            self.skip_depth += tag == self.skip_tag
            return
        if tag in _SKIPPED_TAGS:
            self.skip_tag, self.skip_depth = tag, 1
            return
        if self.drop_tag is not None:
            self.drop_depth += tag == self.drop_tag and tag not in _VOID_TAGS
        elif not self.tail_dropped:
            self._check_quote_container(tag, dict(attrs))
        self._open(tag, dict(attrs))

    def _check_quote_container(self, tag: str, attrs: dict[str, str | None]) -> None:
        if (attrs.get("id") or "").lower() in _QUOTE_TAIL_IDS:
            self._block()
            self.tail_dropped = True
            self.outputs = [self.full]
            return
        classes = set((attrs.get("class") or "").lower().split())
        cite = tag == "blockquote" and (attrs.get("type") or "").lower() == "cite"
        gmx = tag == "div" and (attrs.get("name") or "").lower() == "quote"
        if (classes & _QUOTE_CLASSES or cite or gmx) and tag not in _VOID_TAGS:
            self._block()
            self.drop_tag, self.drop_depth = tag, 1
            self.outputs = [self.full]

    def _open(self, tag: str, attrs: dict[str, str | None]) -> None:
        if tag == "br":
            for out in self.outputs:
                out.end_line(self.quote_depth)
        elif tag in ("td", "th"):
            self._text(" ")
        elif tag == "li":
            self._block()
            marker = "- "
            if self.lists and self.lists[-1] is not None:
                self.lists[-1] += 1
                marker = f"{self.lists[-1]}. "
            for out in self.outputs:
                out.marker("  " * max(len(self.lists) - 1, 0) + marker, self.quote_depth)
        elif tag in _BLOCK_TAGS:
            if tag == "p":
                # Outlook's "MsoNormal" paragraphs are lines: they have no margin.
                self.paragraph_margin = "msonormal" not in (attrs.get("class") or "").lower()
            self._block(blank=self._has_margin(tag))
            if tag == "hr":
                self._text("---")
                self._block()
        if tag == "blockquote":
            self.quote_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        elif tag in ("ul", "ol"):
            self.lists.append(None if tag == "ul" else 0)

    def _has_margin(self, tag: str) -> bool:
        if tag == "p":
            return self.paragraph_margin
        if tag in ("ul", "ol"):
            return not self.lists  # a nested list continues its item
        return tag in _PARAGRAPH_TAGS

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag is not None:
            self.skip_depth -= tag == self.skip_tag
            if self.skip_depth <= 0:
                self.skip_tag = None
            return
        if tag == "blockquote":
            self.quote_depth = max(self.quote_depth - 1, 0)
        elif tag == "pre":
            self.pre_depth = max(self.pre_depth - 1, 0)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag in _BLOCK_TAGS:
            self._block(blank=self._has_margin(tag))
        if self.drop_tag is not None and tag == self.drop_tag:
            self.drop_depth -= 1
            if self.drop_depth <= 0:
                self.drop_tag = None
                self.outputs = [self.full, self.trimmed]

    def handle_data(self, data: str) -> None:
        if self.skip_tag is not None:
            return
        if self.pre_depth:
            parts = data.split("\n")
            for index, part in enumerate(parts):
                if index:
                    for out in self.outputs:
                        out.end_line(self.quote_depth)
                if part:
                    self._text(part)
            return
        self._text(_SPACE_RUN.sub(" ", data))
