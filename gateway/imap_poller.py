"""IMAP edge, the loop: read a mailbox, push every message through intake and the pipeline.  [edge]

One pass selects the configured folder and, batch by batch, fetches each waiting
message and hands it to ``intake.receive`` (channel ``imap``) — the same judge and
store as SMTP — then to the worker's ``process_inbound``. Only after that commit
does the message leave the folder (:class:`MailboxSource` ``move``):

- a stored message (``ticket_created``, ``reply``, ``ignored`` …) → processed folder;
- a message whose processing failed (``quarantined``) → failed folder, reason logged;
- a refused sender (unknown, shared, list) → rejected folder, after
  ``refusal_notice.answer_refused`` decided whether it is safe to tell them why.

Exactly once: a crash or a lost connection between commit and move leaves the
message in the folder; the next pass stores it again as a ``duplicate`` (same
Message-ID and content), finds the original processed and only moves it. When the
database is unreachable the pass stops and nothing moves. ``run`` keeps going:
IDLE (or a poll interval) between passes, reconnecting with doubling backoff after
a lost connection; :class:`~gateway.imap_source.MailboxError` (wrong credentials,
missing folder) ends it, because waiting does not fix that.
"""
from __future__ import annotations

import email.utils
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.imap_source import FolderState, MailboxError, MailboxSource, MailboxUnavailable
from gateway.intake import content_hash, dedupe_key, receive
from gateway.parsing import HeaderSummary, parse_headers
from gateway.refusal_notice import answer_refused
from gateway.worker import process_inbound
from storage import queries
from storage.db import transaction
from storage.models import Inbound

log = logging.getLogger(__name__)

FINAL_ELSEWHERE = ("pending",)   # another process holds the row: leave the message for the next pass


class StorageFailed(Exception):
    """The database refused or could not be reached while handling a message; nothing was moved."""


@dataclass
class PassReport:
    """What one pass did, message by message."""

    seen: int = 0
    processed: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    left: int = 0
    outcomes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.seen} seen, {self.processed} processed ({self.duplicates} already stored), "
                f"{self.rejected} rejected, {self.failed} failed, {self.left} left for later")


