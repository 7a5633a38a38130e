"""Settings, read once from ``LECTR_*`` environment variables.

Every variable is listed in ``VARIABLES`` with its default and meaning; the README's
configuration table is checked against it by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lectr.settings.alerts import AlertConfig, AlertConfigError
from lectr.providers.registry import DEFAULT_UPSTREAMS, PROVIDERS, UPSTREAM_PROVIDERS


class ConfigError(ValueError):
    """A ``LECTR_*`` variable holds a value Lectr cannot use."""


# name -> (default, description). Defaults are strings, as the environment would give them.
VARIABLES: dict[str, tuple[str, str]] = {
    "LECTR_WORKERS": ("0", "Worker processes sharing the proxy port (SO_REUSEPORT); 0 means one per core."),
    "LECTR_HOST": ("127.0.0.1", "Address both listeners bind to (0.0.0.0 in the Docker image)."),
    "LECTR_PROXY_PORT": ("8080", "Port of the proxy listener (`/v1/...`, `/healthz`, `/readyz`)."),
    "LECTR_ADMIN_PORT": ("8081", "Port of the admin listener (management API, dashboard, metrics)."),
    "LECTR_DATABASE_URL": ("", "PostgreSQL URL. Unset: an embedded PostgreSQL is started in `LECTR_DATA_DIR`."),
    "LECTR_DATA_DIR": ("~/.local/share/lectr", "Where the embedded database and the event spool live "
                       "(`$XDG_DATA_HOME/lectr` when XDG_DATA_HOME is set)."),
    "LECTR_LOG_LEVEL": ("INFO", "Python logging level name."),
    # LECTR_UPSTREAM_OPENAI, _ANTHROPIC, ...: one per provider module with a global base URL.
    **{f"LECTR_UPSTREAM_{name.upper()}": (DEFAULT_UPSTREAMS[name], PROVIDERS[name].base_url_help)
       for name in UPSTREAM_PROVIDERS},
    "LECTR_MAX_BODY_BYTES": ("33554432", "Largest request body accepted; larger gets 413."),
    "LECTR_MAX_HEADER_BYTES": ("65536", "Largest request line plus headers accepted; larger gets 431."),
    "LECTR_HEADER_TIMEOUT": ("30", "Seconds a client may take to send one whole request (head and body), "
                             "from the connection's opening or the request's first byte; then 408."),
    "LECTR_IDLE_TIMEOUT": ("75", "Seconds an idle keep-alive client connection is kept open."),
    "LECTR_CLIENT_WRITE_TIMEOUT": ("60", "Seconds a client may take no bytes of a response before its "
                                   "connection is closed (recorded as client_write_timeout)."),
    "LECTR_UPSTREAM_CONNECT_TIMEOUT": ("5", "Seconds to open a connection to a provider; then 504 (refused: 502)."),
    "LECTR_UPSTREAM_READ_TIMEOUT": ("600", "Seconds to wait for the provider's next bytes; then 504."),
    "LECTR_UPSTREAM_POOL_SIZE": ("256", "Most open connections per provider origin."),
    "LECTR_SHUTDOWN_TIMEOUT": ("30", "Seconds in-flight requests get to finish after SIGTERM/SIGINT."),
    "LECTR_RING_SIZE": ("65536", "Events the ring buffer holds before new ones are dropped and counted."),
    "LECTR_FLUSH_EVENTS": ("20", "The event writer flushes when this many events are waiting..."),
    "LECTR_FLUSH_INTERVAL": ("5", "...or when this many seconds have passed, whichever comes first."),
    "LECTR_SPOOL_MAX_MB": ("256", "Disk the spool may use for events while Postgres is unavailable."),
    "LECTR_RETENTION_DAYS": ("90", "Days of request_logs kept; older daily partitions are dropped."),
    "LECTR_ADMIN_SECRET": ("", "Bearer secret for the operator API (/api/v1/orgs, /api/v1/pricing); unset: disabled."),
    "LECTR_AGGREGATE_INTERVAL": ("60", "Seconds between dashboard summary runs."),
    "LECTR_ROLLUP_INTERVAL": ("60", "Seconds between runs of the hourly rollups job."),
    "LECTR_SESSION_HOURS": ("12", "Lifetime of a dashboard session."),
    "LECTR_ANOMALY_INTERVAL": ("300", "Seconds between anomaly detector runs (each evaluates the last complete hour)."),
    "LECTR_RECOMMEND_INTERVAL": ("86400", "Seconds between model recommendation runs."),
    "LECTR_RECOMMEND_MIN_REQUESTS": ("500", "Requests in 30 days a feature needs before models are recommended for it."),
    "LECTR_COLD_NICE": ("10", "How far below the proxy workers the cold process (jobs, admin listener, tokeniser) "
                        "runs, as a nice increment 0-19, so its work never delays a worker's wake-up; 0: the same."),
    "LECTR_BUSY_POLL_US": ("200", "Longest the proxy loop spins (microseconds) waiting for the next event "
                           "instead of sleeping; self-tuned below that; 0 turns it off."),
    "LECTR_CAPTURE_MAX_BYTES": ("4194304", "Most response bytes kept per event for usage parsing."),
    "LECTR_SMTP_URL": ("", "SMTP server for alert mail: `smtp://user:password@host:587` (STARTTLS when offered) "
                       "or `smtps://...:465`; unset: no email alerts."),
    "LECTR_ALERT_FROM": ("", "Sender of alert mail; unset: `lectr@` the SMTP host."),
    "LECTR_DASHBOARD_URL": ("", "Dashboard address used in alert links; unset: `http://` the admin host and port."),
    "LECTR_ALERT_INTERVAL": ("30", "Seconds between alert delivery runs (sends queued alerts, retries failures)."),
    "LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE": ("0", "1: alert webhooks may also go to loopback, private, link-local and "
                                          "other non-public addresses (checked on the address resolved at delivery)."),
}


def _int(env: dict[str, str], name: str) -> int:
    raw = env.get(name) or VARIABLES[name][0]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _float(env: dict[str, str], name: str) -> float:
    raw = env.get(name) or VARIABLES[name][0]
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _url(name: str, raw: str) -> str:
    from lectr.settings.urls import InvalidURL, check_base_url
    try:
        return check_base_url(raw, what=name)
    except InvalidURL as exc:
        raise ConfigError(str(exc)) from None


def _alerts(env: dict[str, str]) -> AlertConfig:
    try:
        return AlertConfig.from_env(env, admin_host=env.get("LECTR_HOST") or VARIABLES["LECTR_HOST"][0],
                                    admin_port=_int(env, "LECTR_ADMIN_PORT"))
    except AlertConfigError as exc:
        raise ConfigError(str(exc)) from None


def _default_data_dir(env: dict[str, str] | None = None) -> Path:
    xdg = (os.environ if env is None else env).get("XDG_DATA_HOME")
    return Path(xdg, "lectr") if xdg else Path(VARIABLES["LECTR_DATA_DIR"][0]).expanduser()


def _workers(env: dict[str, str]) -> int:
    return _int(env, "LECTR_WORKERS") or len(os.sched_getaffinity(0))  # 0: one per core


# The dataclasses' defaults are VARIABLES' defaults, parsed as from an empty environment:
# one source, so ``Settings()`` and ``Settings.from_env({})`` cannot disagree.
def _d_int(name: str) -> int:
    return _int({}, name)


def _d_float(name: str) -> float:
    return _float({}, name)


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Limits the proxy listener enforces on each client connection."""

    max_body_bytes: int = _d_int("LECTR_MAX_BODY_BYTES")
    max_header_bytes: int = _d_int("LECTR_MAX_HEADER_BYTES")
    header_timeout: float = _d_float("LECTR_HEADER_TIMEOUT")
    idle_timeout: float = _d_float("LECTR_IDLE_TIMEOUT")
    client_write_timeout: float = _d_float("LECTR_CLIENT_WRITE_TIMEOUT")
    capture_max_bytes: int = _d_int("LECTR_CAPTURE_MAX_BYTES")
    busy_poll_us: int = _d_int("LECTR_BUSY_POLL_US")


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Base URLs and pool settings for the providers Lectr forwards to."""

    base_urls: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    connect_timeout: float = _d_float("LECTR_UPSTREAM_CONNECT_TIMEOUT")
    read_timeout: float = _d_float("LECTR_UPSTREAM_READ_TIMEOUT")
    pool_size: int = _d_int("LECTR_UPSTREAM_POOL_SIZE")


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """How events move from the ring to Postgres, and how long they are kept."""

    flush_events: int = _d_int("LECTR_FLUSH_EVENTS")
    flush_interval: float = _d_float("LECTR_FLUSH_INTERVAL")
    spool_max_bytes: int = _d_int("LECTR_SPOOL_MAX_MB") * 1024 * 1024
    retention_days: int = _d_int("LECTR_RETENTION_DAYS")


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin side: operator secret, dashboard sessions, job schedules, the cold process's priority."""

    secret: str | None = None
    aggregate_interval: float = _d_float("LECTR_AGGREGATE_INTERVAL")
    rollup_interval: float = _d_float("LECTR_ROLLUP_INTERVAL")
    session_hours: float = _d_float("LECTR_SESSION_HOURS")
    anomaly_interval: float = _d_float("LECTR_ANOMALY_INTERVAL")
    recommend_interval: float = _d_float("LECTR_RECOMMEND_INTERVAL")
    recommend_min_requests: int = _d_int("LECTR_RECOMMEND_MIN_REQUESTS")
    cold_nice: int = _d_int("LECTR_COLD_NICE")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything Lectr reads from its environment."""

    host: str = VARIABLES["LECTR_HOST"][0]
    proxy_port: int = _d_int("LECTR_PROXY_PORT")
    admin_port: int = _d_int("LECTR_ADMIN_PORT")
    database_url: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    log_level: str = VARIABLES["LECTR_LOG_LEVEL"][0]
    shutdown_timeout: float = _d_float("LECTR_SHUTDOWN_TIMEOUT")
    workers: int = field(default_factory=lambda: _workers({}))
    ring_size: int = _d_int("LECTR_RING_SIZE")
    limits: ProxyLimits = ProxyLimits()
    upstreams: UpstreamSettings = UpstreamSettings()
    recording: RecordingSettings = RecordingSettings()
    admin: AdminSettings = AdminSettings()
    alerts: AlertConfig = AlertConfig()

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``); raise ConfigError on bad values."""
        env = dict(os.environ if env is None else env)
        base_urls = {
            provider: _url(f"LECTR_UPSTREAM_{provider.upper()}",
                           env.get(f"LECTR_UPSTREAM_{provider.upper()}") or DEFAULT_UPSTREAMS[provider])
            for provider in UPSTREAM_PROVIDERS
        }
        data_dir = env.get("LECTR_DATA_DIR") or _default_data_dir(env)
        return cls(
            host=env.get("LECTR_HOST") or VARIABLES["LECTR_HOST"][0],
            proxy_port=_int(env, "LECTR_PROXY_PORT"),
            admin_port=_int(env, "LECTR_ADMIN_PORT"),
            database_url=env.get("LECTR_DATABASE_URL") or None,
            data_dir=Path(data_dir).expanduser(),
            log_level=(env.get("LECTR_LOG_LEVEL") or VARIABLES["LECTR_LOG_LEVEL"][0]).upper(),
            shutdown_timeout=_float(env, "LECTR_SHUTDOWN_TIMEOUT"),
            workers=_workers(env),
            ring_size=max(1, _int(env, "LECTR_RING_SIZE")),
            limits=ProxyLimits(
                max_body_bytes=_int(env, "LECTR_MAX_BODY_BYTES"),
                max_header_bytes=_int(env, "LECTR_MAX_HEADER_BYTES"),
                header_timeout=_float(env, "LECTR_HEADER_TIMEOUT"),
                idle_timeout=_float(env, "LECTR_IDLE_TIMEOUT"),
                client_write_timeout=_float(env, "LECTR_CLIENT_WRITE_TIMEOUT"),
                capture_max_bytes=_int(env, "LECTR_CAPTURE_MAX_BYTES"),
                busy_poll_us=_int(env, "LECTR_BUSY_POLL_US"),
            ),
            upstreams=UpstreamSettings(
                base_urls=base_urls,
                connect_timeout=_float(env, "LECTR_UPSTREAM_CONNECT_TIMEOUT"),
                read_timeout=_float(env, "LECTR_UPSTREAM_READ_TIMEOUT"),
                pool_size=max(1, _int(env, "LECTR_UPSTREAM_POOL_SIZE")),
            ),
            recording=RecordingSettings(
                flush_events=max(1, _int(env, "LECTR_FLUSH_EVENTS")),
                flush_interval=_float(env, "LECTR_FLUSH_INTERVAL"),
                spool_max_bytes=_int(env, "LECTR_SPOOL_MAX_MB") * 1024 * 1024,
                retention_days=max(1, _int(env, "LECTR_RETENTION_DAYS")),
            ),
            admin=AdminSettings(
                secret=env.get("LECTR_ADMIN_SECRET") or None,
                aggregate_interval=_float(env, "LECTR_AGGREGATE_INTERVAL"),
                rollup_interval=_float(env, "LECTR_ROLLUP_INTERVAL"),
                session_hours=_float(env, "LECTR_SESSION_HOURS"),
                anomaly_interval=_float(env, "LECTR_ANOMALY_INTERVAL"),
                recommend_interval=_float(env, "LECTR_RECOMMEND_INTERVAL"),
                recommend_min_requests=max(1, _int(env, "LECTR_RECOMMEND_MIN_REQUESTS")),
                cold_nice=min(19, _int(env, "LECTR_COLD_NICE")),
            ),
            alerts=_alerts(env),
        )
