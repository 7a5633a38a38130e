"""The cold process: everything of ``lectr serve`` that is not proxying, off the proxy's loop.

One per ``lectr serve``, started (and restarted if it dies) by the supervisor beside the proxy
workers. It hosts the shared tokeniser (the socket the workers' writers ask for token counts),
the scheduled jobs of ``lectr.jobs.registry`` and the admin listener (management API, dashboard,
``/metrics`` merged over every process). A summary over millions of rows therefore never runs
on a loop that is relaying a response.
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
from lectr.recording.spool import spooled_bytes
from lectr.recording.tokenizer_service import start_server
from lectr.jobs.registry import scheduled_jobs
from lectr.jobs.scheduler import Scheduler
from lectr.platform.metrics import Metrics, watch_loop_lag
from lectr.platform.startup import CannotListen, Listener, StartupError, describe_bind_error

log = logging.getLogger("lectr.cold")


class ColdSide:
    """The cold process's parts, started in the order workers need them and stopped in reverse."""

    def __init__(self, settings: Settings, tokenizer_path: str) -> None:
        self.settings = settings
        self.tokenizer_path = tokenizer_path
        self.pool = None
        self.tokenizer: asyncio.Server | None = None
        self.directory = DirectoryHolder()
        self.loader: CacheLoader | None = None
        self.scheduler: Scheduler | None = None
        self.admin = None
        # No ring here: the workers' state reaches /metrics through the multiprocess directory,
        # and this process exports none of its own (it would outvote theirs).
        self.metrics = Metrics(EventRing(1), spool_bytes=lambda: spooled_bytes(settings.spool_dir),
                               exports_state=False)
        self._jobs = Background()

    async def start(self) -> None:
        s = self.settings
        url = await db.resolve_url(s.database_url, s.data_dir)  # the supervisor's URL, already migrated
        self.pool = await db.open_pool(url, migrate=False)
        self.loader = CacheLoader(url, self.pool, self.directory, lambda table: None)
        await self.loader.load()  # the admin API checks org keys against it
        self.loader.start()
        self._jobs.start(watch_loop_lag(self.metrics.loop_lag), "lectr-loop-lag")
        self.scheduler = Scheduler(self.pool, scheduled_jobs(s))
        self.scheduler.start()

        # Imported here: only this process loads aiohttp.
        from lectr.admin import AdminServer, make_admin_app
        from lectr.api.state import AdminState

        state = AdminState(pool=self.pool, directory=self.directory, metrics=self.metrics,
                           admin_secret=s.admin.secret, session_hours=s.admin.session_hours,
                           alerts=s.alerts)
        self.admin = AdminServer(make_admin_app(state), s.host, s.admin_port)
        try:
            await self.admin.start()
        except OSError as exc:
            raise CannotListen(describe_bind_error(Listener("admin", s.host, s.admin_port), exc)) from None
        # Last: the supervisor starts the workers once this socket exists, so a proxy that is
        # ready means an admin listener that is too.
        self.tokenizer = await start_server(self.tokenizer_path)
        gc.collect()
        gc.freeze()
        log.info("Lectr cold process: admin on http://%s:%d, jobs %s", s.host, self.admin.port,
                 ", ".join(self.scheduler.jobs))

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self._jobs.stop()
        if self.loader is not None:
            await self.loader.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.tokenizer is not None:  # last: a draining worker may still ask it
            self.tokenizer.close()
            await self.tokenizer.wait_closed()


def yield_to_workers(increment: int) -> None:
    """Lower this process's CPU priority by ``increment`` (a nice increment, 0-19); a refusal is
    logged and changes nothing.

    The workers and the cold process share a session, so one kernel scheduling group: at a higher
    nice the cold process's work (a summary's Python, the detector, token counting) gives way at
    once when a worker wakes up on its core, instead of running out its time slice first. Called
    before any thread starts: on Linux each thread has its own nice value and new ones inherit it.
    """
    try:
        os.nice(increment)
    except OSError as exc:
        log.warning("could not lower the cold process's CPU priority (LECTR_COLD_NICE): %s", exc)


async def serve_cold(settings: Settings, tokenizer_path: str) -> None:
    """Run the cold process until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    cold = ColdSide(settings, tokenizer_path)
    try:
        try:
            await cold.start()
        except StartupError:
            raise
        except Exception as exc:
            log.debug("start-up failed", exc_info=True)
            raise StartupError(f"could not start: {exc}") from exc
        await stop.wait()
    finally:
        await cold.stop()
