"""Admins' template overrides in the database: versions, and the renderer's override source.

Every change (set, rollback, reset) adds a version of (name, locale) with its author and
time; the newest version is in force and nothing is ever overwritten, so ``templates
history`` shows every state a template has been in. :class:`DatabaseOverrides` is the
:class:`gateway.rendering.OverrideSource` of a running gateway: it reads the version in
force on every render, so a new override takes effect without restarting ``serve``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, func, select

from storage.models import TemplateVersion

log = logging.getLogger(__name__)

#: How old the cached overrides may get when nobody calls ``refresh()``.
MAX_AGE_SECONDS = 2.0

#: Template part (file suffix) -> column of :class:`TemplateVersion`.
COLUMNS = {"subject.txt": "subject", "body.txt": "body_text", "body.html": "body_html"}


def current(session: Session, name: str, locale: str) -> TemplateVersion | None:
    """The newest version of (name, locale), or None when it was never overridden."""
    query = (select(TemplateVersion).where(TemplateVersion.name == name, TemplateVersion.locale == locale)
             .order_by(TemplateVersion.version.desc()).limit(1))
    return session.exec(query).first()


def in_force(version: TemplateVersion | None) -> bool:
    """Whether ``version`` overrides anything (a reset version does not)."""
    return version is not None and any(getattr(version, col) is not None for col in COLUMNS.values())


def parts_of(version: TemplateVersion | None) -> dict[str, str | None]:
    """The parts of a version by file suffix; None means the packaged default."""
    return {part: (getattr(version, col) if version is not None else None) for part, col in COLUMNS.items()}


def history(session: Session, name: str, locale: str) -> list[TemplateVersion]:
    query = (select(TemplateVersion).where(TemplateVersion.name == name, TemplateVersion.locale == locale)
             .order_by(TemplateVersion.version))
    return list(session.exec(query))


def version(session: Session, name: str, locale: str, number: int) -> TemplateVersion | None:
    query = select(TemplateVersion).where(TemplateVersion.name == name, TemplateVersion.locale == locale,
                                          TemplateVersion.version == number)
    return session.exec(query).first()


def add_version(session: Session, name: str, locale: str, parts: Mapping[str, str | None], *, action: str,
                author: str, note: str, now: datetime) -> TemplateVersion:
    """Store a new version in force (the unique index refuses a concurrent duplicate number)."""
    latest = session.exec(select(func.max(TemplateVersion.version))
                          .where(TemplateVersion.name == name, TemplateVersion.locale == locale)).one()
    row = TemplateVersion(name=name, locale=locale, version=(latest or 0) + 1, action=action, author=author,
                          note=note, created_at=now, **{col: parts.get(part) for part, col in COLUMNS.items()})
    session.add(row)
    session.flush()
    return row


def overridden(session: Session) -> dict[tuple[str, str], TemplateVersion]:
    """The version in force of every (name, locale) that has an override in force."""
    newest = (select(TemplateVersion.name, TemplateVersion.locale, func.max(TemplateVersion.version).label("v"))
              .group_by(TemplateVersion.name, TemplateVersion.locale).subquery())
    query = select(TemplateVersion).join(
        newest, (TemplateVersion.name == newest.c.name) & (TemplateVersion.locale == newest.c.locale)
        & (TemplateVersion.version == newest.c.v))
    return {(row.name, row.locale): row for row in session.exec(query) if in_force(row)}


#: The change stamp of the overrides: how many versions exist, and the newest id. Built once
#: and run on a plain connection: the check runs before every message's mails, and an ORM
#: session around it cost several times the query itself.
_STAMP = select(func.count(), func.max(TemplateVersion.id))


class DatabaseOverrides:
    """The overrides in force, cached in memory and checked for changes once per message.

    ``refresh()`` costs one small query (how many versions exist, and the newest id);
    only when that changed are the overrides read again. The worker and the timers call
    it before rendering each message's mails, so a new override takes effect for the
    next message without restarting ``serve``, and rendering itself asks the database
    nothing. It uses an engine of its own without the write lock the main engine takes
    on SQLite (``BEGIN IMMEDIATE``): a plain read on another connection neither waits
    for the worker's write transaction nor blocks it (WAL).
    """

    def __init__(self, url: str, busy_timeout_seconds: float = 10.0) -> None:
        if url.startswith("sqlite"):
            self._engine: Engine = create_engine(
                url, connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False})
        else:
            self._engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
        self._stamp: tuple | None = None
        self._cache: dict[tuple[str, str], dict[str, str | None]] = {}
        self._checked = float("-inf")

    def refresh(self) -> None:
        """Re-read the overrides if any version was added since the last look."""
        self._checked = time.monotonic()
        try:
            with self._engine.connect() as connection:
                stamp = tuple(connection.execute(_STAMP).one())
                if stamp != self._stamp:
                    with Session(connection) as session:
                        self._cache = {key: parts_of(row) for key, row in overridden(session).items()}
                    self._stamp = stamp
        except SQLAlchemyError:
            # A mail in the packaged words beats no mail; when the database itself is gone,
            # the caller's transaction fails anyway.
            log.exception("cannot read the template overrides; using what was read before")

    def get(self, name: str, locale: str, part: str) -> str | None:
        if part not in COLUMNS:
            return None
        if time.monotonic() - self._checked > MAX_AGE_SECONDS:   # paths that do not refresh() themselves
            self.refresh()
        return self._cache.get((name, locale), {}).get(part)

    def dispose(self) -> None:
        self._engine.dispose()
