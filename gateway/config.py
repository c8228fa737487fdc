"""Configuration: a TOML file -> frozen dataclasses.

Every key is optional and documented in ``config.example.toml``; an unknown
section or key, or a value of the wrong type, is a :class:`ConfigError` with one
clear line. Relative paths (the SQLite file, the Maildir) are resolved against
the folder of the configuration file, or the working directory without one.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

ENV_VAR = "POSTDESK_CONFIG"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///postdesk.db"
    busy_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    support_address: str = "support@desk.example.com"
    max_message_bytes: int = 26_214_400
    max_recipients: int = 50
    hostname: str = "desk.example.com"
    shutdown_grace_seconds: float = 30.0
    spool: bool = True


@dataclass(frozen=True)
class OutboundConfig:
    transport: str = "maildir"
    maildir: str = "outbox"
    relay_host: str = "127.0.0.1"
    relay_port: int = 25
    from_name: str = "Postdesk Support"
    max_attempts: int = 8
    retry_base_seconds: int = 60


@dataclass(frozen=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 143
    ssl: bool = False
    username: str = ""
    password: str = ""
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = "Failed"
    rejected_folder: str = "Rejected"      # refused senders' mail (SMTP would have answered 550)
    starttls: bool = False                 # upgrade a plain connection with STARTTLS (ssl = false)
    password_env: str = ""                 # environment variable holding the password (wins over password)
    oauth2_token_env: str = ""             # environment variable holding an OAuth2 access token
    create_folders: bool = True            # create missing processed/failed/rejected folders
    idle: bool = True                      # wait with IDLE where offered, else poll
    idle_seconds: int = 300                # re-issue IDLE this often (RFC 2177: under 29 minutes)
    poll_interval_seconds: float = 60.0    # without IDLE: wait this long between passes
    batch_size: int = 25                   # messages fetched per FETCH; progress logged per batch
    timeout_seconds: float = 30.0          # socket timeout of one IMAP command
    reconnect_initial_seconds: float = 1.0
    reconnect_max_seconds: float = 300.0
    notify_refused: bool = True            # answer refused senders with the sender_refused notice
    notice_interval_hours: float = 24.0    # at most one such notice per address in this time
    require_authenticated_sender: bool = True   # only answer senders that pass [auth] (DMARC or DKIM)

    @property
    def configured(self) -> bool:
        return bool(self.username)


@dataclass(frozen=True)
class LmtpConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 2424


@dataclass(frozen=True)
class DeskConfig:
    product_name: str = "Postdesk"
    default_locale: str = "en"
    modules: tuple[str, ...] = ("Reporting", "Billing", "User management", "Integrations", "Mobile app")
    shared_local_parts: tuple[str, ...] = (
        "info", "support", "team", "office", "sales", "kontakt", "contact", "admin", "service",
        "hello", "mail", "billing", "buchhaltung", "help", "hilfe", "marketing", "noreply",
        "no-reply", "postmaster", "webmaster", "hostmaster", "abuse", "mailer-daemon",
        "newsletter", "vertrieb", "verwaltung", "zentrale", "empfang", "helpdesk",
    )
    worker: str = "process"                # `serve` runs the worker in a child process, or in a "thread"
    workers: int = 1                       # worker processes (worker = "process"); more pay on PostgreSQL
    worker_nice: int = 10                  # CPU priority of worker processes below the listener's (0: equal)
    worker_poll_seconds: float = 1.0
    tick_interval_seconds: float = 60.0
    parent_wait_seconds: float = 2.0       # a reply naming only messages not received yet waits for them (0: never)
    late_parent_days: int = 7              # a late parent joins its reply's ticket this long; older notes are deleted


@dataclass(frozen=True)
class LifecycleConfig:
    reopen_window_days: int = 14
    service_request_autoclose_days: int = 30
    problem_status_request_days: int = 30
    problem_close_after_request_days: int = 5


@dataclass(frozen=True)
class PackagesConfig:
    basic: int = 1
    bronze: int = 3
    silver: int = 5
    gold: int = 10

    def cap(self, package: str) -> int:
        return getattr(self, package)

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))


@dataclass(frozen=True)
class SecurityConfig:
    secret_env: str = "POSTDESK_SECRET"


@dataclass(frozen=True)
class AuthConfig:
    """Sender authentication of mail that names a known person (``gateway/sender_auth.py``)."""

    policy: str = "quarantine"              # "refuse" (550 5.7.x) | "quarantine" | "off"
    trusted_authserv_ids: tuple[str, ...] = ()   # authserv-ids of our border MTA's Authentication-Results
    verify_dkim: bool = True                # without a trusted Authentication-Results: verify DKIM ourselves
    dkim_required_domains: tuple[str, ...] = ()  # From domains whose mail must carry a valid aligned DKIM signature
    dns_timeout_seconds: float = 5.0        # per DNS lookup of a DKIM key


@dataclass(frozen=True)
class LimitsConfig:
    """Hostile-MIME limits (``gateway/limits.py``)."""

    action: str = "refuse"                  # "refuse" (552 5.3.4) | "drop" offending parts | "quarantine"
    max_header_bytes: int = 262_144
    max_mime_parts: int = 500
    max_mime_depth: int = 20
    max_attachments: int = 100
    max_attachment_bytes: int = 20_971_520


@dataclass(frozen=True)
class LoopsConfig:
    """Loop breaking (``gateway/loops.py``)."""

    window_minutes: int = 60
    max_auto_replies_per_address: int = 5   # automatic mails to one customer address per window
    max_auto_replies_per_ticket: int = 3    # automatic mails about one ticket to one customer per window
    max_replies_per_ticket_per_address: int = 10   # inbound mails on one ticket from one address per window


@dataclass(frozen=True)
class HoursConfig:
    """Support hours: response targets count only this time (see ``gateway/hours.py``)."""

    timezone: str = "Europe/Berlin"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: str = "09:00"
    end: str = "18:00"
    holiday_country: str = ""            # ISO 3166 code for the ``holidays`` package, e.g. "DE"; "" = none
    holiday_subdivision: str = ""        # e.g. "BE" (Berlin); only with holiday_country
    extra_closed_dates: tuple[str, ...] = ()   # ISO dates without support, e.g. "2026-12-24"


@dataclass(frozen=True)
class TargetsConfig:
    """First-response targets per package, in support hours, and when agents are warned."""

    basic: float = 24.0
    bronze: float = 16.0
    silver: float = 8.0
    gold: float = 4.0
    warn_before_hours: float = 1.0

    def first_response_hours(self, package: str) -> float:
        return float(getattr(self, package, self.basic))


@dataclass(frozen=True)
class Settings:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    lmtp: LmtpConfig = field(default_factory=LmtpConfig)
    desk: DeskConfig = field(default_factory=DeskConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    packages: PackagesConfig = field(default_factory=PackagesConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    hours: HoursConfig = field(default_factory=HoursConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    loops: LoopsConfig = field(default_factory=LoopsConfig)
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def support_domain(self) -> str:
        return self.smtp.support_address.rpartition("@")[2].lower()

    @property
    def maildir_path(self) -> Path:
        return self.resolve_path(self.outbound.maildir)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL, with a relative SQLite path made absolute against ``base_dir``."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////") and ":memory:" not in url:
            return prefix + str(self.resolve_path(url[len(prefix):]))
        return url

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "base_dir"}


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from ``path``, else ``$POSTDESK_CONFIG``, else the built-in defaults."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        return Settings()
    file = Path(chosen)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    return settings_from_mapping(data, base_dir=file.resolve().parent)


def settings_from_mapping(data: dict[str, Any], base_dir: Path | None = None) -> Settings:
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown configuration section [{name}]; known: {', '.join(sorted(_SECTIONS))}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table of keys")
        sections[name] = _build_section(name, _section_class(name), values)
    settings = Settings(**sections, base_dir=base_dir or Path.cwd())
    _check(settings)
    return settings


def _section_class(name: str) -> type:
    return {f.name: f.default_factory for f in dataclasses.fields(Settings) if f.name == name}[name]


def _build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key '{key}' in [{section}]; known: {', '.join(sorted(known))}")
        kwargs[key] = _coerce(section, key, known[key].default, value)
    return cls(**kwargs)


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    expected = type(default)
    if expected is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"[{section}] {key} must be a list of strings")
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise ConfigError(f"[{section}] {key} must be a {expected.__name__}, not {type(value).__name__} ({value!r})")
    return value


def _check(settings: Settings) -> None:
    if settings.outbound.transport not in ("maildir", "smtp"):
        raise ConfigError(f"[outbound] transport must be \"maildir\" or \"smtp\", not {settings.outbound.transport!r}")
    if settings.desk.default_locale not in ("de", "en"):
        raise ConfigError("[desk] default_locale must be \"de\" or \"en\"")
    if settings.desk.worker not in ("process", "thread"):
        raise ConfigError(f"[desk] worker must be \"process\" or \"thread\", not {settings.desk.worker!r}")
    if settings.desk.workers < 1:
        raise ConfigError(f"[desk] workers must be at least 1, not {settings.desk.workers}")
    if not 0 <= settings.desk.worker_nice <= 19:
        raise ConfigError(f"[desk] worker_nice must be between 0 and 19, not {settings.desk.worker_nice}")
    address = settings.smtp.support_address
    if address.count("@") != 1 or "+" in address.partition("@")[0]:
        raise ConfigError(f"[smtp] support_address must be a plain address like support@example.com, not {address!r}")
    for name in settings.packages.names():
        if settings.packages.cap(name) < 1:
            raise ConfigError(f"[packages] {name} must be at least 1")
    _check_time_rules(settings)
    _check_mail_safety(settings)


def _check_time_rules(settings: Settings) -> None:
    for key, value in dataclasses.asdict(settings.lifecycle).items():
        if value < 1:
            raise ConfigError(f"[lifecycle] {key} must be at least 1")
    for name in settings.packages.names():
        if settings.targets.first_response_hours(name) <= 0:
            raise ConfigError(f"[targets] {name} must be more than 0 support hours")
    if settings.targets.warn_before_hours < 0:
        raise ConfigError("[targets] warn_before_hours must not be negative")
    if not 0 <= settings.desk.parent_wait_seconds <= 600:   # later than an SMTP DATA timeout is not "in flight"
        raise ConfigError("[desk] parent_wait_seconds must be between 0 and 600")
    if settings.desk.late_parent_days < 1:
        raise ConfigError("[desk] late_parent_days must be at least 1")
    from gateway.hours import support_hours   # the one place that understands [hours]
    try:
        support_hours(settings.hours)
    except ValueError as exc:
        raise ConfigError(f"[hours] {exc}") from None


def _check_mail_safety(settings: Settings) -> None:
    if settings.auth.policy not in ("refuse", "quarantine", "off"):
        raise ConfigError(f"[auth] policy must be \"refuse\", \"quarantine\" or \"off\", not {settings.auth.policy!r}")
    if settings.limits.action not in ("refuse", "drop", "quarantine"):
        raise ConfigError(f"[limits] action must be \"refuse\", \"drop\" or \"quarantine\", "
                          f"not {settings.limits.action!r}")
    for section in ("limits", "loops"):
        for key, value in dataclasses.asdict(getattr(settings, section)).items():
            if isinstance(value, int) and value < 1:
                raise ConfigError(f"[{section}] {key} must be at least 1")
    if settings.auth.dns_timeout_seconds <= 0:
        raise ConfigError("[auth] dns_timeout_seconds must be more than 0")
