"""Outbound edge: hand one composed message to its transport.

Input: the raw bytes from :mod:`gateway.composer` and where they go (a Maildir folder,
or an SMTP relay with the envelope). Output: nothing, or a :class:`DeliveryError` that
says whether trying again later can help.

Must not: build or change message headers, touch the database, decide about retries
(the outbox dispatcher does), or put an address containing CR/LF on the SMTP
connection: envelope addresses are checked before the dialogue starts.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import smtplib
import socket
from pathlib import Path
from typing import Mapping, Sequence

from gateway.composer import check_address

_KEY_SAFE = re.compile(rb"[A-Za-z0-9_-]")
_MAX_KEY_CHARS = 120


class DeliveryError(Exception):
    """Delivery failed.

    ``permanent``: True when retrying cannot help (a 5xx reply, an unusable address),
    False for 4xx replies and connection problems. ``reason`` is the server's reply or
    the local cause. ``recipients`` lists the recipients it failed for: when the relay
    refused only some of them, the others have the message and must not get it again.
    """

    def __init__(self, reason: str, *, permanent: bool, recipients: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.recipients = tuple(recipients)


# --- Maildir ------------------------------------------------------------------------


def deliver_to_maildir(maildir: Path, key: str, raw: bytes, delivered: set[str] | None = None,
                       sync_directory: bool = True) -> Path:
    """Store ``raw`` in ``maildir/new`` once per ``key``; return the message's path.

    Follows the Maildir protocol: write to ``tmp/``, fsync, rename into ``new/``, fsync
    the directory. If a message with this key is already in ``new/`` or ``cur/`` (a
    retry after a crash), nothing is written and its path is returned. Line ends are
    stored as LF, as Maildir readers expect.

    A dispatcher delivering many mails passes ``delivered`` (``delivered_stems``, read
    once) instead of a look at the folders for every mail, and ``sync_directory=False``
    with one ``sync_maildir`` before it records the results.

    :raises DeliveryError: (temporary) the folder cannot be written.
    """
    root = Path(maildir)
    stem = maildir_key(key)
    try:
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        if delivered is None or stem in delivered:
            existing = _find_delivered(root, stem)
            if existing is not None:
                return existing
        target = root / "new" / f"{stem}.{_safe_hostname()}"
        tmp = root / "tmp" / f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
        _write_synced(tmp, raw.replace(b"\r\n", b"\n"))
        os.rename(tmp, target)
        if sync_directory:
            _fsync_directory(root / "new")
        return target
    except OSError as exc:
        raise DeliveryError(f"cannot write to Maildir {root}: {exc}", permanent=False) from exc


def delivered_stems(maildir: Path) -> set[str]:
    """The keys (as ``maildir_key`` stems) of every message in ``new/`` and ``cur/``."""
    stems = set()
    for sub in ("new", "cur"):
        try:
            with os.scandir(Path(maildir) / sub) as entries:
                stems.update(entry.name.partition(".")[0] for entry in entries)
        except FileNotFoundError:
            continue
    return stems


def sync_maildir(maildir: Path) -> None:
    """Make the renames into ``new/`` durable (after ``deliver_to_maildir(..., sync_directory=False)``)."""
    try:
        _fsync_directory(Path(maildir) / "new")
    except OSError as exc:
        raise DeliveryError(f"cannot sync Maildir {maildir}: {exc}", permanent=False) from exc


def maildir_key(key: str) -> str:
    """The file-name stem for ``key``: only ``[A-Za-z0-9_-]``, other bytes as ``=XX``.

    The encoding is reversible, so two keys never share a stem; it never contains ".",
    so "<stem>." cannot be the prefix of another key's file. Very long keys are cut and
    completed with a hash.

    >>> maildir_key("<abc.1@desk.example.com>")
    '=3Cabc=2E1=40desk=2Eexample=2Ecom=3E'
    """
    if not key:
        raise ValueError("a delivery key is required")
    data = key.encode("utf-8")
    stem = "".join(chr(b) if _KEY_SAFE.match(bytes([b])) else f"={b:02X}" for b in data)
    if len(stem) > _MAX_KEY_CHARS:
        stem = f"{stem[:80]}-{hashlib.sha256(data).hexdigest()[:32]}"
    return stem


def _find_delivered(root: Path, stem: str) -> Path | None:
    prefix = f"{stem}."
    for sub in ("new", "cur"):
        with os.scandir(root / sub) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    return Path(entry.path)
    return None


def _safe_hostname() -> str:
    # Maildir names use "/" and ":" specially; keep the host part to plain characters.
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- SMTP ---------------------------------------------------------------------------


def deliver_via_smtp(host: str, port: int, envelope_from: str, recipients: Sequence[str],
                     raw: bytes, timeout: float = 30.0) -> None:
    """Send ``raw`` through the relay at ``host:port``.

    ``envelope_from`` may be "" (the null reverse-path). Line ends are normalised to
    CRLF, so no bare LF reaches the relay.

    :raises DeliveryError: permanent for 5xx replies and unusable addresses; temporary
        for 4xx replies, timeouts and connection failures.
    """
    sender, rcpts = _envelope(envelope_from, recipients)
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if not data.isascii() and smtp.has_extn("8bitmime") else []
            refused = smtp.sendmail(sender, rcpts, data, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        raise _refused(exc.recipients) from exc
    except smtplib.SMTPResponseException as exc:
        reason = _reply(exc.smtp_code, exc.smtp_error)
        raise DeliveryError(reason, permanent=exc.smtp_code >= 500, recipients=rcpts) from exc
    except (smtplib.SMTPException, OSError) as exc:
        reason = f"relay {host}:{port} not reachable: {exc or type(exc).__name__}"
        raise DeliveryError(reason, permanent=False, recipients=rcpts) from exc
    if refused:
        raise _refused(refused)


def _envelope(envelope_from: str, recipients: Sequence[str]) -> tuple[str, list[str]]:
    try:
        sender = check_address(envelope_from) if envelope_from else ""
        rcpts = [check_address(r) for r in recipients]
    except ValueError as exc:
        raise DeliveryError(str(exc), permanent=True, recipients=list(recipients)) from exc
    if not rcpts:
        raise DeliveryError("no recipients", permanent=True)
    return sender, rcpts


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(message.split())}"


def _refused(refused: Mapping[str, tuple[int, bytes]]) -> DeliveryError:
    reason = "; ".join(f"{rcpt}: {_reply(code, text)}" for rcpt, (code, text) in refused.items())
    permanent = all(code >= 500 for code, _ in refused.values())
    return DeliveryError(reason, permanent=permanent, recipients=list(refused))
