"""Who writes in the benchmark: organisations, their service accounts, the vendor's agents.

Deterministic for a seed. Also fixes the conventions the pre-filled tickets follow
(which organisation owns existing ticket ``t``, who opened it, its Message-IDs), so the
corpus can answer tickets that were bulk-inserted and never seen by the client.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

SUPPORT = "support@desk.example.com"
AGENT_DOMAIN = "vendor.example"
PACKAGE_CAPS = {"basic": 1, "bronze": 3, "silver": 5, "gold": 10}
_PACKAGE_WEIGHTS = (("basic", 2), ("bronze", 4), ("silver", 3), ("gold", 1))

_DE_FIRST = ("Anna", "Lukas", "Sophie", "Jonas", "Marie", "Felix", "Lena", "Paul", "Julia", "Tobias", "Katrin",
             "Jürgen", "Sören", "Birgit", "Matthias", "Ute", "Björn", "Hannah", "Stefan", "Özlem")
_DE_LAST = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
            "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Braun", "Zimmermann")
_EN_FIRST = ("Olivia", "James", "Emma", "Oliver", "Amelia", "Harry", "Isla", "Jack", "Grace", "George", "Chloe",
             "Noah", "Mia", "Leo", "Ruby", "Arthur", "Ella", "Oscar", "Freya", "Henry")
_EN_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright",
            "Robinson", "Walker", "Thompson", "White", "Hughes", "Edwards", "Green", "Hall", "Wood", "Clarke")
_DE_ORG = (("Müller", "Nordlicht", "Alpen", "Rhein", "Hanse", "Spree", "Isar", "Elbtal", "Schwarzwald", "Bergmann"),
           ("Logistik GmbH", "Maschinenbau AG", "Steuerberatung", "Elektrotechnik KG", "Immobilien GmbH",
            "Versicherungsmakler", "Medizintechnik GmbH", "Druckerei", "Bau GmbH & Co. KG", "Handels GmbH"))
_EN_ORG = (("Harbor", "Redwood", "Summit", "Bluebell", "Kingfisher", "Granite", "Meadow", "Northgate", "Oakridge",
            "Silverline"),
           ("Analytics Ltd", "Freight plc", "Dental Group", "Architects LLP", "Software Ltd", "Insurance Brokers",
            "Trading Co", "Healthcare Ltd", "Consulting", "Foods plc"))
_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "&": "",
                       ".": "", ",": ""})


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    locale: str


@dataclass(frozen=True)
class Org:
    name: str
    domain: str
    package: str
    locale: str
    accounts: tuple[Person, ...]
    client: str          # the mail client most people of this organisation use (header profile)


@dataclass(frozen=True)
class Directory:
    orgs: tuple[Org, ...]
    agents: tuple[Person, ...]

    def org_of_existing(self, ticket: int) -> Org:
        """The organisation that owns pre-filled ticket ``ticket`` (1-based, round robin)."""
        return self.orgs[(ticket - 1) % len(self.orgs)]

    def account_count(self) -> int:
        return sum(len(org.accounts) for org in self.orgs)


def existing_opener_id(ticket: int, org: Org) -> str:
    """The Message-ID of the customer mail that opened pre-filled ticket ``ticket``."""
    return f"<pf-{ticket}-open@mail.{org.domain}>"


def existing_ack_id(ticket: int) -> str:
    """The Message-ID of Postdesk's acknowledgment on pre-filled ticket ``ticket``."""
    return f"<pf-{ticket}-ack@desk.example.com>"


def existing_subject(ticket: int) -> str:
    return f"Vorgang {ticket}: Druck aus dem Modul Reporting" if ticket % 2 else f"Issue {ticket}: invoice export"


def _slug(text: str) -> str:
    words = text.translate(_FOLD).lower().split()
    return "-".join(w for w in words if w not in ("gmbh", "ag", "kg", "co", "ltd", "plc", "llp"))


def _person(rng: random.Random, locale: str, domain: str, taken: set[str]) -> Person:
    first_names, last_names = (_DE_FIRST, _DE_LAST) if locale == "de" else (_EN_FIRST, _EN_LAST)
    for attempt in range(1000):
        first, last = rng.choice(first_names), rng.choice(last_names)
        local = f"{first.translate(_FOLD)}.{last.translate(_FOLD)}".lower() + (str(attempt) if attempt > 20 else "")
        email = f"{local}@{domain}"
        if email not in taken:
            taken.add(email)
            return Person(email, f"{first} {last}", locale)
    raise RuntimeError("name space exhausted")


def make_directory(seed: int, n_orgs: int, n_agents: int = 6) -> Directory:
    """``n_orgs`` organisations (German and English, every package) with their accounts, and the agents."""
    rng = random.Random(f"people-{seed}")
    packages = [name for name, weight in _PACKAGE_WEIGHTS for _ in range(weight)]
    orgs, taken_names, taken_mail = [], set(), set()
    for index in range(n_orgs):
        locale = "de" if rng.random() < 0.55 else "en"
        prefixes, suffixes = _DE_ORG if locale == "de" else _EN_ORG
        name = f"{rng.choice(prefixes)} {rng.choice(suffixes)}"
        if name in taken_names:
            name = f"{name} {index}"
        taken_names.add(name)
        domain = f"{_slug(name)}.example"
        package = rng.choice(packages)
        size = max(1, min(PACKAGE_CAPS[package], round(rng.uniform(0.5, 1.0) * PACKAGE_CAPS[package])))
        accounts = tuple(_person(rng, locale if rng.random() < 0.85 else ("en" if locale == "de" else "de"),
                                 domain, taken_mail) for _ in range(size))
        client = rng.choice(("outlook", "outlook", "outlook", "gmail", "gmail", "thunderbird", "apple"))
        orgs.append(Org(name, domain, package, locale, accounts, client))
    agents = tuple(_person(rng, "de" if i % 2 else "en", AGENT_DOMAIN, taken_mail) for i in range(n_agents))
    return Directory(tuple(orgs), agents)
