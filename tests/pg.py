"""A private PostgreSQL cluster for tests, started from the Debian binaries on a loopback port.

Skipped with a clear reason when PostgreSQL is not installed, unless
POSTDESK_REQUIRE_SERVICES is set (as CI does), where its absence fails.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


def skip_or_fail() -> None:
    if os.environ.get("POSTDESK_REQUIRE_SERVICES"):
        raise RuntimeError("PostgreSQL is required (POSTDESK_REQUIRE_SERVICES is set) but not installed")
    pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sockets = base / "sock"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sockets, "postgres")
        subprocess.run(_as_postgres([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                     "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
        self.resume()

    def resume(self) -> None:
        """Start the server of an existing cluster (again, after ``stop``)."""
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "60",
                                     "-l", str(self.base / "log"), "start"]), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg
        name = "pd_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def pg_cluster():
    if not available():
        skip_or_fail()
    # Not under pytest's tmp folder: that one is private to root and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="postdesk-pg-"))
    base.chmod(0o755)
    cluster = Cluster(base / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
