"""The alert delivery job (every ``LECTR_ALERT_INTERVAL`` seconds, one runner at a time).

Each run queues deliveries for newly opened anomalies (``outbox.enqueue``), then sends the due
ones — at most ``batch`` — each with a timeout, and records the outcome: ``sent`` with
``sent_at``, or a failure with ``last_error`` and the next attempt after an exponential backoff;
after ``max_attempts`` (or at once, when trying again cannot help: a webhook refused because
its address is not public) the delivery is ``failed`` for good. Detection never waits on it: this is a
job of its own, under its own advisory lock, and a failing server only fails its own delivery.

Guarantee: at least once, with a stable id for receivers to drop a repeat. The scheduler runs a
job in one transaction, so the run's outcomes are committed together after its last send: a
delivery recorded ``sent`` is never sent again (a restart reads it), and only a process that dies
between a send and the end of that run (at most ``batch`` sends, each bounded by its timeout) can
send those again. Repeats carry the same ``Message-ID`` (mail clients fold them) and the same
``delivery_id`` in the webhook body and ``X-Lectr-Delivery`` header.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from typing import TYPE_CHECKING

import asyncpg
import orjson

from lectr.alerts import outbox
from lectr.settings.alerts import AlertConfig
from lectr.alerts.email import DeliveryError

if TYPE_CHECKING:
    from lectr.alerts.webhook import WebhookClient

# aiohttp, jinja2 (through the message formatters) and aiosmtplib are imported when there is
# something to send: proxy workers schedule this job too and otherwise never load them.

log = logging.getLogger(__name__)

_DUE = """
    SELECT d.id AS delivery_id, d.channel, d.target, d.attempts, o.name AS org_name, a.*
    FROM alert_deliveries d
    JOIN anomalies a ON a.id = d.anomaly_id
    JOIN organizations o ON o.id = d.org_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
"""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds before attempt n+1 after n failures: ``base * 2**(n-1)``, at most ``cap``."""

    base: float = 30.0
    cap: float = 3600.0
    max_attempts: int = 6

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, failures - 1))


def anomaly_fields(row) -> dict:
    """An ``anomalies`` row as a plain dict (``detail`` decoded)."""
    out = dict(row)
    if isinstance(out.get("detail"), str):
        out["detail"] = orjson.loads(out["detail"])
    return out


class AlertJob:
    """Sends pending alert deliveries; ``run(conn)`` is the scheduled job."""

    def __init__(self, config: AlertConfig, *, backoff: Backoff = Backoff(), batch: int = 20) -> None:
        self.config = config
        self.backoff = backoff
        self.batch = batch

    async def run(self, conn: asyncpg.Connection) -> dict[str, int]:
        """One turn: queue, send what is due, record; return counts (queued, sent, retrying, failed)."""
        counts = {"queued": 0, "sent": 0, "retrying": 0, "failed": 0}
        if await conn.fetchval("SELECT to_regclass('anomalies')") is None:
            return counts  # no anomaly detector in this database yet: nothing to alert about
        counts["queued"] = await outbox.enqueue(conn)
        rows = await conn.fetch(_DUE, self.batch)
        if not rows:
            return counts
        from lectr.alerts.webhook import WebhookClient

        async with WebhookClient(allow_private=self.config.allow_private_webhooks) as webhooks:
            for row in rows:
                outcome = await self._deliver(conn, webhooks, row)
                counts[outcome] += 1
        return counts

    async def _deliver(self, conn: asyncpg.Connection, webhooks: "WebhookClient", row) -> str:
        from lectr.alerts.message import compose

        anomaly = anomaly_fields(row)
        anomaly["id"] = row["id"]
        delivery_id = f"lectr-alert-{row['delivery_id']}"
        try:
            try:
                await send_alert(self.config, webhooks, row["channel"], row["target"],
                                 compose(anomaly, row["org_name"], self.config.dashboard_url), delivery_id)
            except (DeliveryError, asyncio.CancelledError):
                raise
            except Exception as exc:
                # One bad row must not abort the run: its rollback would send the run's other
                # alerts again next turn, and again, for as long as the bad row stays.
                log.debug("alert %s failed unexpectedly", delivery_id, exc_info=True)
                raise DeliveryError(f"could not send: {type(exc).__name__}") from None
        except DeliveryError as exc:
            failures = row["attempts"] + 1
            final = exc.permanent or failures >= self.backoff.max_attempts
            log.warning("alert %s (%s to %s) failed, attempt %d%s: %s", delivery_id, row["channel"],
                        _shown(row["channel"], row["target"]), failures, ", giving up" if final else "", exc)
            await conn.execute("""
                UPDATE alert_deliveries SET attempts = $2, last_error = $3, status = $4,
                    next_attempt_at = clock_timestamp() + make_interval(secs => $5)
                WHERE id = $1""", row["delivery_id"], failures, str(exc), "failed" if final else "pending",
                self.backoff.delay(failures))
            return "failed" if final else "retrying"
        await conn.execute("""
            UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1, sent_at = clock_timestamp(),
                last_error = NULL WHERE id = $1""", row["delivery_id"])
        log.info("alert %s sent by %s to %s", delivery_id, row["channel"], _shown(row["channel"], row["target"]))
        return "sent"


