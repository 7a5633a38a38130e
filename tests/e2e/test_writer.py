"""The writer's batch work around the rows: metrics per batch, unpriced events counted per provider."""

from __future__ import annotations

from decimal import Decimal

from lectr.devtools.mock_provider import completion_body
from lectr.proxy.event import RequestEvent
from lectr.proxy.ring import EventRing
from lectr.recording.rows import COLUMNS, RowBuilder
from lectr.recording.writer import EventWriter
from lectr.platform.metrics import Metrics
from lectr.pricing.prices import EPOCH, PriceRow, PricingTable

PRICE = PriceRow(1, "openai", "gpt-4o-mini", Decimal("0.15"), Decimal("0.6"), None, EPOCH, "seed")


def event(provider: str, model: str, status: int = 200, body: bytes | None = None) -> RequestEvent:
    return RequestEvent(1, 1.7e9, provider, model, model, "untagged", None, status, None, None, False,
                        1.0, 1.1, 1.2, 1e-4, False, None, 10, 20, "application/json", None,
                        [body if body is not None else completion_body(model)])


async def test_a_batch_updates_the_metrics_and_counts_the_unpriced():
    metrics = Metrics(EventRing(1))
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=metrics)
    events = [event("openai", "gpt-4o-mini"), event("openai", "gpt-5-unpriced"), event("openai", "gpt-5-unpriced"),
              event("groq", "llama-x"), event("groq", "llama-x", status=500), event("openai", "x", body=b"{}")]
    rows = await writer._build(events)
    assert len(rows) == len(events)

    def sample(name, **labels):
        return metrics.registry.get_sample_value(name, labels)

    # No refresh or scrape needed: the batch's requests are exported when it is built.
    assert sample("lectr_requests_total", provider="openai", status_class="2xx") == 4
    assert sample("lectr_requests_total", provider="groq", status_class="5xx") == 1
    assert sample("lectr_request_duration_seconds_count", provider="groq") == 2
    assert sample("lectr_unpriced_events_total", provider="openai") == 2  # no usage, no tokens: not unpriced
    assert sample("lectr_unpriced_events_total", provider="groq") == 1  # the 500 has no tokens


async def test_an_event_that_cannot_become_a_row_is_dropped_and_counted():
    ring = EventRing(10)
    metrics = Metrics(EventRing(1))
    writer = EventWriter(ring, pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None, metrics=metrics)
    broken = event("openai", "gpt-4o-mini")._replace(status_code=None)
    rows = await writer._build([broken, event("openai", "gpt-4o-mini")])
    assert len(rows) == 1
    assert ring.dropped_by[(1, "invalid")] == 1
    assert metrics.registry.get_sample_value("lectr_requests_total",
                                             {"provider": "openai", "status_class": "2xx"}) == 1


class _NoSpool:
    def pending(self) -> bool:
        return False


class RecordingSpool(_NoSpool):
    directory = "spool"

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def write(self, rows) -> bool:
        self.rows.extend(rows)
        return True


class FakeConn:
    """An asyncpg connection's part the writer uses; ``failures`` maps a COPY's number to its exception."""

    def __init__(self, failures: dict[int, Exception] | None = None) -> None:
        self.failures = failures or {}
        self.closed = False
        self.calls = self.copies = 0

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True

    async def copy_records_to_table(self, table, *, records, columns, timeout):
        self.calls += 1
        if self.closed:
            raise OSError("connection lost")
        if self.calls in self.failures:
            raise self.failures[self.calls]
        self.copies += 1


class FakePool:
    def __init__(self, connect=FakeConn) -> None:
        self.connect = connect
        self.acquired: list[FakeConn] = []
        self.released: list[FakeConn] = []

    async def acquire(self, timeout):
        self.acquired.append(self.connect())
        return self.acquired[-1]

    async def release(self, conn):
        self.released.append(conn)


def writer_on(ring: EventRing, **kwargs) -> EventWriter:
    return EventWriter(ring, rows=RowBuilder(PricingTable([PRICE])), metrics=Metrics(EventRing(1)), **kwargs)


