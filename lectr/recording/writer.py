"""The event writer: the one loop that moves events from the ring into Postgres.

It wakes when a batch is waiting or the flush interval has passed, builds rows in short
slices on the event loop (so no request waits behind it), and hands them to the row store
(``store.py``: COPY over a kept connection, the spool when Postgres is away). While the loop
has time to spare, the busy poller's idle spins build rows ahead (``build_waiting``), so a
flush at low load is only the COPY. Closing drains the ring completely.

Streams that reported no usage need their completion counted by the tokeniser (hosted by the cold process). No
other row waits for that: such rows go to a bounded queue that a second task counts, a bounded
request at a time, and join a later batch. Past the queue's bound a row is written at once
without a count (``usage_note`` 'not_counted', and ``lectr_unmeasured_events_total``). Big
responses are set aside the same way before their row is built: parsing megabytes of stream
takes a tenth of a second each, so the second task builds them one at a time, in slices, while
requests are served and the rows of everything else go on being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque

import asyncpg

from lectr.platform.background import Background
from lectr.proxy.event import RequestEvent
from lectr.proxy.ring import EventRing
from lectr.recording.encodings import encoding_label
from lectr.recording.rows import PRICING_ID, PROVIDER, TOKEN_SOURCE, UNDECODABLE, USAGE_NOTE, Pending, RowBuilder
from lectr.recording.spool import Spool
from lectr.recording.store import RowStore
from lectr.recording.tokenizer_service import TokenizerClient
from lectr.platform.metrics import Metrics

log = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 10.0
# Text counted per stream: more than the default capture can hold, so a captured stream is
# counted whole; past it the count is a lower bound (usage_note 'truncated').
MEASURE_TEXT_CHARS = 4 * 1024 * 1024
# Text waiting for the tokeniser, all streams together: what bounds the writer's memory, and
# the tokeniser's, when big streams without usage arrive faster than they are counted.
MEASURE_QUEUE_CHARS = 32 * 1024 * 1024
MEASURE_QUEUE_ROWS = 10_000
# Text sent to the tokeniser in one request (at least one stream's).
MEASURE_REQUEST_CHARS = 1024 * 1024
# Responses this big have their rows built aside, in slices, by the measuring task; at most this
# many bytes of them wait there (past it they are built with the rest).
BIG_RESPONSE_BYTES = 256 * 1024
SET_ASIDE_BYTES = 64 * 1024 * 1024


class EventWriter:
    """Flushes the ring every ``batch_size`` events or ``interval`` seconds, whichever is first."""

    def __init__(self, ring: EventRing[RequestEvent], pool: asyncpg.Pool, rows: RowBuilder, spool: Spool,
                 metrics: Metrics, *, tokenizer: TokenizerClient | None = None, batch_size: int = 20,
                 interval: float = 5.0, max_batch: int = 1000, slice_seconds: float = 0.0005) -> None:
        self.ring = ring
        self.tokenizer = tokenizer
        self.rows = rows
        self.metrics = metrics
        self.store = RowStore(pool, spool, ring, metrics)
        self.batch_size = batch_size
        self.interval = interval
        # asyncpg encodes a whole COPY in one go (about 2.5 µs a row), so this bounds how long
        # one batch holds the loop: 1,000 rows, a few milliseconds.
        self.max_batch = max_batch
        self.slice_seconds = slice_seconds
        # The batch being gathered: rows built (by build_waiting, a flush or the measuring task)
        # and not yet written.
        self._batch: list[tuple] = []
        # Rows waiting for their completion count (built once it is known); a bounded queue.
        self._to_measure: deque[Pending] = deque()
        self._measure_chars = 0
        # Events of big responses, whose rows are built aside (``build_set_aside``).
        self._set_aside: deque[RequestEvent] = deque()
        self._set_aside_bytes = 0
        self._measure_wanted = asyncio.Event()
        self._storing = 0
        self._closing = False
        self._task: asyncio.Task | None = None
        self._background = Background()

    def start(self) -> None:
        self._task = self._background.start(self._run(), "lectr-event-writer")
        self._background.start(self._measure_loop(), "lectr-event-measurer")

    async def close(self) -> None:
        """Let a flush under way finish, then write out everything still waiting (to the spool if need be).

        The flush is not cancelled, or the rows it holds would be lost; one that hangs past
        ``CLOSE_WAIT_SECONDS`` is.
        """
        self._closing = self.store.closing = True
        self.ring.wake()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT_SECONDS)
        await self._background.stop()
        while self._set_aside:  # built here and now: nothing else is left to wait for them
            event = self._set_aside.popleft()
            self._place(event, *self._build_row(event))
        if self._to_measure:
            try:
                await asyncio.wait_for(self.measure_waiting(), CLOSE_WAIT_SECONDS)
            except TimeoutError:
                pass
            self._give_up_measuring("shutdown")
        while len(self.ring) or self._batch:
            try:
                await self.flush()
            except Exception:  # never hang or abort the shutdown over the last events
                log.exception("could not write the last %d events", len(self.ring) + len(self._batch))
                break
        await self.store.release()

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
    def database_up(self) -> bool:
        return self.store.database_up

    @property
    def written(self) -> int:
        return self.store.written

    @property
    def unwritten(self) -> int:
        """Events out of the ring and not yet written: the batch being gathered, the one being
        stored, the big ones set aside, and the rows waiting for their count."""
        return len(self._batch) + self._storing + len(self._set_aside) + len(self._to_measure)

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
        if self.store.spool_due():
            await self.store.replay()
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
                if self.store.in_hand:
                    self.store.spool_rows(self.store.in_hand)
                raise
            finally:
                self._storing = 0
                self.store.in_hand = []
            if waiting <= 0:
                break
        if self.store.database_up:
            await self.store.record_drops()

    def _add(self, event: RequestEvent) -> None:
        """Build ``event``'s row onto the batch being gathered (or set a big one aside)."""
        try:
            self.metrics.observe(event)
        except Exception:
            log.exception("could not record an event; dropping it")
            self.ring.count_drop("invalid", owner=event.org_id)
            return
        if (event.bytes_out > BIG_RESPONSE_BYTES and event.response_chunks and event.status_code < 400
                and self._set_aside_bytes + event.bytes_out <= SET_ASIDE_BYTES):
            self._set_aside.append(event)
            self._set_aside_bytes += event.bytes_out
            self._measure_wanted.set()
            return
        self._place(event, *self._build_row(event))

    def _build_row(self, event: RequestEvent) -> tuple[tuple | None, Pending | None]:
        try:
            return self.rows.build(event)
        except Exception:
            log.exception("could not record an event; dropping it")
            self.ring.count_drop("invalid", owner=event.org_id)
            return None, None

    def _place(self, event: RequestEvent, row: tuple | None, pending: Pending | None) -> None:
        """Put a built row on the batch being gathered, or a pending one in the queue to be counted."""
        if pending is not None:
            row = self._queue_measure(pending)
        if row is None:
            return
        if row[USAGE_NOTE] == UNDECODABLE:
            self.metrics.undecodable.labels(encoding_label(event.content_encoding)).inc()
        self._batch.append(row)

    def _queue_measure(self, pending: Pending) -> tuple | None:
        """Queue ``pending`` to be counted (None), or return its row to be written now, uncounted."""
        if len(pending.text) > MEASURE_TEXT_CHARS:
            pending = pending.cut(MEASURE_TEXT_CHARS)  # the count will be a lower bound
        text = pending.text
        if self.tokenizer is None:
            reason = "no_tokenizer"
        elif (self._measure_chars + len(text) > MEASURE_QUEUE_CHARS
              or len(self._to_measure) >= MEASURE_QUEUE_ROWS):
            reason = "queue_full"
        else:
            self._to_measure.append(pending)
            self._measure_chars += len(text)
            self._measure_wanted.set()
            return None
        self.metrics.unmeasured.labels(reason).inc()
        return self.rows.uncounted(pending)

    async def _build(self, events: list[RequestEvent]) -> list[tuple]:
        """Build ``events`` in short slices, then take the whole gathered batch, its metrics counted."""
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
        rows, self._batch = self._batch, []
        self._storing = len(rows)
        self.store.in_hand = rows
        try:
            self.metrics.flush()  # observe() only collects; the metrics move once per batch
        except Exception:  # never worth the batch's rows
            log.exception("could not update the request metrics")
        unpriced = Counter(row[PROVIDER] for row in rows if row[PRICING_ID] is None and row[TOKEN_SOURCE] != "none")
        for provider, n in unpriced.items():
            self.metrics.unpriced.labels(provider).inc(n)
        return rows

    async def _measure_loop(self) -> None:
        while True:
            await self._measure_wanted.wait()
            self._measure_wanted.clear()
            try:
                await self.work_through()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop measuring for good
                log.exception("measuring streamed completions failed; continuing")

    async def work_through(self) -> None:
        """Build the big responses set aside and count the queued streams, until neither is left.

        A big response is built only while the counting queue is at most half full, so a burst
        of big streams waits, already in memory, for its turn rather than finding the queue full.
        """
        while self._set_aside or self._to_measure:
            if self._set_aside and (self._measure_chars <= MEASURE_QUEUE_CHARS // 2 or not self._to_measure):
                await self._build_next_set_aside()
            else:
                await self._measure_next()

    async def build_set_aside(self) -> None:
        """Build the rows of every big response set aside (see ``_build_next_set_aside``)."""
        while self._set_aside:
            await self._build_next_set_aside()

    async def _build_next_set_aside(self) -> None:
        """Build the row of the oldest big response set aside, in slices, so that the loop goes on
        serving requests and writing other rows meanwhile."""
        event = self._set_aside[0]
        built = await self._build_in_slices(event)
        self._set_aside.popleft()  # only now: a shutdown that cancels the build finds it still here
        self._set_aside_bytes -= event.bytes_out
        self._place(event, *built)
        if len(self._batch) >= self.batch_size:
            self.ring.wake()

    async def _build_in_slices(self, event: RequestEvent) -> tuple[tuple | None, Pending | None]:
        # Not a thread: a thread parsing for a tenth of a second would hold the GIL against the
        # loop for 5 ms at each of its system calls, and slow every request in flight.
        steps = self.rows.build_steps(event)
        deadline = time.perf_counter() + self.slice_seconds
        try:
            while True:
                next(steps)
                if time.perf_counter() > deadline:
                    await asyncio.sleep(0)
                    deadline = time.perf_counter() + self.slice_seconds
        except StopIteration as done:
            return done.value
        except Exception:
            log.exception("could not record an event; dropping it")
            self.ring.count_drop("invalid", owner=event.org_id)
            return None, None

    async def measure_waiting(self) -> None:
        """Count every queued completion (see ``_measure_next``)."""
        while self._to_measure:
            await self._measure_next()

    async def _measure_next(self) -> None:
        """Count the oldest queued completions, one bounded tokeniser request; each counted row
        joins the batch being gathered (an uncountable one joins it without a count)."""
        queue = self._to_measure
        if not queue:
            return
        taken: list[Pending] = []
        chars = 0
        for pending in queue:
            if taken and chars + len(pending.text) > MEASURE_REQUEST_CHARS:
                break
            taken.append(pending)
            chars += len(pending.text)
        try:
            counts = await self.tokenizer.count([(pending.encoding, pending.text) for pending in taken])
        except OSError as exc:
            log.warning("could not measure %d streamed completions: %s", len(taken), exc)
            self.metrics.unmeasured.labels("tokenizer_unavailable").inc(len(taken))
            rows = [self.rows.uncounted(pending) for pending in taken]
        else:
            rows = [self.rows.counted(pending, count) for pending, count in zip(taken, counts, strict=True)]
        # Removed only now: a shutdown that cancels the count finds them still queued.
        for _ in taken:
            queue.popleft()
        self._measure_chars -= chars
        self._batch.extend(rows)
        self.ring.wake()

    def _give_up_measuring(self, reason: str) -> None:
        """Move every queued row into the batch without a count."""
        if self._to_measure:
            self.metrics.unmeasured.labels(reason).inc(len(self._to_measure))
        while self._to_measure:
            self._batch.append(self.rows.uncounted(self._to_measure.popleft()))
        self._measure_chars = 0

    async def _store(self, rows: list[tuple]) -> None:
        await self.store.write(rows)
