"""The processes a benchmark run starts, and a private PostgreSQL cluster.

Every child goes through :class:`Children`, which stops it (SIGTERM, then SIGKILL
after a grace period) at the end of its cell and, whatever happened, at the end
of the run. The PostgreSQL cluster lives in a temporary folder, listens on a free
loopback port and is run as the ``postgres`` user when the benchmark runs as root.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil


class Children:
    """Every process the benchmark started; ``stop_all`` ends the ones still running."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, args: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
        finally:
            log.close()
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace_seconds: float = 30.0) -> int | None:
        """SIGTERM (the gateway then finishes what it holds), SIGKILL after ``grace_seconds``."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc in self.running:
            self.running.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc, grace_seconds=10.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_smtp_ready(port: int, proc: subprocess.Popen, log_path: Path, timeout_seconds: float = 60.0) -> None:
    """Until the server at ``port`` greets with 220; fails early when the process died."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout_seconds:.0f} s:\n{tail(log_path)}")


def _tree(pid: int) -> list[psutil.Process]:
    """The process and its children (``serve`` runs its worker in a child process)."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def wait_idle(pid: int, timeout_seconds: float = 30.0, busy_percent: float = 5.0) -> float:
    """Until process ``pid`` and its children use less than ``busy_percent`` of a core over 0.25 s;
    returns the seconds waited."""
    started = time.monotonic()
    tree = _tree(pid)
    for process in tree:
        process.cpu_percent(None)
    while time.monotonic() - started < timeout_seconds:
        time.sleep(0.25)
        if sum(_quietly(lambda p=p: p.cpu_percent(None), 0.0) for p in tree) < busy_percent:
            break
    return time.monotonic() - started


def peak_rss_bytes(pid: int) -> int | None:
    """The sum of the high-water marks of resident memory (Linux ``VmHWM``) of the process and its
    children: an upper bound of their peak together."""
    total = 0
    for process in _tree(pid):
        total += _vm_hwm(process.pid) or _quietly(lambda p=process: p.memory_info().rss, 0)
    return total or None


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes(pid: int) -> int | None:
    return sum(_quietly(lambda p=p: p.memory_info().rss, 0) for p in _tree(pid)) or None


def cpu_seconds(pid: int) -> float | None:
    tree = _tree(pid)
    if not tree:
        return None
    return sum(_quietly(lambda p=p: p.cpu_times().user + p.cpu_times().system, 0.0) for p in tree)


def _quietly(read, default):
    """``read()``, or ``default`` when the process has gone meanwhile."""
    try:
        return read()
    except psutil.Error:
        return default


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PostgresCluster:
    """A throw-away PostgreSQL cluster under ``root`` (default settings, fsync on)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.bindir = _pg_bindir()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False

    def _run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-1500:]}")
        return result.stdout

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
            for parent in self.root.parents:    # postgres must reach its folder through ours
                if parent.stat().st_uid == os.geteuid() and not parent.stat().st_mode & 0o001:
                    parent.chmod(parent.stat().st_mode | 0o711)
                if parent == Path("/tmp") or parent == parent.parent:
                    break
        self._run(f"{self.bindir}/initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", options, "start")
        self.started = True

    def stop(self) -> None:
        if not self.started:
            return
        try:
            self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        self.started = False

    def _admin(self, sql: str) -> list[tuple]:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def version(self) -> str:
        return self._admin("SHOW server_version")[0][0]

    def create_database(self, name: str) -> str:
        self._admin(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settings(self) -> dict:
        rows = self._admin("SELECT name, setting FROM pg_settings WHERE name IN "
                           "('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level')")
        return dict(rows)


def _pg_bindir() -> str:
    found = shutil.which("initdb")
    if found:
        return str(Path(os.path.realpath(found)).parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return str(Path(candidates[-1]).parent)