def _shown(channel: str, target: str) -> str:
    from lectr.alerts.webhook import describe_target

    return describe_target(target) if channel == "webhook" else target


async def send_alert(config: AlertConfig, webhooks: "WebhookClient", channel: str, target: str, alert,
                     delivery_id: str) -> None:
    """Send one alert by ``channel`` ("email" or "webhook") to ``target``; DeliveryError on failure."""
    from lectr.alerts.email import build_message, send_email

    if channel == "email":
        domain = config.sender.rpartition("@")[2] or "lectr"
        message = build_message(sender=config.sender, recipient=target, subject=alert.subject, body=alert.body,
                                message_id=f"<{delivery_id}@{domain}>")
        await send_email(config.smtp, message)
    elif channel == "webhook":
        await webhooks.post(target, {**alert.payload, "delivery_id": delivery_id}, delivery_id=delivery_id)
    else:
        raise DeliveryError(f"unknown channel {channel!r}")


def sample_anomaly(org_id: int) -> dict:
    """A made-up anomaly for "send test alert": id 0, the org as a whole, the current hour."""
    from datetime import datetime, timedelta, timezone

    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return {"id": 0, "org_id": org_id, "feature": None, "metric": "cost", "direction": "up",
            "window_start": end - timedelta(hours=1), "window_end": end, "current_value": 12.5,
            "baseline_mean": 3.2, "baseline_std": 0.9, "deviation_sigma": 10.3,
            "detail": {"baseline": "a test alert: these figures are made up"}}


async def send_test_alerts(conn: asyncpg.Connection, org_id: int, config: AlertConfig) -> list[dict]:
    """Send a test alert to every configured channel of the org now (nothing is queued or
    recorded); return ``[{"channel", "target", "ok", "error"}]``, one per target."""
    from lectr.alerts.message import compose
    from lectr.alerts.settings import get_settings
    from lectr.alerts.webhook import WebhookClient

    settings = await get_settings(conn, org_id)
    org_name = await conn.fetchval("SELECT name FROM organizations WHERE id = $1", org_id)
    alert = compose(sample_anomaly(org_id), org_name, config.dashboard_url)
    alert = type(alert)(subject="[Lectr test] " + alert.subject.removeprefix("[Lectr] "),
                        text="(test) " + alert.text, body="This is a test alert from Lectr.\n\n" + alert.body,
                        payload={**alert.payload, "test": True, "text": "(test) " + alert.text})
    results = []
    async with WebhookClient(allow_private=config.allow_private_webhooks) as webhooks:
        for channel, target in settings.targets():
            try:
                await send_alert(config, webhooks, channel, target, alert,
                                 f"lectr-test-{org_id}-{secrets.token_hex(4)}")
                results.append({"channel": channel, "target": _shown(channel, target), "ok": True, "error": None})
            except DeliveryError as exc:
                results.append({"channel": channel, "target": _shown(channel, target), "ok": False,
                                "error": str(exc)})
    return results
