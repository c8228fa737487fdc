"""What a problem report seems to lack (DESIGN §1 "information for problems"). Pure.

Heuristics over the description and the attachment names; they only decide
which hints the acknowledgment shows, never whether a ticket is accepted.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

_ERROR = re.compile(r"\b(error|fehler(meldung)?|exception|rote[rn]? meldung|red message|fehlermeldung|failed|"
                    r"fehlgeschlagen|500|404)\b", re.I)
_SOME_USERS = re.compile(r"\b(some users|several users|only (one|some) users?|einige(n)? (benutzer|nutzer|anwender)|"
                         r"manche(n)? (benutzer|nutzer)|bei (einem|einigen) (kollegen|benutzern))\b", re.I)
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_BROWSER = re.compile(r"\b(browser|chrome|firefox|edge|safari)\b", re.I)
_BROWSER_DETAILS = re.compile(r"\b(version|\d+\.\d+)\b", re.I)
_SITUATION = re.compile(r"\b(sometimes|manchmal|only on|nur (auf|bei|im|in)|on (my )?(phone|tablet|ipad|mobile))\b", re.I)
_PAGE = re.compile(r"\b(page|seite|button|schaltfläche|menü|menu|screen|maske|ansicht|dialog)\b", re.I)


def missing_information(text: str, attachment_names: Sequence[str]) -> list[str]:
    """Codes of the checklist items the report seems to lack, in checklist order."""
    names = [n.lower() for n in attachment_names]
    missing = []
    if _ERROR.search(text) and not any(n.endswith(".har") for n in names):
        missing.append("har_file")
    if _SOME_USERS.search(text) and not _ADDRESS.search(text):
        missing.append("affected_users")
    if _BROWSER.search(text) and not _BROWSER_DETAILS.search(text):
        missing.append("browser_details")
    if _SITUATION.search(text) and not _PAGE.search(text):
        missing.append("page_and_devices")
    return missing
