"""Admin operations on organisations, accounts and agents.

Each function takes a Session and raises :class:`AdminError` with one clear line
when the request cannot be carried out; the caller's transaction then rolls
back, so nothing is half-written.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, func, select

from gateway.classify import is_role_address
from gateway.config import Settings
from gateway.errors import AdminError
from storage.models import Account, Agent, Organization, SharedAddress

_ADDR_RE = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")
LOCALES = ("de", "en")


def normalize_email(address: str) -> str:
    """Lowercase and strip an address, refusing anything that is not one plain addr-spec."""
    value = address.strip().strip("<>").lower()
    if not _ADDR_RE.match(value):
        raise AdminError(f"not a valid email address: {address!r}")
    return value


def find_organization(session: Session, name: str) -> Organization:
    org = session.exec(select(Organization).where(Organization.name_key == name.strip().lower())).first()
    if org is None:
        raise AdminError(f"unknown organisation: {name!r}")
    return org


def add_organization(session: Session, settings: Settings, now: datetime, name: str, package: str,
                     main_contact: str, locale: str | None = None, contact_name: str = "") -> tuple[Organization, Account]:
    package = _check_package(settings, package)
    locale = _check_locale(locale or settings.desk.default_locale)
    if not name.strip():
        raise AdminError("an organisation needs a name")
    if session.exec(select(Organization).where(Organization.name_key == name.strip().lower())).first():
        raise AdminError(f"organisation {name!r} exists already")
    org = Organization(name=name.strip(), name_key=name.strip().lower(), package=package, locale=locale, created_at=now)
    session.add(org)
    session.flush()
    account = add_account(session, settings, now, main_contact, org.name, name=contact_name, locale=locale)
    return org, account


def change_package(session: Session, settings: Settings, name: str, package: str) -> Organization:
    org = find_organization(session, name)
    package = _check_package(settings, package)
    active = count_active_accounts(session, org.id)
    cap = settings.packages.cap(package)
    if active > cap:
        raise AdminError(f"cannot change {org.name} to {package}: it has {active} active accounts and "
                         f"{package} allows {cap}; remove {active - cap} account(s) first")
    org.package = package
    session.add(org)
    return org


def count_active_accounts(session: Session, org_id: int) -> int:
    query = select(func.count()).select_from(Account).where(Account.organization_id == org_id, Account.active)
    return session.exec(query).one()


def add_account(session: Session, settings: Settings, now: datetime, email: str, org_name: str,
                name: str = "", locale: str | None = None) -> Account:
    org = find_organization(session, org_name)
    address = _check_registrable(session, settings, email)
    locale = _check_locale(locale) if locale else None
    cap = settings.packages.cap(org.package)
    if count_active_accounts(session, org.id) >= cap:
        raise AdminError(f"{org.name} has reached the limit of its {org.package} package "
                         f"({cap} account{'s' if cap != 1 else ''}); upgrade the package or remove an account first")
    existing = session.exec(select(Account).where(Account.email == address)).first()
    if existing is not None and existing.active:
        owner = session.get(Organization, existing.organization_id)
        raise AdminError(f"{address} already belongs to an account of {owner.name}")
    account = existing or Account(email=address, organization_id=org.id, created_at=now)
    account.organization_id, account.active, account.deactivated_at = org.id, True, None
    account.name, account.locale = name or account.name, locale or account.locale
    session.add(account)
    session.flush()
    return account


def _check_registrable(session: Session, settings: Settings, email: str) -> str:
    address = normalize_email(email)
    if is_role_address(address, settings.desk.shared_local_parts) or \
            session.exec(select(SharedAddress).where(SharedAddress.email == address)).first():
        raise AdminError(f"{address} is a shared address (role or team mailbox); "
                         "a service account belongs to one person")
    if session.exec(select(Agent).where(Agent.email == address)).first():
        raise AdminError(f"{address} is registered as an agent")
    return address


def remove_account(session: Session, now: datetime, email: str) -> Account:
    account = find_account(session, email)
    if not account.active:
        raise AdminError(f"the account of {account.email} is already removed")
    account.active, account.follows, account.deactivated_at = False, False, now
    session.add(account)
    return account


def find_account(session: Session, email: str) -> Account:
    account = session.exec(select(Account).where(Account.email == normalize_email(email))).first()
    if account is None:
        raise AdminError(f"no account with address {email.strip()}")
    return account


def set_following(session: Session, email: str, follows: bool) -> Account:
    account = find_account(session, email)
    if not account.active:
        raise AdminError(f"the account of {account.email} is removed")
    account.follows = follows
    session.add(account)
    return account


def import_accounts(session: Session, settings: Settings, now: datetime, org_name: str,
                    text: str) -> list[Account]:
    """Add one account per CSV row (``email[,name[,locale]]``, optional header); all or nothing."""
    accounts = []
    for line_no, row in _csv_rows(text):
        try:
            accounts.append(add_account(session, settings, now, row[0], org_name,
                                        name=row[1] if len(row) > 1 else "",
                                        locale=(row[2] if len(row) > 2 else "") or None))
        except AdminError as exc:
            raise AdminError(f"line {line_no}: {exc}; nothing was imported") from None
    return accounts


def _csv_rows(text: str) -> Iterable[tuple[int, list[str]]]:
    sample = text[:2048]
    dialect = csv.excel
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        pass
    for line_no, row in enumerate(csv.reader(io.StringIO(text), dialect), start=1):
        row = [cell.strip() for cell in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if line_no == 1 and "@" not in row[0]:
            continue  # a header line such as "email,name,locale"
        yield line_no, row


def add_agent(session: Session, now: datetime, email: str, name: str = "", locale: str = "en") -> Agent:
    address = normalize_email(email)
    if session.exec(select(Agent).where(Agent.email == address)).first():
        raise AdminError(f"{address} is already an agent")
    if session.exec(select(Account).where(Account.email == address, Account.active)).first():
        raise AdminError(f"{address} is a customer's service account")
    agent = Agent(email=address, name=name, locale=_check_locale(locale), created_at=now)
    session.add(agent)
    session.flush()
    return agent


def mark_shared(session: Session, now: datetime, email: str) -> SharedAddress:
    address = normalize_email(email)
    if session.exec(select(Account).where(Account.email == address, Account.active)).first():
        raise AdminError(f"{address} is an active account; remove it first")
    entry = session.exec(select(SharedAddress).where(SharedAddress.email == address)).first()
    entry = entry or SharedAddress(email=address, created_at=now)
    session.add(entry)
    return entry


def _check_package(settings: Settings, package: str) -> str:
    value = package.strip().lower()
    if value not in settings.packages.names():
        raise AdminError(f"unknown package {package!r}; choose one of {', '.join(settings.packages.names())}")
    return value


def _check_locale(locale: str) -> str:
    value = locale.strip().lower()
    if value not in LOCALES:
        raise AdminError(f"unknown locale {locale!r}; choose de or en")
    return value
