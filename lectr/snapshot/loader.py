"""Loads the in-memory snapshot (and the cold path's prices) from Postgres and keeps them current.

Changes arrive as NOTIFY on ``lectr_config`` with the changed table as payload; ``RELOADS``
says which part each table reloads. A reload builds a new snapshot with that part replaced
and swaps it in with one assignment, so the hot path never sees a half-updated one. If the
listening connection is lost the loader reconnects and reloads, and periodic reloads (the
snapshot every minute, prices every five) cover any gap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import asyncpg

from lectr.platform.background import Background
from lectr.platform.db import CONFIG_CHANNEL
from lectr.snapshot.directory import Org, Snapshot, SnapshotHolder
from lectr.pricing.prices import PricingTable, load_pricing
from lectr.providers.base import AzureTarget

log = logging.getLogger(__name__)

DIRECTORY_REFRESH_SECONDS = 60.0
PRICING_REFRESH_SECONDS = 300.0
RECONNECT_SECONDS = 1.0


async def load_orgs(conn: asyncpg.Connection) -> dict[str, object]:
    """The ``orgs_by_key_hash`` part: every active key's hash with its org."""
    rows = await conn.fetch("""
        SELECT k.key_hash, o.id, o.name
        FROM org_keys k JOIN organizations o ON o.id = k.org_id
        WHERE k.revoked_at IS NULL""")
    orgs: dict[int, Org] = {}
    by_hash: dict[str, Org] = {}
    for r in rows:
        org = orgs.get(r["id"])
        if org is None:
            org = orgs[r["id"]] = Org(r["id"], r["name"])
        by_hash[r["key_hash"]] = org
    return {"orgs_by_key_hash": by_hash}


async def load_azure(conn: asyncpg.Connection) -> dict[str, object]:
    """The ``azure_by_org`` part: each org's Azure OpenAI endpoint and API version."""
    rows = await conn.fetch("SELECT org_id, endpoint, api_version FROM azure_configs")
    return {"azure_by_org": {r["org_id"]: AzureTarget(r["endpoint"], r["api_version"]) for r in rows}}


# The snapshot's parts, each with its loader. A new part (rules, limits, budgets) is one line
# here, one in RELOADS per table it comes from, and one field of Snapshot.
SNAPSHOT_PARTS: dict[str, Callable[[asyncpg.Connection], Awaitable[dict[str, object]]]] = {
    "orgs": load_orgs,
    "azure": load_azure,
}
PRICING = "pricing"  # not the hot path's: the row builder's price table
UNCACHED = "uncached"  # a table no process keeps in memory (yet): its NOTIFY reloads nothing
# Which part a NOTIFY for each table reloads; a table not listed reloads the whole snapshot.
RELOADS: dict[str, str] = {
    "organizations": "orgs",
    "org_keys": "orgs",
    "azure_configs": "azure",
    "model_pricing": PRICING,
    "model_downgrades": UNCACHED,  # read by the recommendations when they run
}


async def load_snapshot(conn: asyncpg.Connection, parts: set[str] | None = None,
                        base: Snapshot | None = None) -> Snapshot:
    """``base`` (default: an empty snapshot) with ``parts`` (default: all) read afresh, in one
    read-only transaction so that the parts agree with each other."""
    values: dict[str, object] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for part in SNAPSHOT_PARTS if parts is None else parts:
            values.update(await SNAPSHOT_PARTS[part](conn))
    return (base or Snapshot()).with_parts(**values)


async def load_directory(conn: asyncpg.Connection) -> Snapshot:
    """The whole snapshot, read now."""
    return await load_snapshot(conn)


class CacheLoader:
    """Owns the caches' freshness: initial load, NOTIFY-driven reloads, reconnection."""

    def __init__(self, url: str, pool: asyncpg.Pool, holder: SnapshotHolder,
                 on_pricing: Callable[[PricingTable], None]) -> None:
        self._url = url
        self._pool = pool
        self._holder = holder
        self._on_pricing = on_pricing
        self._changed: set[str] = set()
        self._wake = asyncio.Event()
        self._background = Background()
        self.reloads = 0

    async def load(self, parts: set[str] | None = None) -> None:
        """Load the snapshot's ``parts`` (default: all of it) now; raises if the database cannot be read."""
        async with self._pool.acquire() as conn:
            snapshot = await load_snapshot(conn, parts, None if parts is None else self._holder.current)
        self._holder.replace(snapshot)
        self.reloads += 1
        log.debug("snapshot loaded (%s): %d orgs", ", ".join(sorted(parts or SNAPSHOT_PARTS)), snapshot.org_count)

    async def load_pricing(self) -> None:
        async with self._pool.acquire() as conn:
            table = await load_pricing(conn)
        self._on_pricing(table)
        log.debug("pricing loaded: %d rows", len(table))

    def start(self) -> None:
        self._background.start(self._run(), "lectr-cache-loader")

    async def stop(self) -> None:
        await self._background.stop()

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        self._changed.add(payload)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            listener: asyncpg.Connection | None = None
            try:
                listener = await asyncpg.connect(self._url)
                lost = asyncio.Event()
                # Bind this attempt's event: a late callback from an old connection must not end a new one.
                listener.add_termination_listener(lambda _c, lost=lost: lost.set())
                await listener.add_listener(CONFIG_CHANNEL, self._notified)
                await self.load()  # catch anything that changed while not listening
                await self.load_pricing()
                await self._follow(lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down or restarting: keep the last snapshots
                log.warning("config listener: %s; retrying in %.0fs", exc, RECONNECT_SECONDS)
            finally:
                if listener is not None and not listener.is_closed():
                    listener.terminate()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _follow(self, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_pricing = loop.time() + PRICING_REFRESH_SECONDS
        while not lost.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), DIRECTORY_REFRESH_SECONDS)
            except TimeoutError:
                self._changed.add("*")
            self._wake.clear()
            changed, self._changed = self._changed, set()
            if lost.is_set():
                return
            parts = {RELOADS.get(table) for table in changed}
            if None in parts:  # the periodic reload, or a table not in RELOADS
                parts.update(SNAPSHOT_PARTS)
            snapshot_parts = parts & SNAPSHOT_PARTS.keys()
            if snapshot_parts:
                await self.load(snapshot_parts)
            if PRICING in parts or loop.time() >= next_pricing:
                await self.load_pricing()
                next_pricing = loop.time() + PRICING_REFRESH_SECONDS