async def test_a_flush_writes_what_was_waiting_and_leaves_later_events_for_the_next_batch():
    # Events keep arriving while a batch is written (as they do under load); a flush that chased
    # them would write a COPY per one or two events, for as long as the trickle lasts.
    ring = EventRing(1000)
    writer = EventWriter(ring, pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=_NoSpool(),
                         metrics=Metrics(EventRing(1)), max_batch=4)
    batches: list[int] = []

    async def store(rows):
        batches.append(len(rows))
        if len(batches) < 100:
            ring.append(event("openai", "gpt-4o-mini"))

    writer._store = store
    for _ in range(10):
        ring.append(event("openai", "gpt-4o-mini"))
    await writer.flush()
    assert batches == [4, 4, 2]
    assert len(ring) == 3  # for the next flush


async def test_rows_built_between_requests_are_written_with_the_next_flush():
    ring = EventRing(1000, batch_size=3)
    writer = EventWriter(ring, pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=_NoSpool(),
                         metrics=Metrics(EventRing(1)), batch_size=3)
    batches: list[list[tuple]] = []

    async def store(rows):
        batches.append(rows)

    writer._store = store
    for _ in range(5):
        ring.append(event("openai", "gpt-4o-mini"))
    assert writer.build_waiting() and writer.build_waiting() and writer.build_waiting()
    assert not writer.build_waiting(), "a built batch waits for its flush; the ring holds the rest"
    assert len(ring) == 2
    await writer.flush()
    assert [len(rows) for rows in batches] == [5]  # the built rows and the waiting events: one COPY
    assert all(row[0] is not None and row[COLUMNS.index("bytes_out")] == 20 for rows in batches for row in rows)
    assert not writer.build_waiting() and len(ring) == 0


async def test_rows_out_of_the_ring_still_count_as_buffered_until_written():
    ring = EventRing(100, batch_size=5)
    writer = EventWriter(ring, pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=_NoSpool(),
                         metrics=Metrics(EventRing(1)), batch_size=5)
    metrics = Metrics(ring, unwritten=lambda: writer.unwritten)
    seen: list[float] = []

    async def store(rows):
        metrics.refresh()
        seen.append(metrics.registry.get_sample_value("lectr_events_buffered"))

    writer._store = store
    for _ in range(3):
        ring.append(event("openai", "gpt-4o-mini"))
    writer.build_waiting()
    metrics.refresh()
    assert metrics.registry.get_sample_value("lectr_events_buffered") == 3  # one built, two in the ring
    await writer.flush()
    assert seen == [3]  # during the COPY
    metrics.refresh()
    assert metrics.registry.get_sample_value("lectr_events_buffered") == 0


async def test_the_spool_directory_is_read_once_a_second_while_postgres_is_up_and_at_once_when_it_is_back():
    class CountingSpool(_NoSpool):
        looks = 0

        def pending(self) -> bool:
            CountingSpool.looks += 1
            return False

    ring = EventRing(1000)
    writer = EventWriter(ring, pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=CountingSpool(),
                         metrics=Metrics(EventRing(1)))

    async def store(rows):
        pass

    writer._store = store
    for _ in range(50):
        ring.append(event("openai", "gpt-4o-mini"))
        await writer.flush()
    assert CountingSpool.looks == 1, "a listing per flush is hundreds a second under load"
    writer.store.database_up = False
    await writer.flush()
    await writer.flush()
    assert CountingSpool.looks == 3  # while Postgres is down, every flush looks
    writer.store._database_back()
    await writer.flush()
    assert CountingSpool.looks == 4  # and the first one after it is back


async def test_the_writer_keeps_one_connection_and_replaces_it_when_it_breaks():
    ring, pool, spool = EventRing(1000), FakePool(), RecordingSpool()
    writer = writer_on(ring, pool=pool, spool=spool)
    for _ in range(5):
        ring.append(event("openai", "gpt-4o-mini"))
        await writer.flush()
    assert len(pool.acquired) == 1 and pool.acquired[0].copies == 5 and not pool.released
    pool.acquired[0].closed = True  # Postgres restarted under it
    ring.append(event("openai", "gpt-4o-mini"))
    await writer.flush()  # noticed before the COPY: a fresh connection
    assert len(pool.acquired) == 2 and pool.released == [pool.acquired[0]] and pool.acquired[1].copies == 1
    pool.acquired[1].failures[2] = OSError("connection lost")
    ring.append(event("openai", "gpt-4o-mini"))
    await writer.flush()  # fails mid-COPY: closed, handed back, the rows spooled
    assert pool.acquired[1].closed and pool.released[-1] is pool.acquired[1]
    assert len(spool.rows) == 1 and not writer.database_up
    await writer.close()
    assert writer.store._conn is None


