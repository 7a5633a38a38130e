"""``lectr serve --workers N``: one supervisor, N worker processes sharing the proxy port.

The supervisor starts the database (embedded unless ``LECTR_DATABASE_URL`` is set), applies
migrations and seed data once, then runs N workers with ``SO_REUSEPORT``: each has its own
event loop, caches, ring buffer and writer, and worker 0 also serves the admin port. Jobs run
in one worker per turn (advisory locks); config changes reach all of them by NOTIFY. A worker
that dies is restarted; SIGTERM/SIGINT is passed on, every worker drains, then it exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys

from lectr import db, partitions
from lectr.config import Settings
from lectr.events.tokenizer_service import TokenizerProcess
from lectr.pricing import ensure_seeded
from lectr.startup import EXIT_CANNOT_LISTEN, StartupError

log = logging.getLogger("lectr.supervisor")

RESTART_DELAY = 1.0


async def prepare_database(settings: Settings) -> str:
    """Start or reach the database and bring it up to date; return its URL."""
    url = await db.resolve_url(settings.database_url, settings.data_dir)
    pool = await db.open_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await partitions.ensure_partitions(conn)
            await ensure_seeded(conn)
    finally:
        await pool.close()
    return url


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.count = workers
        self.stopping = False
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.metrics_dir = settings.data_dir / f"metrics-{os.getpid()}"
        self.cannot_listen = False  # a worker found its port taken: stop, do not restart
        self._stop_event: asyncio.Event | None = None

    async def run(self) -> int:
        from lectr.app import TOKENIZER_SOCKET_ENV

        try:
            url = await prepare_database(self.settings)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir.mkdir(parents=True)
        except StartupError:
            raise
        except Exception as exc:
            log.debug("start-up failed", exc_info=True)
            raise StartupError(f"could not start: {exc}") from exc
        tokenizer = TokenizerProcess()  # one for all workers
        await tokenizer.start()
        env = {**os.environ, "LECTR_DATABASE_URL": url, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
               TOKENIZER_SOCKET_ENV: tokenizer.path}
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._stop_event = stop
        try:
            watchers = [asyncio.create_task(self._keep_running(i, env)) for i in range(self.count)]
            log.info("Lectr supervisor: %d workers on port %d", self.count, self.settings.proxy_port)
            await stop.wait()
            code = await self._stop(watchers)
            return 1 if self.cannot_listen else code
        finally:
            await tokenizer.stop()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _keep_running(self, index: int, env: dict[str, str]) -> None:
        while not self.stopping:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lectr", "serve", "--worker-index", str(index), env=env)
            self.procs[index] = proc
            code = await proc.wait()
            _forget_worker(self.metrics_dir, proc.pid)
            if self.stopping:
                return
            if code == EXIT_CANNOT_LISTEN:  # the worker said why, in one line
                self.cannot_listen = True
                if self._stop_event is not None:
                    self._stop_event.set()
                return
            log.error("worker %d (pid %d) exited with %s; restarting", index, proc.pid, code)
            await asyncio.sleep(RESTART_DELAY)

    async def _stop(self, watchers: list[asyncio.Task]) -> int:
        self.stopping = True
        log.info("stopping %d workers", len(self.procs))
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        deadline = self.settings.shutdown_timeout + 15
        try:
            codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs.values())), deadline)
        except TimeoutError:
            for proc in self.procs.values():
                if proc.returncode is None:
                    proc.kill()
            codes = [1]
        await asyncio.gather(*watchers, return_exceptions=True)
        return 0 if all(code == 0 for code in codes) else 1


def _forget_worker(path, pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))
