"""Start-up and shutdown, in the order the architecture gives; owns every long-lived object.

Start: config → database and migrations → caches → event pipeline → listeners.
Stop (SIGTERM/SIGINT): listeners stop accepting, in-flight requests finish (with a deadline),
then the loader, the pools and the database close, in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from lectr import db
from lectr.caches import CacheLoader
from lectr.config import Settings
from lectr.directory import DirectoryHolder
from lectr.events.ring import EventRing
from lectr.proxy.server import ProxyContext, ProxyServer
from lectr.proxy.upstream import UpstreamPools

log = logging.getLogger("lectr")


class Lectr:
    """One Lectr process: everything ``lectr serve`` starts, and the order it stops them in."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database_url: str | None = None
        self.pool = None
        self.directory = DirectoryHolder()
        self.loader: CacheLoader | None = None
        self.ring: EventRing = EventRing(settings.ring_size)
        self.upstream: UpstreamPools | None = None
        self.proxy: ProxyServer | None = None

    async def start(self) -> None:
        s = self.settings
        self.database_url = await db.resolve_url(s.database_url, s.data_dir)
        self.pool = await db.open_pool(self.database_url)

        self.loader = CacheLoader(self.database_url, self.pool, self.directory)
        await self.loader.load()  # no request is served before the caches are loaded
        self.loader.start()

        loop = asyncio.get_running_loop()
        self.upstream = UpstreamPools(s.upstreams)
        self.upstream.warm()
        ctx = ProxyContext(loop=loop, limits=s.limits, base_urls=s.upstreams.base_urls,
                           directory=self.directory, upstream=self.upstream, ring=self.ring)
        self.proxy = ProxyServer(ctx, s.host, s.proxy_port)
        await self.proxy.start()
        log.info("Lectr proxy listening on http://%s:%d/v1 (%d orgs)", s.host, self.proxy.port,
                 self.directory.current.org_count)

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop(self.settings.shutdown_timeout)
        if self.loader is not None:
            await self.loader.stop()
        if self.upstream is not None:
            await self.upstream.close()
        if self.pool is not None:
            await self.pool.close()
        log.info("Lectr stopped; %d events recorded, %d dropped", self.ring.appended, self.ring.dropped_total)


async def serve(settings: Settings) -> None:
    """Run Lectr until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = Lectr(settings)
    try:
        await app.start()
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
    finally:
        await app.stop()
