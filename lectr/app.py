"""Start-up and shutdown, in the order the architecture gives; owns every long-lived object.

Start: config → database, migrations, partitions, seed data → caches → event pipeline →
listeners. Stop (SIGTERM/SIGINT): listeners stop accepting, in-flight requests finish (with
a deadline), then background jobs stop, the event pipeline drains last, the database closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import TYPE_CHECKING

from lectr import db, partitions
from lectr.alerts.job import AlertJob
from lectr.analysis.aggregator import run_aggregator
from lectr.analysis.housekeeping import run_housekeeping
from lectr.analysis.schedule import Job, Scheduler
from lectr.background import Background
from lectr.caches import CacheLoader
from lectr.config import Settings
from lectr.directory import DirectoryHolder
from lectr.events.ring import EventRing
from lectr.events.rows import RowBuilder
from lectr.events.spool import Spool
from lectr.events.tokenizer_service import TokenizerClient, TokenizerProcess
from lectr.events.writer import EventWriter
from lectr.jobs.anomalies import ANOMALY_LOCK, scheduled_run
from lectr.jobs.recommendations import RECOMMEND_LOCK, run_recommendations
from lectr.jobs.rollups import ROLLUPS_LOCK, run_rollups
from lectr.metrics import Metrics, watch_loop_lag
from lectr.pricing import PricingTable, ensure_seeded
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.server import ProxyContext, ProxyServer
from lectr.proxy.upstream import UpstreamPools
from lectr.startup import CannotListen, Listener, StartupError, describe_bind_error

if TYPE_CHECKING:
    from lectr.api.app import AdminServer

log = logging.getLogger("lectr")

HOUSEKEEPING_SECONDS = 3600.0
TOKENIZER_SOCKET_ENV = "LECTR_TOKENIZER_SOCKET"  # set by the supervisor for its workers
# Advisory lock ids of the scheduled jobs, one per job.
AGGREGATOR_LOCK = 0x4C434147  # "LCAG"
HOUSEKEEPING_LOCK = 0x4C43484B  # "LCHK"
ALERTS_LOCK = 0x4C43414C  # "LCAL"


def scheduled_jobs(settings: Settings) -> list[Job]:
    """The cold-path jobs every Lectr process schedules (and one of them runs each turn)."""
    retention = settings.recording.retention_days
    return [
        Job("rollups", settings.admin.rollup_interval, ROLLUPS_LOCK, run_rollups),
        Job("aggregator", settings.admin.aggregate_interval, AGGREGATOR_LOCK, run_aggregator),
        Job("housekeeping", HOUSEKEEPING_SECONDS, HOUSEKEEPING_LOCK, lambda conn: run_housekeeping(conn, retention)),
        Job("anomalies", settings.admin.anomaly_interval, ANOMALY_LOCK, scheduled_run()),
        Job("recommendations", settings.admin.recommend_interval, RECOMMEND_LOCK,
            lambda conn: run_recommendations(conn, min_requests=settings.admin.recommend_min_requests)),
        Job("alerts", settings.alerts.interval, ALERTS_LOCK, AlertJob(settings.alerts).run),
    ]


async def _listen(start, listener: Listener) -> None:
    try:
        await start()
    except OSError as exc:
        raise CannotListen(describe_bind_error(listener, exc)) from None


class Lectr:
    """One Lectr process: everything ``lectr serve`` starts, and the order it stops them in."""

    def __init__(self, settings: Settings, *, worker_index: int | None = None) -> None:
        self.settings = settings
        self.worker_index = worker_index  # None: the only process; otherwise one of N workers
        self.database_url: str | None = None
        self.pool = None
        self.writer_pool = None
        self.directory = DirectoryHolder()
        self.ring: EventRing = EventRing(settings.ring_size, batch_size=settings.recording.flush_events,
                                           owner=lambda event: event.org_id)
        self.spool = Spool(settings.spool_dir, settings.recording.spool_max_bytes)
        self.rows = RowBuilder(PricingTable([]))
        self.tokenizer: TokenizerProcess | None = None
        self.writer: EventWriter | None = None
        self.metrics = Metrics(self.ring, spool_bytes=self._spooled_bytes,
                               database_up=lambda: self.writer is None or self.writer.database_up,
                               unwritten=lambda: 0 if self.writer is None else self.writer.unwritten)
        self.loader: CacheLoader | None = None
        self.upstream: UpstreamPools | None = None
        self.proxy: ProxyServer | None = None
        self.admin: AdminServer | None = None
        self.scheduler: Scheduler | None = None
        self._jobs = Background()
        self.started = False  # True once both listeners are open

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
        self.database_url = await db.resolve_url(s.database_url, s.data_dir)
        self.pool = await db.open_pool(self.database_url)
        self.writer_pool = await db.open_pool(self.database_url, min_size=1, max_size=2, synchronous_commit=False,
                                              stateless=True)
        async with self.pool.acquire() as conn:
            await partitions.ensure_partitions(conn)
            await ensure_seeded(conn)

        self.loader = CacheLoader(self.database_url, self.pool, self.directory, self._use_pricing)
        await self.loader.load()  # no request is served before the caches are loaded
        await self.loader.load_pricing()
        self.loader.start()

        # One tokeniser process serves every worker (the supervisor starts it and says where);
        # a single process starts its own.
        socket_path = os.environ.get(TOKENIZER_SOCKET_ENV)
        if socket_path is None:
            self.tokenizer = TokenizerProcess()
            await self.tokenizer.start()
            socket_path = self.tokenizer.path
        self.writer = EventWriter(self.ring, self.writer_pool, self.rows, self.spool, self.metrics,
                                  tokenizer=TokenizerClient(socket_path),
                                  batch_size=s.recording.flush_events, interval=s.recording.flush_interval)
        self.writer.start()
        self._jobs.start(watch_loop_lag(self.metrics.loop_lag), "lectr-loop-lag")
        self._jobs.start(self.metrics.keep_fresh(), "lectr-metrics")
        self.scheduler = Scheduler(self.pool, scheduled_jobs(s))
        self.scheduler.start()

        loop = asyncio.get_running_loop()
        poller = BusyPoller(loop, self._busy_poll_us())
        poller.idle = self.writer.build_waiting  # rows get built between requests, not behind them
        self.upstream = UpstreamPools(s.upstreams, poller)
        ctx = ProxyContext(loop=loop, limits=s.limits, base_urls=s.upstreams.base_urls,
                           directory=self.directory, upstream=self.upstream, ring=self.ring)
        if not self.worker_index:  # the single process, or worker 0 of several
            # Imported here: the other workers never load aiohttp (about 14 MB each).
            from lectr.api.app import AdminServer, make_admin_app
            from lectr.api.state import AdminState

            state = AdminState(pool=self.pool, directory=self.directory, metrics=self.metrics,
                               admin_secret=s.admin.secret, session_hours=s.admin.session_hours,
                               alerts=s.alerts)
            self.admin = AdminServer(make_admin_app(state), s.host, s.admin_port)
            await _listen(self.admin.start, Listener("admin", s.host, s.admin_port))
        self.proxy = ProxyServer(ctx, s.host, s.proxy_port, reuse_port=self.worker_index is not None)
        await _listen(self.proxy.start, Listener("proxy", s.host, s.proxy_port))
        self.started = True
        # Everything allocated so far lives as long as the process: keep the collector from
        # walking it again and again, which otherwise stalls the loop for milliseconds.
        gc.collect()
        gc.freeze()
        log.info("Lectr%s proxy on http://%s:%d/v1%s (%d orgs)",
                 "" if self.worker_index is None else f" worker {self.worker_index}", s.host, self.proxy.port,
                 f", admin on http://{s.host}:{self.admin.port}" if self.admin else "", self.directory.current.org_count)

    def _spooled_bytes(self) -> int:
        """The spool's size on disk now, whichever worker wrote or replayed it."""
        total = 0
        for path in self.spool.directory.glob("*.batch"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # replayed meanwhile, by this worker or another
                pass
        return total

    def _use_pricing(self, table: PricingTable) -> None:
        self.rows.pricing = table

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop(self.settings.shutdown_timeout)
        if self.admin is not None:
            await self.admin.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
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
        if self.tokenizer is not None:
            await self.tokenizer.stop()
        for pool in (self.writer_pool, self.pool):
            if pool is not None:
                await pool.close()
        if not self.started:
            return  # a start-up that failed says why in one line; nothing ran to report on
        log.info("Lectr stopped; %d events recorded, %d written, %d dropped", self.ring.appended,
                 self.writer.written if self.writer else 0, self.ring.dropped_total)


async def serve(settings: Settings, *, worker_index: int | None = None) -> None:
    """Run one Lectr process until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = Lectr(settings, worker_index=worker_index)
    try:
        try:
            await app.start()
        except StartupError:
            raise
        except Exception as exc:
            log.debug("start-up failed", exc_info=True)  # the traceback, for whoever asks for it
            raise StartupError(f"could not start: {exc}") from exc
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
    finally:
        await app.stop()
