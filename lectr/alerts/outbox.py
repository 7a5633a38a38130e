"""The alert outbox: one ``alert_deliveries`` row per new anomaly × channel × target.

Idempotent by construction: rows are inserted only for anomalies that have none yet, and the
table's UNIQUE (anomaly_id, channel, target) makes a second process or a re-run insert nothing
(``ON CONFLICT DO NOTHING``). Only anomalies opened — and still in their window — within the last
``HORIZON_HOURS`` are alerted: an org that sets up alerts later, or a month of history replayed
with ``lectr jobs run anomalies --at``, does not get a flood of old alerts.
"""

from __future__ import annotations

import asyncpg

HORIZON_HOURS = 24

_ENQUEUE = """
    INSERT INTO alert_deliveries (org_id, anomaly_id, channel, target)
    SELECT a.org_id, a.id, t.channel, t.target
    FROM anomalies a
    JOIN alert_settings s ON s.org_id = a.org_id
    CROSS JOIN LATERAL (
        SELECT 'email' AS channel, r AS target FROM unnest(s.email_recipients) AS r WHERE s.email_enabled
        UNION ALL
        SELECT 'webhook', s.webhook_url WHERE s.webhook_enabled AND s.webhook_url IS NOT NULL
    ) t
    WHERE a.opened_at > now() - make_interval(hours => $1)
      AND a.window_end > now() - make_interval(hours => $1)
      AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.anomaly_id = a.id)
    ON CONFLICT (anomaly_id, channel, target) DO NOTHING
"""


async def enqueue(conn: asyncpg.Connection, *, horizon_hours: int = HORIZON_HOURS) -> int:
    """Queue deliveries for newly opened anomalies; return how many rows were added."""
    status = await conn.execute(_ENQUEUE, horizon_hours)
    return int(status.rsplit(" ", 1)[1])
