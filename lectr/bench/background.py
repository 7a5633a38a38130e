"""``lectr bench --background-summary``: the dashboard summary running while a scenario measures.

Fills ``request_logs`` with ``ROWS`` rows for the bench org (spread over the last 20 hours, so
every period's summary covers them all), brings the rollups up to date once (the one-off
catch-up a fresh million rows cost, done before measuring, as a running Lectr does it a minute at
a time), and has Lectr's cold process run the aggregator every ``INTERVAL`` seconds
(``LECTR_AGGREGATE_INTERVAL``). Each load scenario then measures Lectr twice per round: as
``lectr`` while the bench holds the summaries back (``SummaryHold``) and as ``lectr+sum`` while
the cold process runs them; the direct runs hold them back too. The summary runs in the cold
process, so the proxy worker's latency should not move.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from lectr.jobs.registry import AGGREGATOR_LOCK
from lectr.jobs.rollups import run_rollups

ROWS = 1_000_000
INTERVAL = "2"  # seconds between the cold process's aggregator runs: one or two in each lectr+sum run
BUSY_QUERY = """SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()
                AND (query LIKE '%request_rollups%' OR query LIKE '%FROM request_logs%')"""


async def fill(url: str, org_name: str, rows: int = ROWS) -> float:
    """Insert ``rows`` plausible request_logs rows for ``org_name``; return the seconds it took."""
    started = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = $1", org_name)
        await conn.execute("""
            INSERT INTO request_logs (created_at, org_id, provider, model, model_used, feature, task, status_code,
                error_type, error_origin, stream, latency_ms, ttfb_ms, overhead_us, prompt_tokens,
                completion_tokens, token_source, cost_usd, bytes_in, bytes_out)
            SELECT now() - (i % 72000) * interval '1 second', $1, 'openai', m, m,
                   'feature-' || (i % 40), NULL, CASE WHEN i % 97 = 0 THEN 500 ELSE 200 END,
                   CASE WHEN i % 97 = 0 THEN 'server_error' END, CASE WHEN i % 97 = 0 THEN 'provider' END,
                   i % 3 = 0, 200 + (i % 1000), 50 + (i % 300), 80, 100 + (i % 500), 20 + (i % 200),
                   'provider', 0.0001 * (i % 50), 400, 900
            FROM generate_series(1, $2) AS i,
                 LATERAL (SELECT CASE i % 3 WHEN 0 THEN 'gpt-4o-mini' WHEN 1 THEN 'gpt-4o' ELSE 'o3-mini' END) AS x(m)
            """, org_id, rows)
        await conn.execute("ANALYZE request_logs")
        await run_rollups(conn)  # waits for the cold process's own run, if one is under way
    finally:
        await conn.close()
    return time.monotonic() - started


class SummaryWatch:
    """Watches the summaries while a scenario measures: runs finished, and how often one was running."""

    def __init__(self, url: str, org_name: str) -> None:
        self.url, self.org_name = url, org_name
        self.seen: set = set()
        self.samples = 0
        self.busy = 0  # samples that found a summary query running (on the rollups or the raw rows)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> SummaryWatch:
        conn = await asyncpg.connect(self.url)
        self.seen = {await self._latest(conn)}

        async def watch() -> None:
            try:
                while True:
                    self.seen.add(await self._latest(conn))
                    self.samples += 1
                    self.busy += bool(await conn.fetchval(BUSY_QUERY))
                    await asyncio.sleep(0.25)
            finally:
                await conn.close()

        self._task = asyncio.get_running_loop().create_task(watch())
        return self

    async def _latest(self, conn: asyncpg.Connection):
        return await conn.fetchval("""SELECT max(s.computed_at) FROM dashboard_summaries s
                                      JOIN organizations o ON o.id = s.org_id WHERE o.name = $1""", self.org_name)

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @property
    def runs(self) -> int:
        """Summary runs finished during the watch (the one before it not counted)."""
        return len(self.seen) - 1

    @property
    def busy_pct(self) -> float:
        return 100.0 * self.busy / self.samples if self.samples else 0.0


class SummaryHold:
    """Keeps Lectr's cold process from running summaries while held, as another Lectr instance
    would: the bench takes the aggregator's advisory lock, and the cold process, finding it
    taken, skips its turns (``lectr.jobs.scheduler``). Its other jobs, its admin listener and its
    tokeniser go on as ever, so the arms differ in the summaries alone.

    ``hold`` waits for a summary under way to finish (the lock is free only between runs).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: asyncpg.Connection | None = None

    async def hold(self) -> None:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.url)
        await self._conn.execute("SELECT pg_advisory_lock($1)", AGGREGATOR_LOCK)

    async def release(self) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock($1)", AGGREGATOR_LOCK)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # releases the lock, if held


async def database_now(url: str):
    """Postgres's clock: the rows' ``created_at`` is stamped by the same clock."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT now()")
    finally:
        await conn.close()


async def recorded_overhead(url: str, since, until, feature: str = "bench") -> tuple[float, float, int] | None:
    """p50 and p99 of the time Lectr itself added (``overhead_us``, as each row records it), in
    microseconds, for the bench's requests between ``since`` and ``until``; None if none were written.

    Lectr measures this inside the worker, from the request's last byte to the upstream write
    and from the provider's last byte to the client write: it does not move when the load
    generator or the mock are held up, so it shows the worker's own delay alone.
    """
    await asyncio.sleep(1.5)  # the writer flushes every LECTR_FLUSH_INTERVAL (0.5 s in the bench)
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("""
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY overhead_us) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY overhead_us) AS p99, count(*) AS n
            FROM request_logs WHERE feature = $1 AND created_at BETWEEN $2 AND $3""", feature, since, until)
    finally:
        await conn.close()
    return (row["p50"], row["p99"], row["n"]) if row["n"] else None
