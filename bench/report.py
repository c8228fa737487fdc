"""Tables, the chart and the profile summary of a benchmark run.

Ratios are Postdesk over the bare aiosmtpd server measured in the same run with
the same client, corpus and concurrency; the target lines restate issue 7's speed
targets next to the measured worst case.
"""
from __future__ import annotations

import io
import os
import platform
import pstats
import sqlite3
from importlib import metadata
from pathlib import Path

import psutil

MB = 1024 * 1024


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(), "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "aiosmtpd": _version("aiosmtpd"), "sqlalchemy": _version("SQLAlchemy"),
        "psycopg": _version("psycopg"),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _fmt(value, digits: int = 1, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:,.{digits}f}"


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def matrix_table(results: list[dict]) -> str:
    bare = {r["concurrency"]: r for r in results if r["server"] == "bare" and not r["error"]}
    head = (f"{'server':<18}{'conc':>5}{'msgs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'rate÷bare':>10}{'p99÷bare':>9}"
            f"{'sustained/s':>12}{'sust÷bare':>10}{'backlog':>8}{'RSS MB peak/idle':>17}{'bound MB':>9}"
            f"{'threading':>11}")
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=lambda r: (r["concurrency"], r["server"] != "bare", r["db"])):
        if r["server"] == "postdesk" and r.get("ingestion_only"):
            continue
        name = "bare aiosmtpd" if r["server"] == "bare" else f"postdesk {r['db']}"
        if r["error"] and not r["accepted"]:
            lines.append(f"{name:<18}{r['concurrency']:>5}  FAILED: {r['error'][:200]}")
            continue
        base = bare.get(r["concurrency"])
        is_bare = r["server"] == "bare"
        threading = "-" if is_bare else _threading_cell(r)
        lines.append(
            f"{name:<18}{r['concurrency']:>5}{_fmt(r['accept_rate']):>9}{_fmt(r['p50_ms']):>9}{_fmt(r['p99_ms']):>9}"
            f"{_fmt(None if is_bare else _ratio(r['accept_rate'], base and base['accept_rate']), 2):>10}"
            f"{_fmt(None if is_bare else _ratio(r['p99_ms'], base and base['p99_ms']), 1):>9}"
            f"{'' if is_bare else _fmt(r['sustained_rate']):>12}"
            f"{_fmt(None if is_bare else _ratio(r['sustained_rate'], base and base['accept_rate']), 2):>10}"
            f"{'' if is_bare else _fmt(r['backlog_when_sent'], 0):>8}"
            f"{_fmt(r['peak_rss_bytes'], 0, MB) + '/' + _fmt(r['idle_rss_bytes'], 0, MB):>17}"
            f"{_fmt(r['memory_bound_bytes'], 0, MB):>9}{threading:>11}")
        if r["error"]:
            lines.append(f"{'':<23}error: {r['error'][:200]}")
        codes = {c: n for c, n in r["replies"].items() if c != "250"}
        if codes:
            lines.append(f"{'':<23}not accepted: {codes}")
    return "\n".join(lines)


def _threading_cell(r: dict) -> str:
    t = r.get("threading") or {}
    if not t:
        return "-"
    return "ok" if not t["mismatches"] else f"{t['mismatches']} wrong"


def ingestion_table(results: list[dict], small: int, large: int) -> str:
    head = (f"{'database':<10}{'conc':>5}{f'{small:,} tickets':>16}{f'{large:,} tickets':>18}{'ratio':>8}"
            "   (sustained msgs/s)")
    lines = [head, "-" * len(head)]
    for db in ("sqlite", "postgres"):
        cells = {r["existing"]: r for r in results if r["server"] == "postdesk" and r["db"] == db
                 and r.get("ingestion") is not None}
        if small not in cells or large not in cells:
            continue
        a, b = cells[small], cells[large]
        lines.append(f"{db:<10}{a['concurrency']:>5}{_fmt(a['sustained_rate']):>16}{_fmt(b['sustained_rate']):>18}"
                     f"{_fmt(_ratio(b['sustained_rate'], a['sustained_rate']), 2):>8}"
                     + (f"   error: {b['error'][:120]}" if b["error"] else ""))
    return "\n".join(lines)