class Poller:
    """Reads one mailbox into Postdesk. ``runtime`` is a :class:`gateway.service.Runtime`.

    :param make_source: builds a fresh :class:`MailboxSource` (one per connection).
    :param after_pass: called after each pass that handled mail (``serve`` wakes its dispatcher).
    """

    def __init__(self, runtime, make_source: Callable[[], MailboxSource],
                 after_pass: Callable[[PassReport], None] = lambda report: None) -> None:
        self.runtime, self.make_source, self.after_pass = runtime, make_source, after_pass
        self.config = runtime.settings.imap
        self.source: MailboxSource | None = None
        self.uidvalidity: int | None = None

    # -- one pass ----------------------------------------------------------------------------
    def run_once(self) -> PassReport:
        """Connect if needed and handle every message waiting now.

        :raises MailboxError: wrong credentials or a missing folder.
        :raises MailboxUnavailable: the server is unreachable or dropped the connection.
        :raises StorageFailed: the database failed; the message in hand stays in the folder.
        """
        source = self._connected()
        state = source.select(self.config.folder)
        self._note_uidvalidity(state)
        report = PassReport()
        batch = max(1, self.config.batch_size)
        for start in range(0, len(state.uids), batch):
            uids = state.uids[start:start + batch]
            for uid, raw in sorted(source.fetch(uids).items()):
                self._handle(source, uid, raw, report)
            if len(state.uids) > batch:
                log.info("IMAP %s: %d of %d messages handled", self.config.folder,
                         min(start + batch, len(state.uids)), len(state.uids))
        if report.seen:
            log.info("IMAP pass: %s", report.summary())
            self.after_pass(report)
        return report

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def _connected(self) -> MailboxSource:
        if self.source is None:
            source = self.make_source()
            source.open()
            self.source = source
            try:
                source.select(self.config.folder)   # a missing source folder is reported before anything is created
                for name in (self.config.processed_folder, self.config.failed_folder, self.config.rejected_folder):
                    source.ensure_folder(name, self.config.create_folders)
            except BaseException:
                self.close()
                raise
        return self.source

    def _note_uidvalidity(self, state: FolderState) -> None:
        # No UID is kept between passes (the Message-ID record is the memory), so a new
        # UIDVALIDITY only means the folder was rebuilt: this pass lists it afresh anyway.
        if self.uidvalidity is not None and state.uidvalidity != self.uidvalidity:
            log.warning("IMAP %s: UIDVALIDITY changed from %s to %s; rescanning the folder",
                        self.config.folder, self.uidvalidity, state.uidvalidity)
        self.uidvalidity = state.uidvalidity

    # -- one message ---------------------------------------------------------------------------
    def _handle(self, source: MailboxSource, uid: int, raw: bytes, report: PassReport) -> None:
        report.seen += 1
        target, outcome = self._store_and_process(uid, raw)
        report.outcomes.append(outcome)
        if target is None:
            report.left += 1
            return
        source.move(uid, target)
        if target == self.config.processed_folder:
            report.processed += 1
            report.duplicates += outcome.startswith("duplicate")
        elif target == self.config.rejected_folder:
            report.rejected += 1
        else:
            report.failed += 1

    def _store_and_process(self, uid: int, raw: bytes) -> tuple[str | None, str]:
        """Commit the message's outcome; return the folder it now belongs in (None: leave it) and the outcome."""
        rt, cfg = self.runtime, self.config
        headers = parse_headers(raw)
        mid = headers.message_id or "(no Message-ID)"
        if len(raw) > rt.settings.smtp.max_message_bytes:
            log.error("IMAP UID %s %s: %d bytes, over max_message_bytes; moved to %s",
                      uid, mid, len(raw), cfg.failed_folder)
            return cfg.failed_folder, "too-large"
        now = rt.clock.now()
        try:
            result = receive(rt.engine, rt.settings, raw, _envelope_from(headers),
                             _recipients(headers, rt.settings), now, "imap", resolver=rt.deps.resolver)
            if result.status == "refused":
                answer_refused(rt.engine, rt.deps, result.inbound_id, raw, now)
                return cfg.rejected_folder, "refused"
            inbound_id = result.inbound_id if result.status == "accepted" else self._original_id(headers, raw)
            if inbound_id is None:
                return cfg.processed_folder, "duplicate"
            process_inbound(rt.engine, rt.deps, inbound_id, now)
            row = self._row(inbound_id)
        except Exception as exc:  # noqa: BLE001 - storage trouble: keep the message, stop the pass
            raise StorageFailed(f"storing IMAP UID {uid} {mid} failed: {type(exc).__name__}: {exc}") from exc
        return self._folder_for(uid, mid, row, result.status)

    def _folder_for(self, uid: int, mid: str, row: Inbound, status: str) -> tuple[str | None, str]:
        prefix = "duplicate of " if status == "duplicate" else ""
        if row.outcome in FINAL_ELSEWHERE:
            log.info("IMAP UID %s %s: inbound %s is being processed elsewhere; left for the next pass",
                     uid, mid, row.id)
            return None, row.outcome
        if row.outcome == "quarantined":
            log.error("IMAP UID %s %s: inbound %s failed, moved to %s: %s",
                      uid, mid, row.id, self.config.failed_folder, row.reason)
            return self.config.failed_folder, prefix + row.outcome
        return self.config.processed_folder, prefix + row.outcome

    def _original_id(self, headers: HeaderSummary, raw: bytes) -> int | None:
        key = dedupe_key(headers.message_id, content_hash(raw))
        with transaction(self.runtime.engine) as session:
            original = queries.duplicate_of(session, key)
            return original.id if original is not None else None

    def _row(self, inbound_id: int) -> Inbound:
        with transaction(self.runtime.engine) as session:
            return session.get(Inbound, inbound_id)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Pass, wait for mail, pass … until ``stop`` is set.

        :raises MailboxError: wrong credentials or a missing folder (after logging it).
        """
        delay = self.config.reconnect_initial_seconds
        while not stop.is_set():
            try:
                report = self.run_once()
                delay = self.config.reconnect_initial_seconds
                if report.left:   # held by another process just now: look again soon
                    stop.wait(1.0)
                else:
                    self._wait(stop)
            except MailboxError:
                self.close()
                raise
            except (MailboxUnavailable, StorageFailed) as exc:
                self.close()
                log.warning("IMAP: %s; retrying in %.1f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_seconds)
        self.close()

    def _wait(self, stop: threading.Event) -> None:
        source = self._connected()
        seconds = self.config.idle_seconds if self.config.idle else self.config.poll_interval_seconds
        source.wait_for_mail(seconds, stop)


def _envelope_from(headers: HeaderSummary) -> str:
    # The delivering server records the envelope sender as Return-Path (RFC 5321 §4.4).
    values = headers.headers.get("return-path", ())
    return email.utils.parseaddr(values[0])[1] if values else ""


def _recipients(headers: HeaderSummary, settings) -> list[str]:
    found = [email.utils.parseaddr(v)[1] for name in ("delivered-to", "x-original-to")
             for v in headers.headers.get(name, ())]
    return [a for a in found if a] or [settings.smtp.support_address]



class PollerThread:
    """``serve``'s poller: :meth:`Poller.run` in a thread of its own, stopped with the service."""

    def __init__(self, runtime, wake: Callable[[], None]) -> None:
        from gateway.imap_source import ImapSource
        self.stop = threading.Event()
        self.poller = Poller(runtime, lambda: ImapSource(runtime.settings.imap), after_pass=lambda report: wake())
        self.thread = threading.Thread(target=self._run, name="postdesk-imap", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self.poller.run(self.stop)
        except MailboxError as exc:
            log.error("IMAP polling stopped: %s", exc)
        except Exception:  # noqa: BLE001 - never take the SMTP listener down with it
            log.exception("IMAP polling stopped by an unexpected error")
