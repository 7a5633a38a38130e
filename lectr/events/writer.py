"""The event writer: the one loop that moves events from the ring into Postgres.

It wakes when a batch is waiting or the flush interval has passed, builds rows in short
slices on the event loop (so no request waits behind it), and writes them with COPY over a
connection it keeps. While the loop has time to spare, the busy poller's idle spins build rows
ahead (``build_waiting``), so a flush at low load is only the COPY. When Postgres is
unavailable the rows go to the spool, and are replayed, oldest first and exactly once, as soon
as it is back. Closing drains the ring completely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

import asyncpg

from lectr.background import Background
from lectr.events.record import RequestEvent
from lectr.events.ring import EventRing
from lectr.events.rows import COLUMNS, ORG_ID, PRICING_ID, PROVIDER, TOKEN_SOURCE, Measure, RowBuilder
from lectr.events.spool import Spool
from lectr.events.tokenizer_service import TokenizerClient
from lectr.metrics import Metrics

log = logging.getLogger(__name__)

# Errors a batch can never recover from: retried row by row so only the bad rows are lost.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
SPOOL_LOOK_SECONDS = 1.0
_STATEMENT_TIMEOUT = 60.0
CLOSE_WAIT_SECONDS = 10.0


class EventWriter:
    """Flushes the ring every ``batch_size`` events or ``interval`` seconds, whichever is first."""

    def __init__(self, ring: EventRing[RequestEvent], pool: asyncpg.Pool, rows: RowBuilder, spool: Spool,
                 metrics: Metrics, *, tokenizer: TokenizerClient | None = None, batch_size: int = 20,
                 interval: float = 5.0, max_batch: int = 1000, slice_seconds: float = 0.0005) -> None:
        self.ring = ring
        self.tokenizer = tokenizer
        self.pool = pool
        self.rows = rows
        self.spool = spool
        self.metrics = metrics
        self.batch_size = batch_size
        self.interval = interval
        # asyncpg encodes a whole COPY in one go (about 2.5 µs a row), so this bounds how long
        # one batch holds the loop: 1,000 rows, a few milliseconds.
        self.max_batch = max_batch
        self.slice_seconds = slice_seconds
        self.database_up = True
        self.written = 0
        # The batch being gathered: rows built (by build_waiting or a flush) and not yet written,
        # and which of them still need their completion tokens counted.
        self._batch: list[tuple] = []
        self._to_measure: list[tuple[int, RequestEvent, Measure]] = []
        self._storing = 0
        self._in_hand: list[tuple] = []  # rows taken from the batch and not yet written or spooled
        self._next_spool_look = 0.0  # the first flush looks: a previous run may have left batches
        self._conn: asyncpg.Connection | None = None
        self._drops_recorded: Counter = Counter()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._background = Background()

    def start(self) -> None:
        self._task = self._background.start(self._run(), "lectr-event-writer")

    async def close(self) -> None:
        """Let a flush under way finish, then write out everything still waiting (to the spool if need be).

        The flush is not cancelled, or the rows it holds would be lost; one that hangs past
        ``CLOSE_WAIT_SECONDS`` is.
        """
        self._closing = True
        self.ring.wake()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT_SECONDS)
        await self._background.stop()
        while len(self.ring) or self._batch:
            try:
                await self.flush()
            except Exception:  # never hang or abort the shutdown over the last events
                log.exception("could not write the last %d events", len(self.ring) + len(self._batch))
                break
        await self._let_go()

    async def _run(self) -> None:
        while not self._closing:
            await self.ring.wait(self.interval, taken=len(self._batch))
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop recording for good
                log.exception("event writer failed; continuing")

    @property
    def unwritten(self) -> int:
        """Events out of the ring and not yet written: the batch being gathered and the one being stored."""
        return len(self._batch) + self._storing

    def build_waiting(self) -> bool:
        """Build the row of the oldest waiting event; False when there is none or a batch is built.

        Meant for time the loop would otherwise spend idle (the busy poller's spins), so that a
        flush between two requests has only the COPY left to do.
        """
        if len(self._batch) >= self.batch_size:
            return False  # a flush is due: until it takes these, the ring holds (and bounds) the rest
        event = self.ring.pop()
        if event is None:
            return False
        self._add(event)
        return True

    async def flush(self) -> None:
        """Write the events waiting in the ring, and replay the spool if the database is back.

        Only those waiting when it starts: events that arrive while a batch is written wait for
        the next one, or a steady trickle would keep the writer on COPYs of a row or two.
        """
        if self._spool_due():
            await self.replay()
        waiting = len(self.ring)
        while True:
            room = self.max_batch - len(self._batch)
            events = self.ring.drain(min(waiting, room)) if room > 0 else []
            # build_waiting may take some of them meanwhile: they are written with the rows built.
            waiting = min(waiting - len(events), len(self.ring))
            try:
                rows = await self._build(events)
                if rows:
                    await asyncio.sleep(0)  # between the last slice of rows and the first of the COPY
                    await self._store(rows)
            except asyncio.CancelledError:
                # Only a shutdown whose flush hung cancels it: keep what it held on disk.
                if self._in_hand:
                    self._spool(self._in_hand)
                raise
            finally:
                self._storing = 0
                self._in_hand = []
            if waiting <= 0:
                break
        if self.database_up:
            await self._record_drops()

    def _spool_due(self) -> bool:
        """Whether spooled batches wait: looked up at most once a second while Postgres is up.

        Another worker (or an earlier run) may have spooled, so the directory must be read, but
        not at every flush: that was a listing per COPY, hundreds a second under load.
        """
        if self._closing:
            return False  # spooled batches wait for the next start: a shutdown must not hang on them
        now = time.monotonic()
        if self.database_up and now < self._next_spool_look:
            return False
        self._next_spool_look = now + SPOOL_LOOK_SECONDS
        return self.spool.pending() > 0

    async def _record_drops(self) -> None:
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

    def _add(self, event: RequestEvent) -> None:
        """Build ``event``'s row onto the batch being gathered; an event that cannot be is dropped."""
        try:
            self.metrics.observe(event)
            row, measure = self.rows.build(event)
        except Exception:
            log.exception("could not record an event; dropping it")
            self.ring.count_drop("invalid", owner=event.org_id)
            return
        if measure is not None:
            self._to_measure.append((len(self._batch), event, measure))
        self._batch.append(row)

    async def _build(self, events: list[RequestEvent]) -> list[tuple]:
        """Build ``events`` in short slices, then take the whole gathered batch, measured and counted."""
        deadline = time.perf_counter() + self.slice_seconds
        self._storing = len(events)  # out of the ring, not yet in the batch: still unwritten
        for i, event in enumerate(events, 1):
            self._add(event)
            self._storing -= 1
            if time.perf_counter() > deadline:
                try:
                    await asyncio.sleep(0)  # let requests through between slices
                except asyncio.CancelledError:
                    for rest in events[i:]:  # into the batch, which the shutdown then writes
                        self._add(rest)
                    raise
                deadline = time.perf_counter() + self.slice_seconds
        rows, to_measure = self._batch, self._to_measure
        self._batch, self._to_measure = [], []
        self._storing = len(rows)
        self._in_hand = rows
        try:
            self.metrics.flush()  # observe() only collects; the metrics move once per batch
        except Exception:  # never worth the batch's rows
            log.exception("could not update the request metrics")
        if to_measure:
            await self._measure(rows, to_measure)
        unpriced = Counter(row[PROVIDER] for row in rows if row[PRICING_ID] is None and row[TOKEN_SOURCE] != "none")
        for provider, n in unpriced.items():
            self.metrics.unpriced.labels(provider).inc(n)
        return rows

    async def _measure(self, rows: list[tuple], to_measure: list[tuple[int, RequestEvent, Measure]]) -> None:
        """Count the completions of streams that reported no usage, the whole batch in one call."""
        try:
            if self.tokenizer is None:
                raise OSError("no tokeniser configured")
            counts = await self.tokenizer.count([measure for _, _, measure in to_measure])
        except OSError as exc:
            log.warning("could not measure %d streamed completions: %s", len(to_measure), exc)
            for index, _, _ in to_measure:
                rows[index] = self.rows.unmeasured(rows[index])
            return
        for (index, event, _), count in zip(to_measure, counts, strict=True):
            rows[index] = self.rows.with_count(event, rows[index], count)

    async def _connection(self) -> asyncpg.Connection:
        """The writer's own connection, kept from batch to batch.

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
            await self._let_go()
        self._conn = conn = await self.pool.acquire(timeout=5)
        return conn

    async def _let_go(self, *, broken: bool = False) -> None:
        """Give the kept connection back to the pool; a ``broken`` one is closed first, never reused."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if broken:
            with contextlib.suppress(asyncpg.InterfaceError):  # the pool may have taken it back already
                conn.terminate()
        await self.pool.release(conn)  # nothing to do when the pool has taken it back

    async def _store(self, rows: list[tuple]) -> None:
        if self._closing and not self.database_up:
            self._spool(rows)  # shutting down with Postgres away: not 5 s of acquire timeout a batch
            return
        started = time.perf_counter()
        try:
            await self._copy(await self._connection(), rows)
        except _DATA_ERRORS as exc:
            log.error("a batch was refused (%s); writing it row by row", exc)
            if not await self._store_one_by_one(rows):
                return
        except Exception as exc:
            await self._unwritten(rows, exc)
            return
        self._database_back()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _copy(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        await conn.copy_records_to_table("request_logs", records=rows, columns=COLUMNS, timeout=_STATEMENT_TIMEOUT)
        self.written += len(rows)
        self.metrics.events_written.inc(len(rows))

    async def _store_one_by_one(self, rows: list[tuple]) -> bool:
        """Write ``rows`` one COPY each, dropping (and counting) those refused; False if Postgres went away."""
        for i, row in enumerate(rows):
            self._in_hand = rows[i:]  # what a cancelled shutdown would spool: not the rows written
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
        self._spool(rows)
        await self._let_go(broken=True)  # after the spool, so the rows are safe whatever happens here

    def _spool(self, rows: list[tuple]) -> None:
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
