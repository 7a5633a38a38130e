"""One proxy worker: start-up and shutdown in the order the architecture gives.

The supervisor (``lectr.platform.supervisor``) has migrated and seeded the database and started the
cold process (tokeniser, scheduled jobs, admin listener) before any worker starts. A worker:
caches → event pipeline → proxy listener. Stop (SIGTERM/SIGINT): the listener stops
accepting, in-flight requests finish (with a deadline), the event pipeline drains last, the
database closes. Workers only proxy and write events.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal

from lectr.platform import db
from lectr.platform.background import Background
from lectr.snapshot.loader import CacheLoader
from lectr.settings.config import Settings
from lectr.snapshot.directory import DirectoryHolder
from lectr.proxy.ring import EventRing
from lectr.recording.rows import RowBuilder
from lectr.recording.spool import Spool, spooled_bytes
from lectr.recording.tokenizer_service import TokenizerClient
from lectr.recording.writer import EventWriter
from lectr.jobs.registry import scheduled_jobs  # noqa: F401 -- the job list moved to lectr/jobs/registry.py
from lectr.platform.metrics import Metrics, watch_loop_lag
from lectr.pricing.prices import PricingTable
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.server import ProxyContext, ProxyServer
from lectr.proxy.pool import UpstreamPools
from lectr.platform.startup import TOKENIZER_SOCKET_ENV, CannotListen, Listener, StartupError, describe_bind_error

log = logging.getLogger("lectr")


async def _listen(start, listener: Listener) -> None:
    try:
        await start()
    except OSError as exc:
        raise CannotListen(describe_bind_error(listener, exc)) from None


class Lectr:
    """One proxy worker: what it starts, and the order it stops them in."""

    def __init__(self, settings: Settings, *, worker_index: int | None = None,
                 tokenizer_path: str | None = None) -> None:
        self.settings = settings
        self.worker_index = worker_index  # None: the only worker (in the supervisor's process)
        # Where the cold process's tokeniser listens (the supervisor says).
        self.tokenizer_path = tokenizer_path or os.environ.get(TOKENIZER_SOCKET_ENV, "")
        self.database_url: str | None = None
        self.pool = None
        self.directory = DirectoryHolder()
        self.ring: EventRing = EventRing(settings.ring_size, batch_size=settings.recording.flush_events,
                                           owner=lambda event: event.org_id)
        self.spool = Spool(settings.spool_dir, settings.recording.spool_max_bytes)
        self.rows = RowBuilder(PricingTable([]))
        self.writer: EventWriter | None = None
        self.metrics = Metrics(self.ring, spool_bytes=self._spooled_bytes,
                               database_up=lambda: self.writer is None or self.writer.database_up,
                               unwritten=lambda: 0 if self.writer is None else self.writer.unwritten)
        self.loader: CacheLoader | None = None
        self.upstream: UpstreamPools | None = None
        self.proxy: ProxyServer | None = None
        self._jobs = Background()
        self.started = False  # True once the proxy listener is open

    def _busy_poll_us(self) -> int:
        """The busy-poll limit, or 0 when there are more workers than cores: a worker spinning
        would then hold a core another worker is waiting for."""
        s = self.settings
        cores = len(os.sched_getaffinity(0))
        if self.worker_index is not None and s.workers > cores and s.limits.busy_poll_us:
            if self.worker_index == 0:
                log.info("%d workers on %d cores: busy polling is off", s.workers, cores)
            return 0
        return s.limits.busy_poll_us

    async def start(self) -> None:
        s = self.settings
        self.database_url = await db.resolve_url(s.database_url, s.data_dir)  # the supervisor's, migrated
        # One small pool: the writer's COPYs and the cache loads (the loader LISTENs on its own
        # connection). Neither SETs, locks nor keeps a cursor, so releasing skips the reset.
        self.pool = await db.open_pool(self.database_url, min_size=1, max_size=2, synchronous_commit=False,
                                       stateless=True, migrate=False)

        self.loader = CacheLoader(self.database_url, self.pool, self.directory, self._use_pricing)
        await self.loader.load()  # no request is served before the caches are loaded
        await self.loader.load_pricing()
        self.loader.start()

        self.writer = EventWriter(self.ring, self.pool, self.rows, self.spool, self.metrics,
                                  tokenizer=TokenizerClient(self.tokenizer_path),
                                  batch_size=s.recording.flush_events, interval=s.recording.flush_interval)
        self.writer.start()
        self._jobs.start(watch_loop_lag(self.metrics.loop_lag), "lectr-loop-lag")
        self._jobs.start(self.metrics.keep_fresh(), "lectr-metrics")
        loop = asyncio.get_running_loop()
        poller = BusyPoller(loop, self._busy_poll_us())
        poller.idle = self.writer.build_waiting  # rows get built between requests, not behind them
        self.upstream = UpstreamPools(s.upstreams, poller)
        ctx = ProxyContext(loop=loop, limits=s.limits, base_urls=s.upstreams.base_urls,
                           directory=self.directory, upstream=self.upstream, ring=self.ring)
        self.proxy = ProxyServer(ctx, s.host, s.proxy_port, reuse_port=self.worker_index is not None)
        await _listen(self.proxy.start, Listener("proxy", s.host, s.proxy_port))
        self.started = True
        # Everything allocated so far lives as long as the process: keep the collector from
        # walking it again and again, which otherwise stalls the loop for milliseconds.
        gc.collect()
        gc.freeze()
        log.info("Lectr%s proxy on http://%s:%d/v1 (%d orgs)",
                 "" if self.worker_index is None else f" worker {self.worker_index}", s.host, self.proxy.port,
                 self.directory.current.org_count)

    def _spooled_bytes(self) -> int:
        """The spool's size on disk now, whichever worker wrote or replayed it."""
        return spooled_bytes(self.spool.directory)

    def _use_pricing(self, table: PricingTable) -> None:
        self.rows.pricing = table

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop(self.settings.shutdown_timeout)
        await self._jobs.stop()
        if self.loader is not None:
            await self.loader.stop()
        if self.upstream is not None:
            await self.upstream.close()
        if self.writer is not None:
            if self.upstream is not None:
                self.upstream.poller.idle = None  # the writer is closing: nothing to build ahead
            await self.writer.close()  # last: every completed request's event is written or spooled
            self.writer.tokenizer.close()
        if self.pool is not None:
            await self.pool.close()
        if not self.started:
            return  # a start-up that failed says why in one line; nothing ran to report on
        log.info("Lectr stopped; %d events recorded, %d written, %d dropped", self.ring.appended,
                 self.writer.written if self.writer else 0, self.ring.dropped_total)


async def start_or_explain(app: Lectr) -> None:
    """Start ``app``; any failure becomes a one-line StartupError (the traceback at DEBUG)."""
    try:
        await app.start()
    except StartupError:
        raise
    except Exception as exc:
        log.debug("start-up failed", exc_info=True)  # the traceback, for whoever asks for it
        raise StartupError(f"could not start: {exc}") from exc


async def serve(settings: Settings, *, worker_index: int | None = None) -> None:
    """Run one proxy worker until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = Lectr(settings, worker_index=worker_index)
    try:
        await start_or_explain(app)
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
    finally:
        await app.stop()
