"""Sample data for the onboarding, command and follower templates (previews and validation).

The companion of the ticket samples in ``rendering.py``: one list of realistic contexts per
template, the first used by ``templates preview``, all of them by ``templates set``. Pure
values; no I/O here.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gateway.commands import command_addresses
from gateway.rendering import _language, _sample_base, _sample_message, label

_SUPPORT = "support@desk.example.com"


def _person(locale: str) -> dict[str, Any]:
    base = _sample_base(locale)
    return {key: base[key] for key in ("recipient", "support_address", "product_name")}


def _organization(locale: str) -> dict[str, Any]:
    de = _language(locale) == "de"
    return {
        "name": "Müller & Söhne GmbH" if de else "Doe & Partners Ltd", "package": "silver",
        "accounts_allowed": 5, "main_contact": "jana.mueller@kunde.example" if de else "jane.doe@customer.example",
    }


def _account_base(locale: str, **extra: Any) -> dict[str, Any]:
    return _person(locale) | {"organization": _organization(locale), "commands": command_addresses(_SUPPORT)} | extra


def _onboarding_samples(locale: str) -> list[dict[str, Any]]:
    modules = ["Reports", "Billing", "Users", "API"]
    return [_account_base(locale, modules=modules), _account_base(locale, modules=[])]


def _follow_samples(locale: str) -> list[dict[str, Any]]:
    return [
        _account_base(locale, following=True, changed=True),
        _account_base(locale, following=False, changed=True),
        _account_base(locale, following=True, changed=False),
        _account_base(locale, following=False, changed=False),
    ]


def _digest_ticket(locale: str, number: int, subject: str, status: str, type_: str, day: int,
                   requester: tuple[str, str]) -> dict[str, Any]:
    return {
        "number": number, "subject": subject, "status": status, "status_label": label("status", status, locale),
        "type": type_, "type_label": label("type", type_, locale),
        "requester_name": requester[0], "requester_email": requester[1],
        "created_at": datetime(2026, 11, day, 8, 30, tzinfo=timezone.utc),
        "updated_at": datetime(2026, 11, day + 1, 13, 5, tzinfo=timezone.utc),
    }


def _digest_samples(locale: str) -> list[dict[str, Any]]:
    de = _language(locale) == "de"
    me = ("Jana Müller", "jana.mueller@kunde.example") if de else ("Jane Doe", "jane.doe@customer.example")
    colleague = ("Max Weber", "max.weber@kunde.example") if de else ("Max Weber", "max.weber@customer.example")
    mine = [_digest_ticket(locale, 1042, "Export nach Excel bricht ab" if de else "Excel export fails",
                           "awaiting_reply", "problem", 20, me),
            _digest_ticket(locale, 1017, "Rechnung für März" if de else "Invoice for March",
                           "solved", "service_request", 3, me)]
    cc = [_digest_ticket(locale, 1040, "Neue Benutzer anlegen" if de else "Adding new users",
                         "open", "service_request", 18, colleague)]
    full = [{"scope": "mine", "tickets": mine, "more": 0}, {"scope": "cc", "tickets": cc, "more": 0},
            {"scope": "org", "tickets": sorted(mine + cc, key=lambda t: t["updated_at"], reverse=True), "more": 12}]
    empty = [{"scope": "cc", "tickets": [], "more": 0}]
    return [_account_base(locale, sections=full), _account_base(locale, sections=empty)]


def _follower_samples(locale: str) -> list[dict[str, Any]]:
    # The follower is the sample person; the ticket was opened by a colleague.
    de = _language(locale) == "de"
    colleague = {"requester_name": "Max Weber",
                 "requester_email": "max.weber@kunde.example" if de else "max.weber@customer.example"}
    message = _sample_message(locale) | {"author_name": colleague["requester_name"],
                                         "author_email": colleague["requester_email"]}
    extra = {"message": message, "commands": command_addresses(_SUPPORT)}
    return [_sample_base(locale, **colleague) | extra,
            _sample_base(locale, type="service_request", priority=None, module=None, **colleague) | extra]


#: Template name -> builder of its sample contexts (merged into ``rendering``'s table).
SAMPLE_BUILDERS = {
    "invitation": _onboarding_samples,
    "welcome": _onboarding_samples,
    "follow_confirmation": _follow_samples,
    "request_digest": _digest_samples,
    "follower_new_ticket": _follower_samples,
}
