"""Running Postdesk: build the shared pieces, and the ``serve`` loop.

``serve`` runs the SMTP listener on the event loop, and the background work
(process stored messages, deliver the outbox, fire timers) in a child process of
its own (``[desk] worker = "process"``, the default of ``postdesk serve``: the
listener and the worker then use a core each instead of sharing one interpreter
lock) or in a thread beside the listener (``"thread"``). On SQLite the listener
answers once a message is in the spool, and a thread beside it files the spool into
the database (``gateway/filing.py``). The worker is woken after every stored (or
filed) message, so mail shows up on its ticket at once under light load. The child
stops when asked, when ``serve`` is gone, and is started again when it died. With
``[lmtp] enabled`` an LMTP listener runs beside it on the same loop, and with
``[imap] username`` set the IMAP poller runs in a thread of its own
(``imap_poller.PollerThread``). SIGTERM or Ctrl-C: stop listening, let the messages
in hand finish (within ``[smtp] shutdown_grace_seconds``, see ``gateway/shutdown.py``),
run a last pass, exit 0.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from gateway.arrival import release_waiting
from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.filing import SpoolFiler
from gateway.mailer import Deps
from gateway.outbound import send_due
from gateway.rendering import Renderer, default_template_dir
from gateway.shutdown import Connections, drain
from gateway.smtp_server import GatewayHandler, make_server_factory
from gateway.timers import run_due
from gateway.tokens import Signer
from gateway.worker import process_pending
from storage import queries
from storage.db import create_schema, make_engine, share_urgency, transaction
from storage.spool import Spool, spool_path
from storage.templates import DatabaseOverrides

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    engine: Engine
    settings: Settings
    clock: Clock
    deps: Deps
    spool: Spool | None = None   # serve's SMTP/LMTP intake on SQLite (storage/spool.py)


def build_runtime(settings: Settings, clock: Clock | None = None, create: bool = True) -> Runtime:
    engine = make_engine(settings.database_url, settings.database.busy_timeout_seconds)
    if create:
        create_schema(engine)
    secret = os.environ.get(settings.security.secret_env, "").encode("utf-8")
    if not secret:
        with transaction(engine) as session:
            secret = queries.signing_secret(session)
    overrides = DatabaseOverrides(settings.database_url, settings.database.busy_timeout_seconds)
    renderer = Renderer(default_template_dir(), overrides=overrides, default_locale=settings.desk.default_locale,
                        display_timezone=settings.hours.timezone)
    deps = Deps(settings=settings, renderer=renderer, signer=Signer(secret))
    return Runtime(engine, settings, clock or SystemClock(), deps)


WORKER_BATCH = 20
PENDING_PER_LOOK = 20   # how many pending messages the worker takes before it looks whether to stop


def spool_location(settings: Settings):
    """Where ``serve`` keeps its intake spool (``[smtp] spool``, SQLite only), or None."""
    return spool_path(settings.database_url) if settings.smtp.spool else None


def open_spool(settings: Settings) -> Spool | None:
    """The intake spool of ``serve``, created when missing; None without one."""
    path = spool_location(settings)
    return Spool(path, settings.database.busy_timeout_seconds) if path is not None else None


class BackgroundWork:
    """Worker, dispatcher and timers in one thread, woken by the listener."""

    def __init__(self, runtime: Runtime, wake=None, stopping=None, parent_pid: int | None = None) -> None:
        self.runtime = runtime
        self.wake = wake or threading.Event()
        self.stopping = stopping or threading.Event()
        self.parent_pid = parent_pid   # in a child process: stop when this process is gone
        self.thread = threading.Thread(target=self.run, name="postdesk-worker", daemon=True)
        self._next_tick = 0.0
        # Messages per transaction: with SQLite's spool no sender waits for the worker's write, so several
        # share one commit; on PostgreSQL one each, so row locks are held briefly for the other workers.
        self.batch = WORKER_BATCH if spool_location(runtime.settings) is not None else 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=60)

    def check(self) -> None:
        """Nothing to supervise in a thread: an error ends a pass, never the loop."""

    def one_pass(self, final: bool = False) -> None:
        """Process what is pending, fire due timers, send due mail.

        Asked to stop, the worker ends after the messages in hand; the final pass after
        that processes what is still pending for at most ``[smtp] shutdown_grace_seconds``
        (the rest waits, stored, for the next start).
        """
        rt = self.runtime
        deadline = time.monotonic() + rt.settings.smtp.shutdown_grace_seconds
        release_waiting(rt.engine, rt.clock.now())   # replies whose parent did not come in time
        while process_pending(rt.engine, rt.deps, rt.clock, limit=PENDING_PER_LOOK, batch=self.batch):
            if time.monotonic() > deadline if final else self.stopping.is_set():
                break
        if time.monotonic() >= self._next_tick:
            run_due(rt.engine, rt.deps, rt.clock.now())
            self._next_tick = time.monotonic() + rt.settings.desk.tick_interval_seconds
        send_due(rt.engine, rt.settings, rt.clock.now())

    def run(self) -> None:
        while not self.stopping.is_set() and not self._orphaned():
            self.wake.clear()
            try:
                self.one_pass()
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                log.exception("background pass failed; retrying")
                self.stopping.wait(5)
            self.wake.wait(self.runtime.settings.desk.worker_poll_seconds)
        if not self.stopping.is_set():   # orphaned: the next serve's worker takes over
            return
        try:
            self.one_pass(final=True)
        except Exception:  # noqa: BLE001
            log.exception("final pass failed")

    def _orphaned(self) -> bool:
        if self.parent_pid is None or os.getppid() == self.parent_pid:
            return False
        log.warning("serve (pid %s) is gone; the worker stops", self.parent_pid)
        return True


class BackgroundProcess:
    """The same work in ``[desk] workers`` child processes, each started again when it dies.

    Nothing the listener and a child share has a lock the child could die holding: a
    child is woken and asked to stop through a pipe of its own (``Doorbell``), and reads
    the urgency counter without its lock.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._context = multiprocessing.get_context("spawn")   # no fork of a process with threads and sockets
        self.wake = Doorbell()
        self.stopping = threading.Event()
        self.urgent = self._context.Value("i", 0)   # a front door waits for SQLite's lock (storage/db.py)
        share_urgency(runtime.engine, self.urgent)
        self.processes: list = []

    def start(self) -> None:
        self.processes = [self._spawn(slot) for slot in range(self.runtime.settings.desk.workers)]

    def _spawn(self, slot: int):
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_background_main, name="postdesk-worker", daemon=False,
            args=(self.runtime.settings, os.getpid(), reader, self.urgent, logging.getLogger().level))
        process.start()
        reader.close()   # the child's end
        self.wake.connect(slot, writer)
        log.info("worker process %s started", process.pid)
        return process

    def check(self) -> None:
        if self.stopping.is_set():
            return
        for slot, process in enumerate(self.processes):
            if not process.is_alive():
                log.error("worker process %s ended (exit code %s); starting it again", process.pid,
                          process.exitcode)
                self.processes[slot] = self._spawn(slot)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.stop()   # read also by a child still starting: it starts, then makes its final pass
        for process in self.processes:
            process.join(timeout=60)
            if process.is_alive():
                log.error("worker process %s did not stop within 60 s; killed", process.pid)
                process.kill()
                process.join()
        self.wake.close()


