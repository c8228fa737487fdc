"""One measurement: one server, one database, one number of existing tickets, one concurrency.

Postdesk: a fresh installation (``desk``), ``postdesk serve`` as its own process,
wait until it is idle, drive the corpus, then poll the inbound table read-only
until no message is ``pending`` or waiting for its parent (the sustained intake:
accepted *and* processed, notifications queued, because they commit with the
outcome), read the peak RSS,
stop the server with SIGTERM, check threading. The bare aiosmtpd server gets the
same client, corpus and concurrency; its pass is short, so it runs three times and
the median counts.
"""
from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from bench import desk, procs, verify
from bench.corpus import Corpus
from bench.smtpclient import Sent, drive

BENCH_DIR = Path(__file__).resolve().parent
POLL_SECONDS = 0.02
BARE_REPEATS = 3


@dataclass
class CellResult:
    server: str                      # "bare" | "postdesk"
    db: str                          # "sqlite" | "postgres" | "-"
    existing: int
    concurrency: int
    messages: int
    accepted: int = 0
    replies: dict = field(default_factory=dict)          # reply code -> count (anything but 250 is a failure)
    send_seconds: float = 0.0
    accept_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    sustained_rate: float | None = None
    backlog_when_sent: int | None = None                 # messages still pending when the client finished
    drain_seconds: float | None = None                   # from the last 250 until nothing was pending
    peak_rss_bytes: int | None = None
    idle_rss_bytes: int | None = None                    # after start-up, before the first message
    memory_bound_bytes: int | None = None
    server_cpu_seconds: float | None = None
    threading: dict = field(default_factory=dict)
    error: str | None = None
    notes: list = field(default_factory=list)
    cell_seconds: float = 0.0                            # set-up, measurement and clean-up

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CellPlan:
    server: str
    db: str
    existing: int
    concurrency: int
    corpus: Corpus
    max_message_bytes: int
    time_limit_seconds: float
    profile_dir: Path | None = None
    workers: int = 1                  # [desk] workers of the Postdesk cells


def run_cell(plan: CellPlan, work: Path, children: procs.Children, cluster: procs.PostgresCluster | None,
             keep: bool = False) -> CellResult:
    result = CellResult(plan.server, plan.db, plan.existing, plan.concurrency, len(plan.corpus.messages))
    started = time.monotonic()
    folder = work / f"{plan.server}-{plan.db}-{plan.existing}-c{plan.concurrency}"
    folder.mkdir(parents=True)
    db_name = f"bench_{plan.existing}_c{plan.concurrency}"
    try:
        if plan.server == "bare":
            _run_bare(plan, folder, children, result)
        else:
            url = cluster.create_database(db_name) if plan.db == "postgres" else f"sqlite:///{folder / 'postdesk.db'}"
            _run_postdesk(plan, folder, url, children, result)
    except Exception as exc:  # noqa: BLE001 - a failing cell is reported, the run goes on
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        children.stop_all()
        if not keep:
            if plan.db == "postgres" and plan.server == "postdesk":
                try:
                    cluster.drop_database(db_name)
                except Exception as exc:  # noqa: BLE001
                    result.notes.append(f"could not drop {db_name}: {exc}")
            shutil.rmtree(folder, ignore_errors=True)
        result.cell_seconds = round(time.monotonic() - started, 1)
    return result


