"""Real mail servers for the tests: a private Dovecot (IMAP) and a private Postfix (MTA) on loopback.

Each instance lives in a temporary folder of its own with a generated
configuration, listens on a free 127.0.0.1 port and is stopped by the fixture; the
system's own services are never touched. Without the binaries the tests that need
them are skipped, unless POSTDESK_REQUIRE_SERVICES is set (as CI does): then their
absence is an error.

Dovecot runs its mail processes as an unprivileged user (Dovecot refuses uid 0):
``nobody`` when the tests run as root, else the current user. Postfix needs root to
start; its ``pipe`` transport runs ``postdesk deliver`` as ``nobody``.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient

REQUIRE = bool(os.environ.get("POSTDESK_REQUIRE_SERVICES"))
DOVECOT = shutil.which("dovecot") or (Path("/usr/sbin/dovecot").exists() and "/usr/sbin/dovecot") or None
POSTFIX = shutil.which("postfix") or (Path("/usr/sbin/postfix").exists() and "/usr/sbin/postfix") or None
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]

if REQUIRE and (DOVECOT is None or POSTFIX is None or not IS_ROOT):
    raise RuntimeError("POSTDESK_REQUIRE_SERVICES is set but dovecot and postfix are not both installed "
                       "(apt-get install dovecot-imapd postfix) or the tests do not run as root")

needs_dovecot = pytest.mark.skipif(DOVECOT is None, reason="dovecot not installed (apt-get install dovecot-imapd)")
needs_postfix = pytest.mark.skipif(POSTFIX is None or not IS_ROOT,
                                   reason="postfix not installed (apt-get install postfix), or not running as root "
                                          "(a private Postfix instance must be started by root)")

USER, PASSWORD = "desk", "s3cret-desk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _shared_dir(prefix: str) -> Path:
    """A temporary folder that unprivileged service users can enter (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


# ---- Dovecot ---------------------------------------------------------------------------------

class Dovecot:
    """A private Dovecot with one passwd-file user, its Maildir in a folder of its own."""

    def __init__(self) -> None:
        self.dir = _shared_dir("postdesk-dovecot-")
        self.port = free_port()
        self.conf = self.dir / "dovecot.conf"
        self.log = self.dir / "dovecot.log"
        self.instance = f"postdesk-test-{self.port}"
        (self.dir / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        home = self.dir / "home"
        home.mkdir()
        if IS_ROOT:
            mail_user = pwd.getpwnam("nobody")
            login_user, internal_user = "dovenull", "dovecot"
        else:
            mail_user = pwd.getpwuid(os.getuid())
            login_user = internal_user = mail_user.pw_name
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        self.conf.write_text(f"""
base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = {self.instance}
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
log_path = {self.log}
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
default_login_user = {login_user}
default_internal_user = {internal_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")

    def start(self) -> None:
        # the daemon keeps inherited pipes open: no capture, the log file tells what went wrong
        result = subprocess.run([DOVECOT, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        assert result.returncode == 0, f"dovecot did not start: {self.log.read_text() if self.log.exists() else ''}"
        wait_until(lambda: _port_open(self.port), 10, what="dovecot listening")

    def stop(self) -> None:
        pid_file = self.dir / "run" / "master.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        # The master and every process of this instance (titled "dovecot-<instance>/…"), the
        # imap processes of open connections included, as a full service restart does.
        # Killed outright, as a crashed or restarted server drops its clients; the pid file goes too, as a
        # master that could not clean up leaves it behind.
        pids = [pid, *_pids_titled(f"dovecot-{self.instance}/")]
        for victim in pids:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not _port_open(self.port) and not any(_alive(p) for p in pids), 10,
                   what="dovecot stopped")
        pid_file.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- a second client, standing for the mail server that delivers and for the person who looks
    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as c:
            c.append(folder, raw)

    def messages(self, folder: str) -> list[bytes]:
        """Raw messages in ``folder`` (empty list when it does not exist)."""
        with self.client() as c:
            if not c.folder_exists(folder):
                return []
            c.select_folder(folder, readonly=True)
            uids = c.search(["NOT", "DELETED"])
            return [v[b"BODY[]"] for _, v in sorted(c.fetch(uids, ["BODY.PEEK[]"]).items())] if uids else []

    def folder_exists(self, folder: str) -> bool:
        with self.client() as c:
            return c.folder_exists(folder)

    def imap_config(self, **overrides) -> str:
        """An ``[imap]`` section for this server."""
        values = {"host": "127.0.0.1", "port": self.port, "username": USER, "password": PASSWORD,
                  "reconnect_initial_seconds": 0.2, "reconnect_max_seconds": 1.0, "idle_seconds": 30,
                  "timeout_seconds": 5.0, **overrides}
        return "[imap]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def _pids_titled(prefix: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(prefix.encode()):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def dovecot():
    server = Dovecot()
    server.start()
    try:
        yield server
    finally:
        server.remove()


# ---- Postfix ---------------------------------------------------------------------------------

def _readable_by_others(path: Path) -> bool:
    path = path.resolve()
    try:
        return all(p.stat().st_mode & (stat.S_IXOTH if p.is_dir() else stat.S_IROTH) for p in [path, *path.parents])
    except OSError:
        return False


def pipe_python() -> tuple[list[str] | None, str]:
    """How the unprivileged pipe user runs this checkout's Python, or (None, why not).

    This interpreter when everybody may run it; else Debian's python3 of the same
    version with this checkout and its virtualenv on PYTHONPATH (a pyenv under
    /root is closed to ``nobody``).
    """
    purelib = Path(sysconfig.get_paths()["purelib"])
    if _readable_by_others(Path(sys.executable)) and _readable_by_others(Path(sysconfig.get_paths()["stdlib"])):
        return [sys.executable], ""
    if not (_readable_by_others(REPO / "gateway" / "cli.py") and _readable_by_others(purelib)):
        return None, (f"the checkout {REPO} or its virtualenv is not readable by other users, and Postfix runs "
                      "pipe commands as an unprivileged user (clone into a world-readable folder)")
    system = Path("/usr/bin/python3")
    version = subprocess.run([str(system), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip() if system.exists() else ""
    if version != str(tuple(sys.version_info[:2])):
        return None, f"{sys.executable} is not usable by other users and /usr/bin/python3 is not Python {version}"
    return ["/usr/bin/env", f"PYTHONPATH={REPO}:{purelib}", str(system)], ""


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
smtp      unix  - - n - - smtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
postdesk  unix  - n n - - pipe flags=Rq user=nobody argv={python} -m gateway deliver --config {config} --sender ${{sender}} --recipient ${{recipient}}
"""


class Postfix:
    """A private Postfix that relays mail for the support domain to Postdesk.

    ``transport`` is ``"postdesk:"`` (the pipe transport running ``postdesk deliver``),
    ``"lmtp:inet:127.0.0.1:PORT"`` or ``"smtp:[127.0.0.1]:PORT"`` (a relay to the SMTP
    listener of ``serve``). Everything else is discarded: no mail ever leaves this
    machine, and no DNS is asked. ``main_cf`` adds further ``main.cf`` lines.
    """

    def __init__(self, transport: str, postdesk_config: Path | None = None, domain: str = "desk.example.com",
                 main_cf: str = ""):
        self.dir = _shared_dir("postdesk-postfix-")
        self.port = free_port()
        self.conf_dir, self.queue, self.data = self.dir / "conf", self.dir / "queue", self.dir / "data"
        for d in (self.conf_dir, self.queue, self.data):
            d.mkdir()
        shutil.chown(self.data, "postfix")
        self.maillog = self.dir / "maillog"
        (self.conf_dir / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test.example
mydomain = test.example
myorigin = test.example
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {domain}
relay_transport = {transport}
default_transport = discard:no mail leaves the test machine
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
lmtp_host_lookup = native
smtputf8_enable = no
biff = no
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {self.dir}
maillog_file = {self.maillog}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
lmtp_connect_timeout = 5s
postdesk_destination_recipient_limit = 1
{main_cf}""")
        python = pipe_python()[0] or [sys.executable]
        (self.conf_dir / "master.cf").write_text(MASTER_CF.format(
            port=self.port, python=" ".join(python), config=postdesk_config or "/nonexistent"))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.conf_dir), *args], capture_output=True, text=True,
                              timeout=60)

    def start(self) -> None:
        result = self._postfix("start")
        assert result.returncode == 0, f"postfix start failed: {result.stderr} {self.log_text()}"
        wait_until(lambda: _port_open(self.port), 15, what="postfix listening")

    def stop(self) -> None:
        self._postfix("abort")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, raw: bytes, sender: str, rcpt: str = "support@desk.example.com") -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            client.sendmail(sender, [rcpt], raw)

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now (``postqueue -f``)."""
        subprocess.run([POSTQUEUE, "-c", str(self.conf_dir), "-f"], capture_output=True, timeout=30)

    def queued(self) -> list[dict]:
        """The messages still in the queue (``postqueue -j``)."""
        out = subprocess.run([POSTQUEUE, "-c", str(self.conf_dir), "-j"], capture_output=True, text=True,
                             timeout=30).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        return wait_until(lambda: text in self.log_text() and self.log_text(), timeout, 0.1,
                          what=f"postfix log line {text!r}")
