"""Rows into Postgres for the event writer: one kept connection, COPY, and the spool behind it.

A batch Postgres refuses is written row by row, so only its bad rows are lost (and counted).
When Postgres or the connection fails, the rows go to the spool; spooled batches are replayed,
oldest first and exactly once (each batch's id is committed with its rows), once it is back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter

import asyncpg

from lectr.proxy.ring import EventRing
from lectr.recording.rows import COLUMNS, ORG_ID
from lectr.recording.spool import Spool
from lectr.platform.metrics import Metrics

log = logging.getLogger(__name__)

# Errors a batch can never recover from: retried row by row so only the bad rows are lost.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
SPOOL_LOOK_SECONDS = 1.0
_STATEMENT_TIMEOUT = 60.0


class RowStore:
    """Writes batches of ``request_logs`` rows, spools what it cannot, and replays the spool."""

    def __init__(self, pool: asyncpg.Pool, spool: Spool, ring: EventRing, metrics: Metrics) -> None:
        self.pool = pool
        self.spool = spool
        self.ring = ring  # where drops are counted
        self.metrics = metrics
        self.database_up = True
        self.written = 0
        self.closing = False  # set by the writer's close: no replay, no waiting on an absent Postgres
        # Rows handed over and not yet written: what a cancelled shutdown still spools.
        self.in_hand: list[tuple] = []
        self._conn: asyncpg.Connection | None = None
        self._next_spool_look = 0.0  # the first flush looks: a previous run may have left batches
        self._drops_recorded: Counter = Counter()

    async def write(self, rows: list[tuple]) -> None:
        """COPY ``rows``; a refused batch goes row by row, and a failure sends them to the spool."""
        self.in_hand = rows
        if self.closing and not self.database_up:
            self.spool_rows(rows)  # shutting down with Postgres away: not 5 s of acquire timeout a batch
        else:
            await self._write(rows)
        self.in_hand = []  # written or spooled (not cleared on cancellation: the writer spools them)

    async def _write(self, rows: list[tuple]) -> None:
        started = time.perf_counter()
        try:
            await self._copy(await self._connection(), rows)
        except _DATA_ERRORS as exc:
            log.error("a batch was refused (%s); writing it row by row", exc)
            if not await self._write_one_by_one(rows):
                return
        except Exception as exc:
            await self._unwritten(rows, exc)
            return
        self._database_back()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _connection(self) -> asyncpg.Connection:
        """The connection kept from batch to batch.

        Taking one from the pool for every COPY cost a task (the acquire timeout) and the
        pool's bookkeeping, hundreds of times a second under load.
        """
        conn = self._conn
        if conn is not None:
            try:
                if not conn.is_closed():
                    return conn
            except asyncpg.InterfaceError:
                pass  # it broke and the pool has taken it back
            await self.release()
        self._conn = conn = await self.pool.acquire(timeout=5)
        return conn

    async def release(self, *, broken: bool = False) -> None:
        """Give the kept connection back to the pool; a ``broken`` one is closed first, never reused."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if broken:
            with contextlib.suppress(asyncpg.InterfaceError):  # the pool may have taken it back already
                conn.terminate()
        await self.pool.release(conn)  # nothing to do when the pool has taken it back

    async def _copy(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        await conn.copy_records_to_table("request_logs", records=rows, columns=COLUMNS, timeout=_STATEMENT_TIMEOUT)
        self.written += len(rows)
        self.metrics.events_written.inc(len(rows))

    async def _write_one_by_one(self, rows: list[tuple]) -> bool:
        """Write ``rows`` one COPY each, dropping (and counting) those refused; False if Postgres went away."""
        for i, row in enumerate(rows):
            self.in_hand = rows[i:]  # what a cancelled shutdown would spool: not the rows written
            try:
                await self._copy(await self._connection(), [row])
            except _DATA_ERRORS:
                self.ring.count_drop("invalid", owner=row[ORG_ID])
            except Exception as exc:
                await self._unwritten(rows[i:], exc)  # the rows before it are written: not again
                return False
        return True

    async def _unwritten(self, rows: list[tuple], exc: BaseException) -> None:
        """Postgres (or the connection) failed: spool ``rows``, counted as dropped if the spool is full."""
        self._database_down(exc)
        self.spool_rows(rows)
        await self.release(broken=True)  # after the spool, so the rows are safe whatever happens here

    def spool_rows(self, rows: list[tuple]) -> None:
        """Put ``rows`` in the spool, or count them dropped if it is full (or cannot be written)."""
        if not self.spool.write(rows):
            for org_id, n in Counter(row[ORG_ID] for row in rows).items():
                self.ring.count_drop("spool_full", n, owner=org_id)

    async def replay(self) -> int:
        """Write spooled batches, oldest first; each exactly once. Returns batches applied."""
        applied = 0
        with self.spool.replay_lock() as mine:
            if not mine:
                return 0  # another process is replaying the shared spool
            self.spool.rescan()
            while (batch := self.spool.oldest()) is not None:
                try:
                    async with self.pool.acquire(timeout=5) as conn, conn.transaction():
                        done = await conn.fetchval("SELECT 1 FROM event_batches WHERE batch_id = $1",
                                                   batch.batch_id, timeout=_STATEMENT_TIMEOUT)
                        if not done:
                            await self._replay_batch(conn, batch.rows)
                            await conn.execute("INSERT INTO event_batches (batch_id, rows) VALUES ($1, $2)",
                                               batch.batch_id, len(batch.rows), timeout=_STATEMENT_TIMEOUT)
                except Exception as exc:
                    self._database_down(exc)
                    return applied
                self.spool.remove(batch)
                applied += 1
            self._database_back()
        if applied:
            log.info("replayed %d spooled batches", applied)
        return applied

    async def _replay_batch(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        """COPY a spooled batch; one Postgres refuses is written row by row, each under a savepoint.

        Otherwise one bad row would stop every later batch from being replayed, for good.
        """
        try:
            async with conn.transaction():
                await self._copy(conn, rows)
            return
        except _DATA_ERRORS as exc:
            log.error("a spooled batch was refused (%s); writing it row by row", exc)
        for row in rows:
            try:
                async with conn.transaction():
                    await self._copy(conn, [row])
            except _DATA_ERRORS:
                self.ring.count_drop("invalid", owner=row[ORG_ID])

    def _database_down(self, exc: BaseException) -> None:
        if self.database_up:
            log.warning("cannot write events to Postgres (%s); spooling to %s", exc, self.spool.directory)
        self.database_up = False

    def _database_back(self) -> None:
        if not self.database_up:
            log.info("Postgres is reachable again; writing events")
            self._next_spool_look = 0.0  # replay what was spooled meanwhile with the next flush
        self.database_up = True

    def spool_due(self) -> bool:
        """Whether spooled batches wait: looked up at most once a second while Postgres is up.

        Another worker (or an earlier run) may have spooled, so the directory must be read, but
        not at every flush: that was a listing per COPY, hundreds a second under load.
        """
        if self.closing:
            return False  # spooled batches wait for the next start: a shutdown must not hang on them
        now = time.monotonic()
        if self.database_up and now < self._next_spool_look:
            return False
        self._next_spool_look = now + SPOOL_LOOK_SECONDS
        return self.spool.pending() > 0

    async def record_drops(self) -> None:
        """Write the drops counted since last time to ``event_drops``, for the dashboard's banner."""
        new = self.ring.dropped_by - self._drops_recorded
        if not new:
            return
        try:
            async with self.pool.acquire(timeout=5) as conn:
                await conn.executemany(
                    "INSERT INTO event_drops (minute, org_id, reason, count) "
                    "VALUES (date_trunc('minute', now()), $1, $2, $3)",
                    [(org_id, reason, n) for (org_id, reason), n in new.items()], timeout=_STATEMENT_TIMEOUT)
        except Exception as exc:
            self._database_down(exc)
            return
        self._drops_recorded.update(new)
