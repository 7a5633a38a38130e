"""The spool's file format and bounds, the writer's exactly-once replay, and daily partitions."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import asyncpg
import pytest

from lectr.platform import db, partitions
from lectr.proxy.ring import EventRing
from lectr.recording.rows import COLUMNS
from lectr.recording.spool import Spool
from lectr.recording.store import RowStore
from lectr.platform.metrics import Metrics


def row(n: int, day: datetime | None = None) -> tuple:
    values = dict.fromkeys(COLUMNS)
    values.update(created_at=day or datetime.now(timezone.utc), org_id=1, provider="openai", model="gpt-4o",
                  model_used="gpt-4o", feature=f"f{n}", status_code=200, stream=False, latency_ms=1.5,
                  overhead_us=80, token_source="provider", prompt_tokens=n, completion_tokens=1,
                  cost_usd=Decimal("0.0000125"), cost_partial=False, provider_unknown=False, bytes_in=n, bytes_out=9)
    return tuple(values[c] for c in COLUMNS)


def test_spool_round_trip_keeps_types_and_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    written = [row(1), row(2)]
    assert spool.write(written) and spool.write([row(3)])
    first = spool.oldest()
    assert first.rows == written  # datetimes, Decimals and None all come back as they went in
    spool.remove(first)
    assert [r[COLUMNS.index("feature")] for r in spool.oldest().rows] == ["f3"]


def test_spool_is_bounded(tmp_path):
    spool = Spool(tmp_path, max_bytes=2_000)
    results = [spool.write([row(i)]) for i in range(10)]
    assert results[0] and not results[-1]
    assert spool.size() <= 2_000


def test_truncated_spool_file_is_set_aside(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.write([row(1), row(2)])
    [path] = tmp_path.glob("*.batch")
    path.write_bytes(path.read_bytes().rsplit(b"\n", 2)[0] + b"\n")  # lose the last row
    assert spool.oldest() is None
    assert list(tmp_path.glob("*.bad"))


@pytest.fixture()
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection)
    await partitions.ensure_partitions(connection)
    yield connection
    await connection.execute("TRUNCATE request_logs, event_batches")
    await connection.close()


async def test_replay_is_exactly_once_even_after_a_crash_between_commit_and_delete(conn, database_url, tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.write([row(1), row(2)])
    batch = spool.oldest()
    # Simulate a crash: the batch was committed but its file not yet deleted.
    await conn.copy_records_to_table("request_logs", records=batch.rows, columns=COLUMNS)
    await conn.execute("INSERT INTO event_batches (batch_id, rows) VALUES ($1, 2)", batch.batch_id)
    spool.write([row(3)])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        store = RowStore(pool, spool, EventRing(10), Metrics(EventRing(1)))
        assert await store.replay() == 2
    finally:
        await pool.close()
    assert sorted(r["feature"] for r in await conn.fetch("SELECT feature FROM request_logs")) == ["f1", "f2", "f3"]
    assert spool.pending() == 0


async def test_a_refused_row_in_a_spooled_batch_is_dropped_alone_and_the_spool_moves_on(conn, database_url, tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    bad = dict(zip(COLUMNS, row(2)), error_origin="nobody")  # fails the column's CHECK
    spool.write([row(1), tuple(bad[c] for c in COLUMNS), row(3)])
    spool.write([row(4)])
    ring = EventRing(10)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        store = RowStore(pool, spool, ring, Metrics(EventRing(1)))
        assert await store.replay() == 2 and store.database_up
    finally:
        await pool.close()
    assert sorted(r["feature"] for r in await conn.fetch("SELECT feature FROM request_logs")) == ["f1", "f3", "f4"]
    assert ring.dropped == {"invalid": 1} and spool.pending() == 0


def test_a_spool_the_disk_refuses_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    spool = Spool(tmp_path, max_bytes=10_000_000)

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    assert spool.write([row(1)]) is False
    assert spool.pending() == 0 and not list(tmp_path.glob(".*.tmp"))


async def test_partitions_are_created_ahead_and_dropped_past_retention(conn):
    created = await partitions.ensure_partitions(conn, date(2031, 3, 10))
    assert "request_logs_20310310" in created and "request_logs_20310313" in created
    assert await partitions.ensure_partitions(conn, date(2031, 3, 10)) == []
    # A row on a day with no partition of its own lands in the default partition, not an error.
    await conn.copy_records_to_table("request_logs", records=[row(1, datetime(2040, 1, 1, tzinfo=timezone.utc))],
                                     columns=COLUMNS)
    dropped = await partitions.drop_expired(conn, retention_days=90, today=date(2031, 9, 1))
    assert "request_logs_20310310" in dropped
    assert all(name > "request_logs_20310531" for name in await partitions._existing(conn)
               if name != "request_logs_default")


def test_batch_id_is_a_uuid(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.write([row(1)])
    assert isinstance(spool.oldest().batch_id, uuid.UUID)


async def test_a_stateless_pool_skips_the_reset_but_still_rolls_back(database_url):
    pool = await db.open_pool(database_url, min_size=1, max_size=1, stateless=True)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept'")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        async with pool.acquire() as conn:
            # The same session, not reset: no RESET ALL round trip on release.
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            assert await conn.fetchval("SHOW application_name") == "kept"
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
        async with pool.acquire() as conn:  # asyncpg rolled the open transaction back on release
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await pool.close()
