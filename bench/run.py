"""The Postdesk benchmark, one command: ``python bench/run.py [--quick] [--db sqlite|postgres|both]``.

One run measures, with the same corpus, client and concurrency levels:

1. a bare aiosmtpd server that accepts and discards (the ceiling);
2. Postdesk on SQLite and/or PostgreSQL (a private cluster), each cell a fresh
   installation with 1 000 existing tickets: acceptance rate and latency, the
   sustained intake (accepted and processed), peak memory, threading of every message;
3. the sustained intake with many more existing tickets (100 000; ``--big``: 1 000 000).

It prints the tables, writes ``results.json``, ``report.txt`` and ``bench.png`` into
``--out``, and stops every process it started, also on errors and Ctrl-C.
``--profile`` instead runs Postdesk under cProfile at one concurrency and prints the
top functions of the worker and of the SMTP accept path.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.cell import CellPlan, run_cell  # noqa: E402
from bench.corpus import make_corpus  # noqa: E402
from bench.people import make_directory  # noqa: E402
from bench.procs import Children, PostgresCluster  # noqa: E402

FULL = {"messages": 1000, "concurrency": "1,4,16,32", "large": 100_000, "ingest_concurrency": 16, "orgs": 150,
        "time_limit": 900.0}
QUICK = {"messages": 60, "concurrency": "1,8,32", "large": 20_000, "ingest_concurrency": 8, "orgs": 60,
         "time_limit": 120.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (about 3 minutes on 2 cores)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--messages", type=int, help="messages per cell (full 1000, quick 60)")
    parser.add_argument("--concurrency", help="comma-separated connection counts (full 1,4,16,32; quick 1,8,32)")
    parser.add_argument("--existing", type=int, default=1_000, help="existing tickets in every cell (1000)")
    parser.add_argument("--large", type=int, help="existing tickets of the comparison (full 100000, quick 20000)")
    parser.add_argument("--big", action="store_true", help="compare with 1 000 000 existing tickets")
    parser.add_argument("--ingest-concurrency", type=int, help="concurrency of that comparison (full 16, quick 8)")
    parser.add_argument("--orgs", type=int, help="customer organisations (full 150, quick 60)")
    parser.add_argument("--agents", type=int, default=5, help="agents; each gets a notice per new ticket (5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-message-bytes", type=int, default=26_214_400,
                        help="SIZE limit of both servers, as [smtp] max_message_bytes (25 MiB)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of serve, [desk] workers (1)")
    parser.add_argument("--time-limit", type=float, help="seconds per cell for sending and for processing")
    parser.add_argument("--profile", action="store_true", help="profile Postdesk (cProfile) instead of the matrix")
    parser.add_argument("--keep", action="store_true", help="keep the databases, configs and logs of every cell")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick or args.profile else FULL
    args.messages = args.messages or preset["messages"]
    args.levels = [int(c) for c in (args.concurrency or preset["concurrency"]).split(",")]
    args.large = 1_000_000 if args.big else (args.large or preset["large"])
    args.ingest_concurrency = args.ingest_concurrency or preset["ingest_concurrency"]
    args.orgs = args.orgs or preset["orgs"]
    args.time_limit = args.time_limit or preset["time_limit"]
    args.dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    return args


def plan_cells(args, corpus_small, corpus_large, profile_root: Path | None) -> list[tuple[CellPlan, dict]]:
    """The cells in the order they run; the dict holds flags for the report."""
    cells = []

    def plan(server, db, existing, concurrency, corpus, profile_dir=None):
        return CellPlan(server, db, existing, concurrency, corpus, args.max_message_bytes, args.time_limit,
                        profile_dir, args.workers)

    if profile_root is not None:
        cells.append((plan("bare", "-", args.existing, args.ingest_concurrency, corpus_small), {}))
        for db in args.dbs:
            cells.append((plan("postdesk", db, args.existing, args.ingest_concurrency, corpus_small,
                               profile_root / db), {}))
        return cells
    for concurrency in args.levels:
        cells.append((plan("bare", "-", args.existing, concurrency, corpus_small), {}))
        for db in args.dbs:
            flags = {"ingestion": True} if concurrency == args.ingest_concurrency else {}
            cells.append((plan("postdesk", db, args.existing, concurrency, corpus_small), flags))
    for db in args.dbs:
        if args.ingest_concurrency not in args.levels:
            cells.append((plan("postdesk", db, args.existing, args.ingest_concurrency, corpus_small),
                          {"ingestion": True, "ingestion_only": True}))
        cells.append((plan("postdesk", db, args.large, args.ingest_concurrency, corpus_large),
                      {"ingestion": True, "ingestion_only": True}))
    return cells


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the clean-up below
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="postdesk-bench-"))
    work.chmod(0o711)   # the PostgreSQL cluster runs as another user below it
    children, cluster = Children(), None
    info = {"machine": report.machine(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()}}
    started = time.monotonic()
    try:
        print(_machine_line(info["machine"]), flush=True)
        info["load_before"] = _load_line()
        print(info["load_before"], flush=True)
        directory = make_directory(args.seed, args.orgs, args.agents)
        corpus_small = make_corpus(directory, args.messages, args.seed, args.existing)
        corpus_large = make_corpus(directory, args.messages, args.seed, args.large)
        info["corpus"] = corpus_small.summary()
        print(f"corpus: {_corpus_line(info['corpus'])}", flush=True)
        if "postgres" in args.dbs:
            cluster = _start_postgres(work, info, args)
        profile_root = args.out / "profile" if args.profile else None
        results = []
        for plan, flags in plan_cells(args, corpus_small, corpus_large, profile_root):
            result = run_cell(plan, work, children, cluster, keep=args.keep).to_dict() | flags
            results.append(result)
            print(_progress(result), flush=True)
        info["results"] = results
        info["load_after"] = _load_line()
        info["seconds"] = round(time.monotonic() - started, 1)
        _finish(args, info, profile_root)
        return 0
    finally:
        children.stop_all()
        if cluster is not None:
            cluster.stop()
        if args.keep:
            print(f"cells kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _start_postgres(work: Path, info: dict, args) -> PostgresCluster | None:
    """The private cluster; when it cannot start, the run goes on without PostgreSQL and says why."""
    cluster = PostgresCluster(work / "pg")
    try:
        cluster.start()
        info["postgres"] = {"version": cluster.version(), **cluster.settings()}
        print(f"postgres: {info['postgres']}", flush=True)
        return cluster
    except Exception as exc:  # noqa: BLE001
        cluster.stop()
        info["postgres"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"PostgreSQL could not start, measuring without it: {info['postgres']['error']}", flush=True)
        args.dbs.remove("postgres")
        return None


def _finish(args, info: dict, profile_root: Path | None) -> None:
    results = info["results"]
    workers = f", {args.workers} worker processes" if args.workers != 1 else ""
    title = (f"Postdesk benchmark, {info['corpus']['messages']} messages per cell, {args.existing:,} existing tickets"
             f"{workers} — {info['machine']['cores']} cores, {info['machine']['cpu']}, load average {os.getloadavg()[0]:.1f}")
    text = [title, f"{info['load_before']}; at the end: {info['load_after'].split(': ', 1)[1]}", "",
            report.matrix_table(results)]
    if profile_root is None:
        text += ["", "Ingestion with more existing tickets:",
                 report.ingestion_table(results, args.existing, args.large),
                 "", "Targets (issue 7):", report.targets(results, args.existing, args.large)]
    if info.get("postgres", {}).get("error"):
        text += ["", f"PostgreSQL not measured: {info['postgres']['error']}"]
    details = report.threading_details(results)
    if details:
        text += ["", "Threading mismatches:", details]
    if profile_root is not None:
        text += ["", "Profiled run (cProfile slows the server; compare functions, not rates)."]
        for db in args.dbs:
            text += ["", f"######## profile: postdesk {db}", report.profile_summary(profile_root / db)]
    text += ["", f"run took {info['seconds']} s"]
    output = "\n".join(text)
    print("\n" + output)
    name = "profile" if profile_root is not None else "bench"
    (args.out / f"{name}-report.txt").write_text(output + "\n", encoding="utf-8")
    (args.out / f"{name}-results.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    written = [args.out / f"{name}-report.txt", args.out / f"{name}-results.json"]
    if profile_root is None:
        try:
            report.chart(results, args.out / "bench.png", title)
            written.append(args.out / "bench.png")
        except ImportError:
            print("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    print(f"\nwritten: {', '.join(str(path) for path in written)}")


def _load_line() -> str:
    one, five, _ = os.getloadavg()
    busy = one > 0.5 * (os.cpu_count() or 1)
    return (f"load average before the run: {one:.2f} (1 min), {five:.2f} (5 min)"
            + (" - other processes compete for the CPU: rates are lower and noisier" if busy else ""))


def _machine_line(m: dict) -> str:
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}; Python {m['python']}, "
            f"SQLite {m['sqlite']}, aiosmtpd {m['aiosmtpd']}, SQLAlchemy {m['sqlalchemy']}, psycopg {m['psycopg']}")


def _corpus_line(c: dict) -> str:
    return (f"{c['messages']} messages per cell ({c['new']} new tickets, {c['replies']} replies, "
            f"{c['replies_to_existing']} replies to existing tickets, {c['from_agents']} from agents), "
            f"{c['organisations']} organisations, {c['accounts']} accounts, {c['html_share']:.0%} HTML, "
            f"{c['with_attachments']} with attachments, {c['german_share']:.0%} German, "
            f"median {c['bytes_median'] / 1024:.1f} KB, max {c['bytes_max'] / 1024:.0f} KB")


def _progress(r: dict) -> str:
    name = "bare aiosmtpd" if r["server"] == "bare" else f"postdesk {r['db']} ({r['existing']:,} tickets)"
    if r["error"] and not r["accepted"]:
        return f"  {name}, c={r['concurrency']}: FAILED: {r['error'][:300]}"
    sustained = "" if r["server"] == "bare" else f", sustained {r['sustained_rate'] or 0:.1f}/s"
    wrong = (r.get("threading") or {}).get("mismatches")
    return (f"  {name}, c={r['concurrency']}: {r['accept_rate']:.1f} msgs/s accepted, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms{sustained}" + (f", {wrong} threading mismatches" if wrong else "")
            + f" ({r['cell_seconds']:.0f} s)"
            + (f" [error: {r['error'][:200]}]" if r["error"] else ""))


if __name__ == "__main__":
    sys.exit(main())