def targets(results: list[dict], small: int, large: int) -> str:
    """Issue 7's speed targets against the worst measured cell, per database."""
    bare = {r["concurrency"]: r for r in results if r["server"] == "bare" and not r["error"]}
    lines = []
    for db in ("sqlite", "postgres"):
        cells = [r for r in results if r["server"] == "postdesk" and r["db"] == db and not r.get("ingestion_only")
                 and r["concurrency"] in bare and r["accepted"]]
        if not cells:
            continue
        sustained = min((_ratio(r["sustained_rate"], bare[r["concurrency"]]["accept_rate"]) or 0.0) for r in cells)
        p99 = max(_ratio(r["p99_ms"], bare[r["concurrency"]]["p99_ms"]) or 0.0 for r in cells)
        memory = all((r["peak_rss_bytes"] or 0) - (r["idle_rss_bytes"] or 0) <= r["memory_bound_bytes"]
                     for r in cells)
        wrong = sum((r.get("threading") or {}).get("mismatches", 0) for r in results
                    if r["server"] == "postdesk" and r["db"] == db)
        ingest = [r for r in results if r["server"] == "postdesk" and r["db"] == db and r.get("ingestion") is not None]
        by_size = {r["existing"]: r["sustained_rate"] for r in ingest}
        scale = _ratio(by_size.get(large), by_size.get(small))
        lines.append(f"{db}: sustained ÷ bare ≥ 0.5: worst {_fmt(sustained, 2)} {_mark(sustained >= 0.5)}; "
                     f"p99 ÷ bare ≤ 2: worst {_fmt(p99, 1)} {_mark(p99 <= 2)}; "
                     f"{large:,} ÷ {small:,} tickets ≥ 0.9: {_fmt(scale, 2)} "
                     f"{_mark(scale is not None and scale >= 0.9)}"
                     f"{'' if large >= 1_000_000 else ' (target is for 1 000 000: --big)'}; "
                     f"peak RSS - idle RSS ≤ max_message_bytes × connections: {_mark(memory)}; "
                     f"threading mismatches: {wrong} {_mark(wrong == 0)}")
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def threading_details(results: list[dict]) -> str:
    lines = []
    for r in results:
        t = r.get("threading") or {}
        if not t.get("mismatches"):
            continue
        lines.append(f"postdesk {r['db']} c={r['concurrency']} existing={r['existing']:,}: {t['mismatches']} of "
                     f"{t['checked']} wrong ({t['mismatches_arrived_before_parent']} of them stored or processed "
                     f"before a message they answer; {t['replies_arrived_before_parent']} replies arrived that way "
                     f"in all); "
                     f"outcomes {t['outcomes']}")
        for example in t["examples"][:3]:
            lines.append(f"    {example}")
    return "\n".join(lines)


def chart(results: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("bare aiosmtpd", "bare", "-", "black"), ("postdesk sqlite", "sqlite", "sqlite", "tab:blue"),
              ("postdesk postgres", "postgres", "postgres", "tab:orange")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for label, key, db, colour in series:
        cells = sorted((r for r in results if (r["server"] == "bare" if key == "bare" else
                                                r["server"] == "postdesk" and r["db"] == db)
                        and not r.get("ingestion_only") and r["accepted"]), key=lambda r: r["concurrency"])
        if not cells:
            continue
        x = [r["concurrency"] for r in cells]
        left.plot(x, [r["accept_rate"] for r in cells], "o-", color=colour, label=f"{label}: accepted")
        if key != "bare":
            left.plot(x, [r["sustained_rate"] or 0 for r in cells], "s--", color=colour,
                      label=f"{label}: accepted + processed")
        right.plot(x, [r["p99_ms"] for r in cells], "o-", color=colour, label=f"{label}: p99")
        right.plot(x, [r["p50_ms"] for r in cells], "^:", color=colour, label=f"{label}: p50")
    for axis, ylabel in ((left, "messages per second"), (right, "acceptance latency, ms (log)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent SMTP connections")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
        levels = sorted({r["concurrency"] for r in results})
        axis.set_xticks(levels, [str(c) for c in levels])
    left.set_yscale("log")
    right.set_yscale("log")
    left.set_title("Throughput (log)")
    right.set_title("Latency: MAIL FROM to 250 after DATA")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_summary(folder: Path, top: int = 25) -> str:
    parts = []
    for role, label in (("worker", "worker thread (pipeline, outbox, timers)"),
                        ("accept-intake", "SMTP accept path: intake in executor threads"),
                        ("accept-loop", "SMTP accept path: event loop (aiosmtpd)")):
        file = folder / f"{role}.prof"
        if not file.exists():
            parts.append(f"== {label}: no profile written")
            continue
        stream = io.StringIO()
        stats = pstats.Stats(str(file), stream=stream)
        stats.strip_dirs().sort_stats("cumulative").print_stats(top)
        parts.append(f"== {label}, top {top} by cumulative time\n{stream.getvalue().strip()}")
    return "\n\n".join(parts)
