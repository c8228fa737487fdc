"""``postdesk serve`` under cProfile, one profiler per thread, for ``bench/run.py --profile``.

cProfile sees only the thread it was enabled in, so every thread gets its own
profiler (``threading.Thread.run`` is wrapped before the gateway starts any) and
the main thread, which runs the asyncio loop with aiosmtpd, gets one too. On exit
(SIGTERM: ``serve`` finishes the message in hand and returns) the profiles are
written to ``--out`` grouped by role:

- ``accept-loop.prof``: the main thread (aiosmtpd's protocol on the event loop);
- ``accept-intake.prof``: the executor threads ``asyncio.to_thread`` runs intake in;
- ``worker.prof``: the ``postdesk-worker`` thread (pipeline, outbox, timers).

    python bench/profiled_serve.py --out DIR -- serve --config postdesk.toml
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
from pathlib import Path

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()


def _role(thread_name: str) -> str:
    if thread_name == "postdesk-worker":
        return "worker"
    if thread_name.startswith("asyncio"):
        return "accept-intake"
    return "other-threads"


def _install() -> None:
    original = threading.Thread.run

    def run(self) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()
            with _lock:
                _profiles.append((_role(self.name), profile))

    threading.Thread.run = run


def _write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with _lock:
        roles: dict[str, pstats.Stats] = {}
        for role, profile in _profiles:
            if role in roles:
                roles[role].add(profile)
            else:
                roles[role] = pstats.Stats(profile)
    for role, stats in roles.items():
        stats.dump_stats(str(out / f"{role}.prof"))


def main() -> int:
    parser = argparse.ArgumentParser(description="run postdesk under cProfile")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    _install()
    from gateway.cli import main as postdesk_main
    loop_profile = cProfile.Profile()
    loop_profile.enable()
    try:
        code = postdesk_main(args)
    finally:
        loop_profile.disable()
        with _lock:
            _profiles.append(("accept-loop", loop_profile))
        _write(options.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