def _run_bare(plan: CellPlan, folder: Path, children: procs.Children, result: CellResult) -> None:
    port = procs.free_port()
    log = folder / "server.log"
    proc = children.start([sys.executable, str(BENCH_DIR / "bare_server.py"), "--port", str(port),
                           "--data-size-limit", str(plan.max_message_bytes)], log)
    procs.wait_smtp_ready(port, proc, log)
    result.idle_rss_bytes = procs.rss_bytes(proc.pid)
    trials = []
    for _ in range(BARE_REPEATS):   # a short sample: take the median of a few, so one hiccup does not set the ceiling
        cpu_before = procs.cpu_seconds(proc.pid)
        sent = asyncio.run(drive("127.0.0.1", port, plan.corpus.messages, plan.concurrency,
                                 plan.time_limit_seconds))
        trial = CellResult(plan.server, plan.db, plan.existing, plan.concurrency, len(plan.corpus.messages))
        _summarise_sent(trial, sent)
        _server_figures(trial, proc.pid, cpu_before, plan)
        trials.append(trial)
    median = sorted(trials, key=lambda t: t.accept_rate)[len(trials) // 2]
    for name in ("accepted", "replies", "send_seconds", "accept_rate", "p50_ms", "p99_ms", "max_ms",
                 "server_cpu_seconds", "peak_rss_bytes", "memory_bound_bytes"):
        setattr(result, name, getattr(median, name))
    result.notes += median.notes
    result.notes.append({"trials_msgs_per_s": [round(t.accept_rate, 1) for t in trials]})
    result.sustained_rate = result.accept_rate
    children.stop(proc)


def _run_postdesk(plan: CellPlan, folder: Path, url: str, children: procs.Children, result: CellResult) -> None:
    port = procs.free_port()
    config = desk.write_config(folder, url, port, plan.max_message_bytes,
                               worker="thread" if plan.profile_dir is not None else "process", workers=plan.workers)
    desk.run_cli(config, "init")
    result.notes.append(desk.populate(config, plan.corpus.directory, plan.existing))
    log = folder / "server.log"
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    if plan.profile_dir is not None:
        command = [sys.executable, str(BENCH_DIR / "profiled_serve.py"), "--out", str(plan.profile_dir),
                   "--", "serve", "--config", str(config)]
    proc = children.start(command, log, cwd=folder)
    procs.wait_smtp_ready(port, proc, log)
    result.notes.append({"idle_wait_seconds": round(procs.wait_idle(proc.pid), 2)})
    result.idle_rss_bytes = procs.rss_bytes(proc.pid)
    watcher = _Watcher(url)
    try:
        cpu_before = procs.cpu_seconds(proc.pid)
        sent = asyncio.run(drive("127.0.0.1", port, plan.corpus.messages, plan.concurrency,
                                 plan.time_limit_seconds))
        _summarise_sent(result, sent)
        result.backlog_when_sent = watcher.pending()
        done_at = watcher.wait_drained(result.accepted, deadline=time.monotonic() + plan.time_limit_seconds)
        if done_at is None:
            result.error = f"not drained within {plan.time_limit_seconds:.0f} s ({watcher.pending()} pending)"
        elif sent:
            started = min(s.started for s in sent)
            result.sustained_rate = result.accepted / (done_at - started)
            result.drain_seconds = max(0.0, done_at - max(s.finished for s in sent))
        _server_figures(result, proc.pid, cpu_before, plan)
        result.threading = verify.check_threading(plan.corpus, sent, watcher.rows())
    finally:
        watcher.close()
        code = children.stop(proc)
        if code not in (0, None):
            result.notes.append(f"serve exited with {code}: {procs.tail(log, 5)}")


def _summarise_sent(result: CellResult, sent: list[Sent]) -> None:
    result.replies = {str(code): n for code, n in sorted(Counter(s.code for s in sent).items())}
    ok = [s for s in sent if s.code == 250]
    result.accepted = len(ok)
    failures = [s for s in sent if s.code != 250]
    if failures:
        result.notes.append({"first_failure": failures[0].reply[:300]})
    if not sent:
        return
    result.send_seconds = max(s.finished for s in sent) - min(s.started for s in sent)
    result.accept_rate = len(ok) / result.send_seconds if result.send_seconds > 0 else 0.0
    latencies = sorted(s.latency * 1000 for s in ok) or [0.0]
    result.p50_ms = _percentile(latencies, 50)
    result.p99_ms = _percentile(latencies, 99)
    result.max_ms = latencies[-1]


def _server_figures(result: CellResult, pid: int, cpu_before: float | None, plan: CellPlan) -> None:
    result.peak_rss_bytes = procs.peak_rss_bytes(pid)
    result.memory_bound_bytes = plan.max_message_bytes * plan.concurrency
    cpu_after = procs.cpu_seconds(pid)
    if cpu_before is not None and cpu_after is not None:
        result.server_cpu_seconds = round(cpu_after - cpu_before, 2)


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, -(-len(values) * pct // 100))
    return values[int(rank) - 1]


# Not processed yet: queued, or a reply waiting for the message it answers (gateway/arrival.py).
_UNFINISHED = "outcome IN ('pending', 'deferred')"


class _Watcher:
    """Read-only view of the inbound rows of the run (those after the prefilled ones) while the gateway runs.

    Its queries use the primary key only: a scan of a million prefilled rows every poll would load the
    database under measurement."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            url = f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
        self.engine = create_engine(url)
        with self.engine.connect() as connection:
            self.after = connection.execute(text("SELECT COALESCE(MAX(id), 0) FROM inbound")).scalar_one()

    def pending(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(text(f"SELECT count(*) FROM inbound WHERE id > :after AND {_UNFINISHED}"),
                                      {"after": self.after}).scalar_one()

    def wait_drained(self, accepted: int, deadline: float) -> float | None:
        """``time.time()`` when every accepted message had left ``pending``; None at the deadline."""
        query = text(f"SELECT count(*), sum(CASE WHEN {_UNFINISHED} THEN 1 ELSE 0 END) FROM inbound "
                     "WHERE id > :after")
        while time.monotonic() < deadline:
            with self.engine.connect() as connection:
                total, pending = connection.execute(query, {"after": self.after}).one()
            if total >= accepted and not pending:
                return time.time()
            time.sleep(POLL_SECONDS)
        return None

    def rows(self) -> list[verify.Row]:
        with self.engine.connect() as connection:
            found = connection.execute(text("SELECT id, message_id, outcome, ticket_number, reason, processed_at "
                                            "FROM inbound WHERE id > :after"), {"after": self.after})
            return [verify.Row(*row) for row in found]

    def close(self) -> None:
        self.engine.dispose()