class Doorbell:
    """The listener's ends of the pipes that wake its worker children (``set()`` wakes them all).

    A byte is written without blocking: a full pipe already holds a wake-up, and a child
    that is gone is started again by ``BackgroundProcess.check``. No lock is shared with
    a child, so a child killed at any moment cannot leave the listener waiting.
    """

    def __init__(self) -> None:
        self._writers: dict[int, multiprocessing.connection.Connection] = {}
        self._lock = threading.Lock()   # this process's threads only: a respawn closes a pipe another rings

    def connect(self, slot: int, writer) -> None:
        os.set_blocking(writer.fileno(), False)
        with self._lock:
            old = self._writers.pop(slot, None)
            self._writers[slot] = writer
        if old is not None:
            old.close()

    def set(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                try:
                    os.write(writer.fileno(), _WAKE)
                except OSError:   # full (a wake-up is waiting) or the child is gone
                    pass

    def stop(self, most_seconds: float = 5.0) -> None:
        """Ask every child to stop after the messages in hand (a full pipe is waited for, a little)."""
        deadline = time.monotonic() + most_seconds
        with self._lock:
            for writer in self._writers.values():
                while True:
                    try:
                        os.write(writer.fileno(), _STOP)
                    except BlockingIOError:
                        if time.monotonic() < deadline:
                            time.sleep(0.01)
                            continue
                    except OSError:   # the child is gone
                        pass
                    break

    def close(self) -> None:
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            writer.close()


_WAKE, _STOP = b"w", b"s"


def _listen_for_wakes(reader, wake: threading.Event, stopping: threading.Event) -> None:
    """A thread of the worker child: every byte from the listener wakes the loop, a stop byte stops it after the
    messages in hand; the pipe's end (serve gone) wakes it too, to notice."""
    while True:
        try:
            data = os.read(reader.fileno(), 4096)
        except OSError:
            data = b""
        if _STOP in data:
            stopping.set()
        wake.set()
        if not data:
            return


def _background_main(settings: Settings, parent_pid: int, wakes, urgent, log_level: int) -> None:
    """Entry of the worker process: a ``BackgroundWork`` loop in the main thread.

    ``wakes``: the child's end of its pipe from the listener (``Doorbell``), which also asks it to stop.
    """
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    wake, stopping = threading.Event(), threading.Event()
    threading.Thread(target=_listen_for_wakes, args=(wakes, wake, stopping), name="postdesk-wakes",
                     daemon=True).start()

    def finish(*_) -> None:   # SIGTERM/Ctrl-C reach the whole process group: finish the message in hand
        stopping.set()
        wake.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    os.nice(settings.desk.worker_nice)   # the listener's deliveries first
    runtime = None
    while runtime is None:   # asked to stop during start-up: start anyway, for the final pass
        try:   # reads the signing secret: a database that is down makes it wait here, not die and respawn
            runtime = build_runtime(settings, create=False)
        except Exception:  # noqa: BLE001
            if stopping.is_set() or os.getppid() != parent_pid:
                return
            log.exception("the worker cannot start; retrying in 5 s")
            stopping.wait(5)
    share_urgency(runtime.engine, urgent)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, settings.smtp.shutdown_grace_seconds),
                     name="postdesk-orphan-watch", daemon=True).start()
    BackgroundWork(runtime, wake, stopping, parent_pid).run()


