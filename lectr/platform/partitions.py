"""Daily partitions of ``request_logs``: created ahead of time, dropped past retention."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta, timezone

import asyncpg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^request_logs_(\d{8})$")
_LOCK = 0x4C435054  # "LCPT": one process at a time changes the partition set
DAYS_AHEAD = 3


def partition_name(day: date) -> str:
    return f"request_logs_{day:%Y%m%d}"


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


async def ensure_partitions(conn: asyncpg.Connection, today: date | None = None, *,
                            days_ahead: int = DAYS_AHEAD) -> list[str]:
    """Create the partitions from yesterday to ``days_ahead`` days on, and a default one."""
    today = today or utc_today()
    created = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        existing = await _existing(conn)
        if "request_logs_default" not in existing:
            # Catches rows outside every daily partition (a skewed clock), so a batch never fails whole.
            await conn.execute("CREATE TABLE request_logs_default PARTITION OF request_logs DEFAULT")
            created.append("request_logs_default")
        for offset in range(-1, days_ahead + 1):
            day = today + timedelta(days=offset)
            name = partition_name(day)
            if name in existing:
                continue
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF request_logs "
                f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')")
            created.append(name)
    if created:
        log.info("created partitions: %s", ", ".join(created))
    return created


async def drop_expired(conn: asyncpg.Connection, retention_days: int, today: date | None = None) -> list[str]:
    """Drop whole daily partitions older than ``retention_days``."""
    cutoff = (today or utc_today()) - timedelta(days=retention_days)
    dropped = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        for name in sorted(await _existing(conn)):
            match = _NAME.match(name)
            if match and datetime.strptime(match.group(1), "%Y%m%d").date() < cutoff:
                await conn.execute(f"DROP TABLE {name}")
                dropped.append(name)
    if dropped:
        log.info("dropped partitions past %d days of retention: %s", retention_days, ", ".join(dropped))
    return dropped


async def _existing(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("""
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'request_logs'""")
    return {r["relname"] for r in rows}
