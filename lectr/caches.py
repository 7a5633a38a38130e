"""Loads the in-memory directory from Postgres and keeps it current.

Changes arrive as NOTIFY on ``lectr_config``; a reload builds a whole new ``Directory`` and
swaps it in, so the hot path never sees a half-updated one. If the listening connection is
lost, the loader reconnects and reloads, and a slow periodic reload covers any gap.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from lectr.db import CONFIG_CHANNEL
from lectr.directory import Directory, DirectoryHolder, Org
from lectr.providers.base import AzureTarget

log = logging.getLogger(__name__)

SAFETY_RELOAD_SECONDS = 60.0
RECONNECT_SECONDS = 1.0


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
    """Owns the directory's freshness: initial load, NOTIFY-driven reloads, reconnection."""

    def __init__(self, url: str, pool: asyncpg.Pool, holder: DirectoryHolder) -> None:
        self._url = url
        self._pool = pool
        self._holder = holder
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.reloads = 0

    async def load(self) -> None:
        """Load the directory now; raises if the database cannot be read."""
        async with self._pool.acquire() as conn:
            directory = await load_directory(conn)
        self._holder.replace(directory)
        self.reloads += 1
        log.debug("directory loaded: %d orgs", directory.org_count)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lectr-cache-loader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            listener: asyncpg.Connection | None = None
            try:
                listener = await asyncpg.connect(self._url)
                lost = asyncio.Event()
                listener.add_termination_listener(lambda _c: lost.set())
                await listener.add_listener(CONFIG_CHANNEL, lambda *_: self._wake.set())
                await self.load()  # catch anything that changed while not listening
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(self._wake.wait(), SAFETY_RELOAD_SECONDS)
                    except TimeoutError:
                        pass
                    self._wake.clear()
                    if not lost.is_set():
                        await self.load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down or restarting: keep the last snapshot
                log.warning("config listener: %s; retrying in %.0fs", exc, RECONNECT_SECONDS)
            finally:
                if listener is not None and not listener.is_closed():
                    listener.terminate()
            await asyncio.sleep(RECONNECT_SECONDS)