async def run_until_storing(writer: EventWriter, store, events: int) -> None:
    """Start ``writer`` with ``store`` for its COPY; return once a batch of ``events`` is being stored."""
    import asyncio

    storing = asyncio.Event()

    async def marked_store(rows):
        storing.set()
        await store(rows)

    async def let_go(**kwargs):
        pass

    writer._store, writer.store.release = marked_store, let_go
    writer.start()
    for _ in range(events):
        writer.ring.append(event("openai", "gpt-4o-mini"))
    await asyncio.wait_for(storing.wait(), 5)


async def test_closing_lets_a_flush_under_way_finish_instead_of_losing_its_rows():
    import asyncio

    writer = writer_on(EventRing(1000, batch_size=5), pool=None, spool=_NoSpool(), batch_size=5)
    stored: list[int] = []

    async def slow_store(rows):
        await asyncio.sleep(0.2)
        stored.append(len(rows))

    await run_until_storing(writer, slow_store, 5)
    writer.ring.append(event("openai", "gpt-4o-mini"))  # arrives while the batch is being written
    await writer.close()
    assert stored == [5, 1]


async def test_the_buffered_count_never_counts_an_event_twice_while_a_batch_is_built():
    import asyncio

    ring = EventRing(100, batch_size=50)
    writer = EventWriter(ring, pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=_NoSpool(),
                         metrics=Metrics(EventRing(1)), slice_seconds=0)  # a yield after every row

    async def store(rows):
        await asyncio.sleep(0)

    writer._store = store
    for _ in range(10):
        ring.append(event("openai", "gpt-4o-mini"))
    flushing = asyncio.create_task(writer.flush())
    seen: list[int] = []
    while not flushing.done():  # what a metrics refresh would see at each turn of the loop
        seen.append(len(ring) + writer.unwritten)
        await asyncio.sleep(0)
    assert len(seen) > 10 and set(seen) == {10}
    assert writer.unwritten == 0


async def test_a_connection_lost_while_retrying_a_refused_batch_spools_the_rows_not_yet_written():
    import asyncpg

    ring, spool = EventRing(100), RecordingSpool()
    pool = FakePool(lambda: FakeConn({1: asyncpg.DataError("a bad row in the batch"), 3: OSError("connection lost")}))
    writer = writer_on(ring, pool=pool, spool=spool)
    for _ in range(3):
        ring.append(event("openai", "gpt-4o-mini"))
    await writer.flush()
    # The batch was refused; row 1 went in alone, row 2 met the lost connection: rows 2 and 3 spooled.
    assert writer.written == 1 and len(spool.rows) == 2
    assert pool.acquired[0].closed and writer.store._conn is None and not writer.database_up


async def test_a_shutdown_whose_flush_hangs_spools_the_rows_it_held(monkeypatch):
    import asyncio

    from lectr.recording import writer as writer_module

    monkeypatch.setattr(writer_module, "CLOSE_WAIT_SECONDS", 0.1)
    spool = RecordingSpool()
    writer = writer_on(EventRing(1000, batch_size=3), pool=None, spool=spool, batch_size=3)

    async def hang(rows):
        await asyncio.sleep(3600)  # Postgres stopped answering

    await run_until_storing(writer, hang, 3)
    await asyncio.wait_for(writer.close(), 5)
    assert len(spool.rows) == 3  # cancelled after 0.1 s: what the flush held is on disk


async def test_a_shutdown_with_postgres_away_spools_at_once():
    class AwayPool(FakePool):
        async def acquire(self, timeout):
            raise AssertionError("no connection attempt once Postgres is known to be away")

    ring, spool = EventRing(5000), RecordingSpool()
    writer = writer_on(ring, pool=AwayPool(), spool=spool, max_batch=1000)
    writer.store.database_up = False
    for _ in range(2500):
        ring.append(event("openai", "gpt-4o-mini"))
    await writer.close()
    assert len(spool.rows) == 2500 and len(ring) == 0
