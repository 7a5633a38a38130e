"""Loads the in-memory caches from Postgres and keeps them current.

Changes arrive as NOTIFY on ``lectr_config`` with the changed table as payload. A reload
builds a whole new snapshot and swaps it in with one assignment, so the hot path never sees
a half-updated one. If the listening connection is lost the loader reconnects and reloads,
and periodic reloads (the directory every minute, prices every five) cover any gap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import asyncpg

from lectr.background import Background
from lectr.db import CONFIG_CHANNEL
from lectr.directory import Directory, DirectoryHolder, Org
from lectr.pricing import PricingTable, load_pricing
from lectr.providers.base import AzureTarget

log = logging.getLogger(__name__)

DIRECTORY_REFRESH_SECONDS = 60.0
PRICING_REFRESH_SECONDS = 300.0
RECONNECT_SECONDS = 1.0
_PRICING_TABLES = {"model_pricing"}


async def load_directory(conn: asyncpg.Connection) -> Directory:
    """Read every active key with its org and Azure target."""
    rows = await conn.fetch("""
        SELECT k.key_hash, o.id, o.name, a.endpoint, a.api_version
        FROM org_keys k
        JOIN organizations o ON o.id = k.org_id
        LEFT JOIN azure_configs a ON a.org_id = o.id
        WHERE k.revoked_at IS NULL""")
    orgs: dict[int, Org] = {}
    by_hash: dict[str, Org] = {}
    for r in rows:
        org = orgs.get(r["id"])
        if org is None:
            azure = AzureTarget(r["endpoint"], r["api_version"]) if r["endpoint"] else None
            org = orgs[r["id"]] = Org(r["id"], r["name"], azure)
        by_hash[r["key_hash"]] = org
    return Directory(orgs_by_key_hash=by_hash)


class CacheLoader:
    """Owns the caches' freshness: initial load, NOTIFY-driven reloads, reconnection."""

    def __init__(self, url: str, pool: asyncpg.Pool, holder: DirectoryHolder,
                 on_pricing: Callable[[PricingTable], None]) -> None:
        self._url = url
        self._pool = pool
        self._holder = holder
        self._on_pricing = on_pricing
        self._changed: set[str] = set()
        self._wake = asyncio.Event()
        self._background = Background()
        self.reloads = 0

    async def load(self) -> None:
        """Load the directory now; raises if the database cannot be read."""
        async with self._pool.acquire() as conn:
            directory = await load_directory(conn)
        self._holder.replace(directory)
        self.reloads += 1
        log.debug("directory loaded: %d orgs", directory.org_count)

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
            if changed - _PRICING_TABLES:
                await self.load()
            if changed & _PRICING_TABLES or loop.time() >= next_pricing:
                await self.load_pricing()
                next_pricing = loop.time() + PRICING_REFRESH_SECONDS
