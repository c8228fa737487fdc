"""IMAP edge, adapter: imapclient behind the small :class:`MailboxSource` protocol.  [edge: network]

The poller (``imap_poller.py``) speaks only this protocol: select a folder and
list its UIDs, fetch raw messages, move one message, wait for new mail. This
module is the one place that knows imapclient; its dicts and exceptions become
plain values and two exceptions of our own at once:

- :class:`MailboxError` — a person must act (wrong credentials, a missing folder);
  retrying does not help, so ``postdesk poll`` prints one line and exits 1;
- :class:`MailboxUnavailable` — the server cannot be reached or dropped the
  connection (a restart, a timeout); the poller reconnects with backoff.

Messages are fetched with ``BODY.PEEK[]`` so that reading never marks them seen,
and a message leaves a folder only by MOVE (RFC 6851) or, where the server lacks
it, COPY + ``\\Deleted`` + (UID) EXPUNGE — nothing is deleted before it was copied.
"""
from __future__ import annotations

import contextlib
import imaplib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from gateway.config import ImapConfig
from gateway.errors import GatewayError

log = logging.getLogger(__name__)


class MailboxError(GatewayError):
    """The mailbox cannot be used until a person acts: wrong credentials, a missing folder."""


class MailboxUnavailable(Exception):
    """The IMAP server cannot be reached or dropped the connection; try again later."""


@dataclass(frozen=True)
class FolderState:
    """A selected folder: its UIDVALIDITY and the UIDs of the messages waiting in it."""

    uidvalidity: int
    uids: tuple[int, ...]


class MailboxSource(Protocol):
    """What the poller needs from a mailbox (imapclient's adapter below, or a fake)."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def ensure_folder(self, name: str, create: bool) -> None: ...
    def select(self, folder: str) -> FolderState: ...
    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]: ...
    def move(self, uid: int, folder: str) -> None: ...
    def wait_for_mail(self, seconds: float, stop: threading.Event) -> None: ...


class ImapSource:
    """A :class:`MailboxSource` on a real IMAP server, through imapclient."""

    def __init__(self, config: ImapConfig, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.environ = os.environ if environ is None else environ
        self.client: IMAPClient | None = None
        self.where = f"{config.host}:{config.port}"

    # -- connection ------------------------------------------------------------------------
    def open(self) -> None:
        cfg = self.config
        context = ssl.create_default_context()
        try:
            client = IMAPClient(cfg.host, cfg.port, ssl=cfg.ssl, ssl_context=context, timeout=cfg.timeout_seconds)
            if cfg.starttls and not cfg.ssl:
                client.starttls(context)
        except (OSError, IMAPClientError) as exc:
            raise MailboxUnavailable(f"cannot reach the IMAP server {self.where}: {_text(exc)}") from None
        self.client = client
        with self._errors("login"):
            self._login(client)
        log.info("IMAP: logged in to %s as %s", self.where, cfg.username)

    def _login(self, client: IMAPClient) -> None:
        cfg = self.config
        token = self.environ.get(cfg.oauth2_token_env, "") if cfg.oauth2_token_env else ""
        try:
            if token:
                self._oauth_login(client, token)
            else:
                password = self.environ.get(cfg.password_env, "") if cfg.password_env else cfg.password
                client.login(cfg.username, password)
        except LoginError as exc:
            self.close()
            raise MailboxError(f"IMAP login as {cfg.username!r} on {self.where} failed: {_text(exc)}") from None

    def _oauth_login(self, client: IMAPClient, token: str) -> None:
        if client.has_capability("AUTH=OAUTHBEARER"):
            client.oauthbearer_login(self.config.username, token)
        elif client.has_capability("AUTH=XOAUTH2"):
            client.oauth2_login(self.config.username, token)
        else:
            self.close()
            raise MailboxError(f"the IMAP server {self.where} offers no OAuth2 login (OAUTHBEARER or XOAUTH2); "
                               "use a password instead")

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):   # the connection may be gone already
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()

    # -- folders ---------------------------------------------------------------------------
    def ensure_folder(self, name: str, create: bool) -> None:
        with self._errors(f"checking folder {name!r}"):
            if self._client().folder_exists(name):
                return
            if not create:
                raise MailboxError(f"IMAP folder {name!r} does not exist on {self.where} "
                                   "(create it, or set [imap] create_folders = true)")
            try:
                self._client().create_folder(name)
            except IMAPClientError as exc:
                if isinstance(exc, IMAPClientAbortError):
                    raise
                if self._client().folder_exists(name):   # created meanwhile by another client ([ALREADYEXISTS])
                    return
                raise MailboxError(f"cannot create IMAP folder {name!r} on {self.where}: {_text(exc)}") from None
            log.info("IMAP: created folder %r", name)

    def select(self, folder: str) -> FolderState:
        with self._errors(f"selecting {folder!r}"):
            client = self._client()
            if not client.folder_exists(folder):
                raise MailboxError(f"IMAP folder {folder!r} does not exist on {self.where} "
                                   "(check [imap] folder)")
            info = client.select_folder(folder)
            uids = client.search(["NOT", "DELETED"])
        return FolderState(int(info.get(b"UIDVALIDITY", 0)), tuple(sorted(int(u) for u in uids)))

    # -- messages --------------------------------------------------------------------------
    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """Raw bytes of each UID still there (a message moved away meanwhile is left out)."""
        with self._errors("fetching"):
            data = self._client().fetch(list(uids), ["BODY.PEEK[]"])
        return {int(uid): bytes(item[b"BODY[]"]) for uid, item in data.items() if b"BODY[]" in item}

    def move(self, uid: int, folder: str) -> None:
        with self._errors(f"moving UID {uid} to {folder!r}"):
            client = self._client()
            if client.has_capability("MOVE"):
                client.move([uid], folder)
                return
            client.copy([uid], folder)
            client.delete_messages([uid])
            if client.has_capability("UIDPLUS"):
                client.uid_expunge([uid])
            else:
                client.expunge()

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> None:
        """IDLE (RFC 2177) until the server reports new mail, ``seconds`` pass or ``stop`` is set."""
        client = self._client()
        if not (self.config.idle and client.has_capability("IDLE")):
            stop.wait(seconds)
            return
        with self._errors("waiting in IDLE"):
            client.idle()
            try:
                remaining = seconds
                while remaining > 0 and not stop.is_set():
                    step = min(1.0, remaining)
                    if any(_is_news(r) for r in client.idle_check(timeout=step)):
                        return
                    remaining -= step
            finally:
                client.idle_done()

    # -- internals -------------------------------------------------------------------------
    def _client(self) -> IMAPClient:
        if self.client is None:
            raise MailboxUnavailable(f"not connected to {self.where}")
        return self.client

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (MailboxError, MailboxUnavailable):
            raise
        except (OSError, socket.timeout, imaplib.IMAP4.abort, IMAPClientAbortError) as exc:
            self.close()
            raise MailboxUnavailable(f"connection to {self.where} lost while {doing}: {_text(exc)}") from None
        except IMAPClientError as exc:
            # A NO or BAD answer: the server is there but refused; treat as temporary, never drop mail.
            self.close()
            raise MailboxUnavailable(f"the IMAP server {self.where} refused {doing}: {_text(exc)}") from None


def _is_news(response: tuple) -> bool:
    return len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _text(exc: BaseException) -> str:
    value = exc.args[0] if exc.args else exc
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = " ".join(str(value).split())
    if len(text) > 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:   # imapclient's repr of server bytes
        text = text[2:-1]
    return text or type(exc).__name__
