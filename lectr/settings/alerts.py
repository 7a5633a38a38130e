"""Where alerts go out from: the SMTP server, the sender, the dashboard link, the delivery interval.

Read from ``LECTR_SMTP_URL``, ``LECTR_ALERT_FROM``, ``LECTR_DASHBOARD_URL``,
``LECTR_ALERT_INTERVAL`` and ``LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE``. The SMTP password lives only
in ``SmtpServer.password``; the ``repr`` of every object here, and every message that names the
server, leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class AlertConfigError(ValueError):
    """An alert setting that cannot be used; the message says why and never holds the password."""


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """An SMTP server: ``smtp://`` (STARTTLS when offered) or ``smtps://`` (TLS from the start)."""

    host: str
    port: int
    use_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """``smtp://user@host:port``, the password left out: what logs and errors may say."""
        user = f"{self.username}@" if self.username else ""
        return f"{'smtps' if self.use_tls else 'smtp'}://{user}{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.display


def parse_smtp_url(raw: str) -> SmtpServer:
    """``smtp://user:pass@host:port`` or ``smtps://...`` (user, password and port optional;
    percent-escapes allowed in user and password); AlertConfigError otherwise."""
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        raise AlertConfigError("LECTR_SMTP_URL has an invalid host or port") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise AlertConfigError("LECTR_SMTP_URL must look like smtp://user:password@host:587 or smtps://host:465")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AlertConfigError("LECTR_SMTP_URL must hold only a user, password, host and port")
    use_tls = parts.scheme == "smtps"
    return SmtpServer(host=parts.hostname, port=port or (465 if use_tls else 587), use_tls=use_tls,
                      username=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password is not None else None)


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Process-wide alert settings (per-org recipients live in the database)."""

    smtp: SmtpServer | None = None
    sender: str = "lectr@localhost"
    dashboard_url: str = "http://127.0.0.1:8081"
    interval: float = 30.0
    # Webhook URLs are chosen by orgs: internal addresses only when the operator says so.
    allow_private_webhooks: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str], *, admin_host: str, admin_port: int) -> "AlertConfig":
        from lectr.alerts.settings import SettingsError, check_email
        from lectr.settings.urls import InvalidURL, check_base_url

        smtp_raw = env.get("LECTR_SMTP_URL") or ""
        smtp = parse_smtp_url(smtp_raw) if smtp_raw else None
        sender = env.get("LECTR_ALERT_FROM") or (f"lectr@{smtp.host}" if smtp else "lectr@localhost")
        try:
            sender = check_email(sender)
        except SettingsError as exc:
            raise AlertConfigError(f"LECTR_ALERT_FROM: {exc}") from None
        host = "127.0.0.1" if admin_host in ("0.0.0.0", "::", "") else admin_host
        default_link = f"http://{host}:{admin_port}"
        try:
            link = check_base_url(env.get("LECTR_DASHBOARD_URL") or default_link, what="LECTR_DASHBOARD_URL")
        except InvalidURL as exc:
            raise AlertConfigError(str(exc)) from None
        raw_interval = env.get("LECTR_ALERT_INTERVAL") or "30"
        try:
            interval = float(raw_interval)
        except ValueError:
            raise AlertConfigError(f"LECTR_ALERT_INTERVAL must be a number of seconds, got {raw_interval!r}") from None
        if not interval > 0:
            raise AlertConfigError(f"LECTR_ALERT_INTERVAL must be positive, got {raw_interval!r}")
        raw_private = (env.get("LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE") or "0").strip().lower()
        if raw_private not in _FLAGS:
            raise AlertConfigError(f"LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE must be 1 or 0, got {raw_private!r}")
        return cls(smtp=smtp, sender=sender, dashboard_url=link, interval=interval,
                   allow_private_webhooks=_FLAGS[raw_private])
