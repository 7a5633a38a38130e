"""The snapshot the hot path reads: loaded from Postgres whole, reloaded part by part on NOTIFY."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from lectr.platform import db

from lectr.api import orgs
from lectr.snapshot.loader import PRICING, RELOADS, SNAPSHOT_PARTS, UNCACHED, CacheLoader, load_snapshot
from lectr.snapshot.directory import SnapshotHolder
from lectr.snapshot.keys import hash_key


@pytest.fixture
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection)
    yield connection
    await connection.close()


async def test_every_table_that_notifies_reloads_a_known_part(conn):
    tables = {r["table"] for r in await conn.fetch("""
        SELECT DISTINCT event_object_table AS table FROM information_schema.triggers
        WHERE action_statement LIKE '%lectr_notify_config%'""")}
    assert tables and tables <= RELOADS.keys()
    assert {part for table, part in RELOADS.items() if table in tables} <= {*SNAPSHOT_PARTS, PRICING, UNCACHED}


async def test_a_part_reloads_alone_and_the_rest_is_kept(conn):
    org_id, key = await orgs.create_org(conn, "snapshot-co")
    whole = await load_snapshot(conn)
    assert whole.orgs_by_key_hash[hash_key(key.encode())].id == org_id
    assert org_id not in whole.azure_by_org
    await orgs.set_azure_for(conn, org_id, "https://snap.openai.azure.com", "2024-10-21")
    azure_only = await load_snapshot(conn, {"azure"}, whole)
    assert azure_only.azure_by_org[org_id].endpoint == "https://snap.openai.azure.com"
    assert azure_only.orgs_by_key_hash is whole.orgs_by_key_hash


async def test_a_notify_swaps_in_a_new_snapshot(conn, database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    holder = SnapshotHolder()
    loader = CacheLoader(database_url, pool, holder, lambda table: None)
    loader.start()
    try:
        org_id, _ = await orgs.create_org(conn, "notify-co")
        before = holder.current
        await orgs.set_azure_for(conn, org_id, "https://notify.openai.azure.com", "2024-10-21")
        for _ in range(500):
            if org_id in holder.current.azure_by_org:
                break
            await asyncio.sleep(0.01)
        assert holder.current.azure_by_org[org_id].api_version == "2024-10-21"
        assert holder.current is not before
    finally:
        await loader.stop()
        await pool.close()
