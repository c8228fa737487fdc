"""Sender authentication: does the From domain vouch for this message? -> :class:`AuthResult`.

Two sources, never mixed (RFC 8601 §5: consumers trust only their own authserv-id):

1. an ``Authentication-Results`` field added by our border MTA: only fields whose
   authserv-id is listed in ``[auth] trusted_authserv_ids`` count, and only the
   topmost such field (the border MTA's own); every other field, whoever wrote it,
   is ignored (read with ``authres``);
2. with no trusted field: our own DKIM verification of the raw bytes (``dkimpy``),
   with the DNS lookups going through an injected resolver, so tests need no network.

Verdicts: ``pass`` (DMARC pass, or a valid DKIM signature aligned with the From
domain), ``fail`` (DMARC fail; a signature of the From domain that does not verify;
or no valid aligned signature for a domain listed in ``dkim_required_domains``),
``temperror`` (a DNS lookup timed out) and ``none`` (nothing to go on). Without a
trusted border MTA Postdesk sees no SPF and no DMARC policy, so "none" is not a failure
unless the domain is known to sign.

Effects: DNS lookups through the resolver only. No database, no clock. Never raises on
input bytes.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import authres
import dkim
from dkim.dnsplug import get_txt

from gateway.config import AuthConfig

log = logging.getLogger(__name__)

#: ``resolver(name: bytes, timeout=…) -> bytes | None``: the TXT record of a DNS name (dkimpy's ``dnsfunc``).
Resolver = Callable[..., "bytes | None"]

_MAX_SIGNATURES = 5        # verify at most this many DKIM-Signature fields (each costs a DNS lookup)
_D_TAG = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)
_DKIM_LOG = logging.getLogger(f"{__name__}.dkimpy")


@dataclass(frozen=True)
class AuthResult:
    """The verdict about the From domain, how it was reached and why."""

    verdict: str                 # "pass" | "fail" | "temperror" | "none"
    method: str                  # "authentication-results" | "dkim" | "none"
    domain: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "AuthResult | None":
        """The stored verdict, or None when nothing (or nothing readable) was stored."""
        try:
            return cls(**json.loads(text)) if text else None
        except (TypeError, ValueError):
            return None


def from_domain(from_addr: str | None) -> str:
    """The lower-cased domain of the From address ("" without one)."""
    return (from_addr or "").rpartition("@")[2].strip().rstrip(".").lower()


def aligned(signing_domain: str, author_domain: str) -> bool:
    """Relaxed alignment (RFC 7489 §3.1.1), approximated without the public suffix list.

    >>> aligned("acme.example", "mail.acme.example"), aligned("mail.acme.example", "acme.example")
    (True, True)
    >>> aligned("evil.example", "acme.example")
    False
    """
    d, a = signing_domain.lower().rstrip("."), author_domain.lower().rstrip(".")
    return bool(d and a) and (d == a or a.endswith("." + d) or d.endswith("." + a))


def default_resolver(config: AuthConfig) -> Resolver:
    """Real DNS (dnspython through dkimpy), with the configured timeout."""
    def txt(name: bytes, timeout: float = config.dns_timeout_seconds) -> bytes | None:
        return get_txt(name, timeout=min(timeout, config.dns_timeout_seconds))
    return txt


def authenticate(raw: bytes, headers: Mapping[str, Sequence[str]], from_addr: str | None, config: AuthConfig,
                 resolver: Resolver | None = None) -> AuthResult:
    """Judge the From domain of one message by the trusted Authentication-Results, else by DKIM."""
    domain = from_domain(from_addr)
    if not domain:
        return AuthResult("none", "none", "", "no From domain to authenticate")
    trusted = _trusted_results(headers.get("authentication-results", ()), config.trusted_authserv_ids)
    if trusted is not None:
        return _judge_results(trusted, domain)
    if not config.verify_dkim:
        return AuthResult("none", "none", domain, "no trusted Authentication-Results and DKIM checks are off")
    return _judge_dkim(raw, headers.get("dkim-signature", ()), domain, config,
                       resolver or default_resolver(config))


def may_ask_dns(headers: Mapping[str, Sequence[str]], config: AuthConfig) -> bool:
    """Whether ``authenticate`` may look up DKIM keys for this message (so must not run where waiting hurts).

    True when nothing trusted speaks for the message and it carries a signature we would
    verify; whether the sender is known, and so checked at all, is not asked here.
    """
    if config.policy == "off" or not config.verify_dkim or not headers.get("dkim-signature"):
        return False
    return _trusted_results(headers.get("authentication-results", ()), config.trusted_authserv_ids) is None


# -- Authentication-Results of a trusted border MTA -----------------------------------------


def _trusted_results(values: Sequence[str], trusted_ids: Sequence[str]):
    """The topmost parsable field whose authserv-id we trust, else None."""
    wanted = {t.strip().lower() for t in trusted_ids if t.strip()}
    if not wanted:
        return None
    for value in values:
        named = _plain_authserv_id(value)
        if named is not None and named not in wanted:   # another hop's field: not worth a parse
            continue
        parsed = _parsed_results(value)
        if parsed is not None and str(parsed.authserv_id or "").lower() in wanted:
            return parsed
    return None


_TOKEN_END = re.compile(r"[\s;]")


def _plain_authserv_id(value: str) -> str | None:
    """The authserv-id a field starts with, lower-cased, when it is a plain token; None when only a parse can tell.

    >>> _plain_authserv_id(" MX.Example.COM; dkim=pass"), _plain_authserv_id('(comment) mx; none')
    ('mx.example.com', None)
    """
    text = value.lstrip()
    if not text or text[0] in '("':
        return None
    return _TOKEN_END.split(text, maxsplit=1)[0].lower()


@functools.lru_cache(maxsize=32)   # ``may_ask_dns`` and then ``authenticate`` read the same field
def _parsed_results(value: str):
    """The parsed field (not to be changed: it is shared), or None when it does not parse."""
    try:
        return _ResultsParser.parse_value(authres.core_features(), value)
    except Exception:  # noqa: BLE001 -- a broken field proves nothing; the caller tries the next one
        return None


class _ResultsParser(authres.core.AuthenticationResultsHeader):
    """authres's own parser, with each grammar pattern compiled once.

    Stock authres compiles its patterns again on every use (about 380 times for a
    border MTA's field: 0.5 ms of every delivery). This is the same grammar and the
    same results; ``tests/test_sender_auth.py`` holds it to stock authres field by field.
    """

    def _parse_pattern(self, pattern):
        # authres: ``re.compile("^" + pattern, re.I).sub(<remember match>, text, 1)``
        regexp = pattern if authres.core.isre(pattern) else _anchored(pattern)
        match = regexp.search(self._parse_text)
        if match is not None:
            self._parse_text = self._parse_text[:match.start()] + self._parse_text[match.end():]
        return match


@functools.lru_cache(maxsize=512)
def _anchored(pattern: str) -> re.Pattern:
    return re.compile(r"^" + pattern, re.I)


def _judge_results(parsed, domain: str) -> AuthResult:
    """DMARC first; without a DMARC result, DKIM results aligned with the From domain."""
    source = f"Authentication-Results of {parsed.authserv_id}"
    for result in parsed.results:
        if str(result.method).lower() == "dmarc" and _property(result, "header", "from") in ("", domain):
            verdict = str(result.result).lower()
            if verdict in ("pass", "fail", "temperror"):
                return AuthResult(verdict, "authentication-results", domain, f"dmarc={verdict} ({source})")
    dkim_results = [(str(r.result).lower(), _property(r, "header", "d")) for r in parsed.results
                    if str(r.method).lower() == "dkim"]
    if any(res == "pass" and aligned(d, domain) for res, d in dkim_results):
        return AuthResult("pass", "authentication-results", domain, f"aligned dkim=pass ({source})")
    if any(res == "fail" and aligned(d, domain) for res, d in dkim_results):
        return AuthResult("fail", "authentication-results", domain, f"aligned dkim=fail ({source})")
    return AuthResult("none", "authentication-results", domain, f"no DMARC or aligned DKIM result ({source})")


def _property(result, ptype: str, name: str) -> str:
    for prop in getattr(result, "properties", ()) or ():
        if str(prop.type).lower() == ptype and str(prop.name).lower() == name:
            return str(prop.value).lstrip("@").rpartition("@")[2].lower()
    return ""


# -- our own DKIM verification ----------------------------------------------------------------


def _judge_dkim(raw: bytes, signatures: Sequence[str], domain: str, config: AuthConfig,
                resolver: Resolver) -> AuthResult:
    outcomes = []   # (signing domain, "pass" | "fail" | "temperror")
    for index, value in enumerate(list(signatures)[:_MAX_SIGNATURES]):
        match = _D_TAG.search(value.replace("\r", "").replace("\n", ""))
        signing_domain = match.group(1).lower() if match else ""
        outcomes.append((signing_domain, _verify_one(raw, index, resolver, config.dns_timeout_seconds)))
    mine = [(d, result) for d, result in outcomes if aligned(d, domain)]
    required = any(_within(domain, parent) for parent in config.dkim_required_domains)
    if any(result == "pass" for _, result in mine):
        return AuthResult("pass", "dkim", domain, f"valid DKIM signature of {domain}")
    if any(result == "fail" for _, result in mine):
        return AuthResult("fail", "dkim", domain, f"the DKIM signature of {domain} does not verify")
    # A key that cannot be looked up proves nothing either way (RFC 6376 §6.1: treat the message
    # as unsigned); only a domain known to sign everything makes that a reason to hold the mail.
    if required and any(result == "temperror" for _, result in mine):
        return AuthResult("temperror", "dkim", domain, f"the DKIM key of {domain} could not be looked up")
    if required:
        return AuthResult("fail", "dkim", domain, f"{domain} always signs its mail, and this message "
                                                  "has no valid DKIM signature of it")
    return AuthResult("none", "dkim", domain, f"no DKIM signature of {domain}")


def _within(domain: str, parent: str) -> bool:
    parent = parent.strip().strip(".").lower()
    return bool(parent) and (domain == parent or domain.endswith("." + parent))


def _verify_one(raw: bytes, index: int, resolver: Resolver, timeout: float) -> str:
    """Verify the ``index``-th signature: "pass", "fail" (broken or not verifying) or "temperror"."""
    lookup_failed: list[bytes] = []
    key_found: list[bytes] = []

    def txt(name: bytes, timeout: float = timeout) -> bytes | None:
        try:
            record = resolver(name, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 -- any resolver failure is a temporary error
            lookup_failed.append(name)
            raise dkim.DnsTimeoutError(str(exc) or type(exc).__name__) from None
        if not record:   # no key published, or no DNS at all: nothing to verify against
            lookup_failed.append(name)
        else:
            key_found.append(name)
        return record

    try:
        verifier = dkim.DKIM(raw, logger=_DKIM_LOG, timeout=timeout)
        ok = verifier.verify(idx=index, dnsfunc=txt)
    except Exception as exc:  # noqa: BLE001 -- dkimpy raises on malformed signatures
        # With the key in hand this is a real failure (e.g. "body hash mismatch"). A signature
        # that cannot even be read proves nothing (RFC 6376 §6.1: as if unsigned); leaving the
        # signature out would get a forger the same result.
        log.debug("DKIM signature %s does not verify: %s", index, type(exc).__name__)
        if not key_found:
            return "temperror"
        ok = False
    if lookup_failed:
        return "temperror"   # "could not be checked", never "forged"
    return "pass" if ok else "fail"
