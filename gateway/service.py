"""Running Postdesk: build the shared pieces, and the ``serve`` loop.

``serve`` runs the SMTP listener on the event loop and one background thread
that processes stored messages, delivers the outbox and fires timers. The
listener wakes the thread after every stored message, so mail shows up on its
ticket at once under light load. SIGTERM or Ctrl-C: stop listening, let the
messages in hand finish, run a last pass, exit 0.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.mailer import Deps
from gateway.outbound import send_due
from gateway.rendering import Renderer, default_template_dir
from gateway.smtp_server import GatewayHandler, make_server_factory
from gateway.timers import run_due
from gateway.tokens import Signer
from gateway.worker import process_pending
from storage import queries
from storage.db import create_schema, make_engine, transaction

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    engine: Engine
    settings: Settings
    clock: Clock
    deps: Deps


def build_runtime(settings: Settings, clock: Clock | None = None, create: bool = True) -> Runtime:
    engine = make_engine(settings.database_url, settings.database.busy_timeout_seconds)
    if create:
        create_schema(engine)
    secret = os.environ.get(settings.security.secret_env, "").encode("utf-8")
    if not secret:
        with transaction(engine) as session:
            secret = queries.signing_secret(session)
    renderer = Renderer(default_template_dir(), default_locale=settings.desk.default_locale)
    deps = Deps(settings=settings, renderer=renderer, signer=Signer(secret))
    return Runtime(engine, settings, clock or SystemClock(), deps)


class BackgroundWork:
    """Worker, dispatcher and timers in one thread, woken by the listener."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="postdesk-worker", daemon=True)
        self._next_tick = 0.0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=60)

    def one_pass(self) -> None:
        rt = self.runtime
        while process_pending(rt.engine, rt.deps, rt.clock):
            pass
        if time.monotonic() >= self._next_tick:
            run_due(rt.engine, rt.deps, rt.clock.now())
            self._next_tick = time.monotonic() + rt.settings.desk.tick_interval_seconds
        send_due(rt.engine, rt.settings, rt.clock.now())

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                self.one_pass()
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                log.exception("background pass failed; retrying")
                self.stopping.wait(5)
            self.wake.wait(self.runtime.settings.desk.worker_poll_seconds)
        try:
            self.one_pass()
        except Exception:  # noqa: BLE001
            log.exception("final pass failed")


async def serve(runtime: Runtime, ready: threading.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    settings = runtime.settings
    background = BackgroundWork(runtime)
    handler = GatewayHandler(runtime.engine, settings, runtime.clock, on_stored=background.wake.set)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests): the caller sets ``stop``
    server = await loop.create_server(make_server_factory(handler, settings), settings.smtp.host, settings.smtp.port)
    background.start()
    log.info("Postdesk listening on %s:%s for %s", settings.smtp.host, settings.smtp.port,
             settings.smtp.support_address)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down: finishing messages in hand")
    server.close()
    deadline = time.monotonic() + 30
    while handler.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    background.stop()
    log.info("stopped")
