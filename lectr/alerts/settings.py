"""Per-org alert settings: email recipients, a webhook URL, the p95 latency threshold.

The API, the CLI and the dashboard all write through here, so they validate alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from lectr.alerts.addresses import ALLOW_PRIVATE_VARIABLE, describe_target, literal_kind
from lectr.settings.urls import InvalidURL, check_base_url

MAX_RECIPIENTS = 20
MAX_THRESHOLD_MS = 3_600_000
# A practical address check (RFC 5321 sizes, a dotted domain, nothing that could break a header):
# what a typo looks like is caught; what a mail server would accept is left to the mail server.
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}|"
                    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@localhost")


class SettingsError(ValueError):
    """A setting that cannot be stored; ``field`` names it, the message says why in one line."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Where one org's alerts go. ``webhook_url`` None: no webhook."""

    email_recipients: tuple[str, ...] = ()
    email_enabled: bool = True
    webhook_url: str | None = None
    webhook_enabled: bool = True

    def as_dict(self) -> dict:
        return {"email_recipients": list(self.email_recipients), "email_enabled": self.email_enabled,
                "webhook_url": self.webhook_url, "webhook_enabled": self.webhook_enabled}

    def targets(self) -> list[tuple[str, str]]:
        """(channel, target) for every enabled channel."""
        out = [("email", r) for r in self.email_recipients] if self.email_enabled else []
        if self.webhook_enabled and self.webhook_url:
            out.append(("webhook", self.webhook_url))
        return out


def check_email(raw: str) -> str:
    """The address without surrounding space; SettingsError naming it when it is not one."""
    text = str(raw).strip()
    if not _EMAIL.fullmatch(text):
        raise SettingsError(f"not a valid email address: {text!r}", "email_recipients")
    return text


def check_recipients(raw) -> tuple[str, ...]:
    """A list of addresses (or one string with commas), checked, without duplicates, in order."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise SettingsError("email_recipients must be a list of addresses", "email_recipients")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise SettingsError(f"not a valid email address: {item!r}", "email_recipients")
        if not item.strip():
            continue
        address = check_email(item)
        if address.lower() not in (a.lower() for a in out):
            out.append(address)
    if len(out) > MAX_RECIPIENTS:
        raise SettingsError(f"at most {MAX_RECIPIENTS} email recipients", "email_recipients")
    return tuple(out)


def check_webhook(raw: str | None) -> str | None:
    """The webhook URL as stored (None or empty: no webhook). https, or http to a loopback host."""
    if raw is None or not str(raw).strip():
        return None
    try:
        return check_base_url(str(raw), what="webhook_url", https_only=True)
    except InvalidURL as exc:
        raise SettingsError(str(exc), "webhook_url") from None


def check_webhook_target(url: str | None, *, allow_private: bool) -> None:
    """Refuse, when it is set, a webhook URL whose host is written as an internal address (a
    loopback, private, link-local... IP, or ``localhost``) unless the operator allows them
    (``LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE``): said when the URL is set rather than at the first
    alert. A host name is judged when it is resolved, at each delivery (``alerts.webhook``)."""
    if not url or allow_private:
        return
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    kind = "loopback" if host == "localhost" or host.endswith(".localhost") else literal_kind(host)
    if kind is not None:
        raise SettingsError(f"webhook_url {describe_target(url)} is a {kind} address; alerts go only to public "
                            f"addresses unless the operator sets {ALLOW_PRIVATE_VARIABLE}=1", "webhook_url")


def check_threshold(raw) -> int | None:
    """A p95 threshold in whole milliseconds, 1..3,600,000; None or empty clears it."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"p95_threshold_ms must be a number of milliseconds, got {raw!r}",
                            "p95_threshold_ms") from None
    if isinstance(raw, bool) or not (1 <= value <= MAX_THRESHOLD_MS) or value != int(value):
        raise SettingsError(f"p95_threshold_ms must be a whole number from 1 to {MAX_THRESHOLD_MS:,}",
                            "p95_threshold_ms")
    return int(value)


async def get_settings(conn: asyncpg.Connection, org_id: int) -> AlertSettings:
    row = await conn.fetchrow("SELECT * FROM alert_settings WHERE org_id = $1", org_id)
    if row is None:
        return AlertSettings()
    return AlertSettings(tuple(row["email_recipients"]), row["email_enabled"], row["webhook_url"],
                         row["webhook_enabled"])


async def put_settings(conn: asyncpg.Connection, org_id: int, settings: AlertSettings, *,
                       allow_private: bool = False) -> AlertSettings:
    """Store (replace) the org's settings, validated; return them as stored. ``allow_private``:
    the operator's ``LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE`` (``check_webhook_target``)."""
    webhook = check_webhook(settings.webhook_url)
    check_webhook_target(webhook, allow_private=allow_private)
    settings = AlertSettings(check_recipients(list(settings.email_recipients)), bool(settings.email_enabled),
                             webhook, bool(settings.webhook_enabled))
    await conn.execute("""
        INSERT INTO alert_settings (org_id, email_recipients, email_enabled, webhook_url, webhook_enabled)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (org_id) DO UPDATE SET email_recipients = EXCLUDED.email_recipients,
            email_enabled = EXCLUDED.email_enabled, webhook_url = EXCLUDED.webhook_url,
            webhook_enabled = EXCLUDED.webhook_enabled, updated_at = now()
        """, org_id, list(settings.email_recipients), settings.email_enabled, settings.webhook_url,
        settings.webhook_enabled)
    return settings


async def get_threshold(conn: asyncpg.Connection, org_id: int) -> int | None:
    return await conn.fetchval("SELECT p95_threshold_ms FROM organizations WHERE id = $1", org_id)


async def set_threshold(conn: asyncpg.Connection, org_id: int, value) -> int | None:
    """Set (or clear, with None) ``organizations.p95_threshold_ms``; return it as stored."""
    threshold = check_threshold(value)
    await conn.execute("UPDATE organizations SET p95_threshold_ms = $2, updated_at = now() WHERE id = $1",
                       org_id, threshold)
    return threshold