def _exit_when_orphaned(parent_pid: int, grace_seconds: float, every_seconds: float = 1.0) -> None:
    """The worker child's last resort: ``serve`` gone, the child ends within ``grace_seconds`` however it is stuck.

    The worker's own loop stops when it sees ``serve`` gone, but it may never look again: a
    ``serve`` killed (SIGKILL) while one of its threads held the lock of an object they share
    leaves that lock taken for good. Ending hard is safe: work in progress is one transaction,
    rolled back, and the next ``serve``'s worker does it again.
    """
    while os.getppid() == parent_pid:
        time.sleep(every_seconds)
    time.sleep(grace_seconds)
    log.error("serve (pid %s) is gone and the worker did not stop within %g s; it ends now", parent_pid,
              grace_seconds)
    os._exit(1)


async def serve(runtime: Runtime, ready: threading.Event | None = None,
                stop: asyncio.Event | None = None, worker: str = "thread") -> None:
    settings = runtime.settings
    if runtime.spool is None:
        runtime.spool = open_spool(settings)
    background = BackgroundProcess(runtime) if worker == "process" else BackgroundWork(runtime)
    filer = (SpoolFiler(runtime.engine, runtime.spool, background.wake.set, runtime.clock,
                        most_bytes=settings.smtp.max_message_bytes) if runtime.spool is not None else None)
    on_stored = filer.wake.set if filer is not None else background.wake.set
    handler = GatewayHandler(runtime.engine, settings, runtime.clock, on_stored=on_stored,
                             resolver=runtime.deps.resolver, spool=runtime.spool)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests): the caller sets ``stop``
    connections = Connections()   # for the graceful shutdown: finish the message in hand, 421 the rest
    server = await loop.create_server(connections.tracking(make_server_factory(handler, settings)),
                                      settings.smtp.host, settings.smtp.port)
    _, lmtp_server = await _start_lmtp(runtime, on_stored, connections)
    background.start()
    if filer is not None:
        filer.start()   # files what a spool of an earlier run still holds, at once
    poller = _start_poller(runtime, background)
    log.info("Postdesk listening on %s:%s for %s", settings.smtp.host, settings.smtp.port,
             settings.smtp.support_address)
    if ready is not None:
        ready.set()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            background.check()
    log.info("shutting down: finishing messages in hand")
    server.close()
    if lmtp_server is not None:
        lmtp_server.close()
    if poller is not None:
        await asyncio.to_thread(poller.join)
    await drain(connections, settings.smtp.shutdown_grace_seconds)
    if filer is not None:
        await asyncio.to_thread(filer.stop)   # everything spooled goes into the database before the last pass
    background.stop()
    log.info("stopped")


async def _start_lmtp(runtime: Runtime, on_stored, connections: Connections):
    """The LMTP listener of ``[lmtp]``, when enabled: (handler, server), else (None, None)."""
    settings = runtime.settings
    if not settings.lmtp.enabled:
        return None, None
    from gateway.lmtp_server import LmtpHandler, make_lmtp_factory
    handler = LmtpHandler(runtime.engine, settings, runtime.clock, on_stored=on_stored,
                          resolver=runtime.deps.resolver, spool=runtime.spool)
    factory = connections.tracking(make_lmtp_factory(handler, settings))
    server = await asyncio.get_running_loop().create_server(factory, settings.lmtp.host, settings.lmtp.port)
    log.info("LMTP listening on %s:%s", settings.lmtp.host, settings.lmtp.port)
    return handler, server


def _start_poller(runtime: Runtime, background: BackgroundWork):
    """The IMAP poller of ``[imap]``, when a mailbox is configured (a username is set)."""
    if not runtime.settings.imap.configured:
        return None
    from gateway.imap_poller import PollerThread
    poller = PollerThread(runtime, background.wake.set)
    poller.start()
    log.info("polling IMAP %s@%s:%s folder %r", runtime.settings.imap.username, runtime.settings.imap.host,
             runtime.settings.imap.port, runtime.settings.imap.folder)
    return poller
