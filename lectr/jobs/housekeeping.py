"""Keeping the database tidy: partitions ahead and past retention, expired sessions and drop counts."""

from __future__ import annotations

import asyncpg

from lectr.platform import partitions


async def run_housekeeping(conn: asyncpg.Connection, retention_days: int) -> None:
    """Create upcoming partitions, drop expired ones, and prune what nobody will read again."""
    await partitions.ensure_partitions(conn)
    await partitions.drop_expired(conn, retention_days)
    await conn.execute("DELETE FROM dashboard_sessions WHERE expires_at < now()")
    await conn.execute("DELETE FROM event_drops WHERE minute < now() - make_interval(days => $1)", retention_days)
