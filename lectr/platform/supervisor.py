"""``lectr serve``: one supervisor, the proxy workers and one cold process beside them.

The supervisor starts the database (embedded unless ``LECTR_DATABASE_URL`` is set), applies
migrations and seed data once, then starts the cold process (``lectr.cold``: tokeniser,
scheduled jobs, admin listener) and, once it is ready (its tokeniser listens last), N proxy workers sharing the
proxy port with ``SO_REUSEPORT``, each with its own event loop, caches, ring buffer and writer.
With one worker, the supervisor is that worker itself: two processes in all. A worker or cold
process that dies is restarted; SIGTERM/SIGINT is passed on, every worker drains, the cold
process stops last, then the supervisor exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from lectr.platform import db, partitions
from lectr.settings.config import Settings
from lectr.pricing.prices import ensure_seeded
from lectr.platform.startup import EXIT_CANNOT_LISTEN, TOKENIZER_SOCKET_ENV, StartupError

log = logging.getLogger("lectr.platform.supervisor")

RESTART_DELAY = 1.0
COLD = -1  # the cold process's index among the children
TOKENIZER_WAIT = 60.0  # the cold process loads the vocabularies in about a second


async def prepare_database(settings: Settings) -> str:
    """Start or reach the database and bring it up to date, once per ``lectr serve``; return its URL."""
    url = await db.resolve_url(settings.database_url, settings.data_dir)
    pool = await db.open_pool(url, min_size=1, max_size=1)  # migrates
    try:
        async with pool.acquire() as conn:
            await partitions.ensure_partitions(conn)
            await ensure_seeded(conn)
    finally:
        await pool.close()
    return url


class Supervisor:
    """Starts, watches and stops the cold process and the worker processes."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.count = workers
        self.stopping = False
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.metrics_dir = settings.data_dir / f"metrics-{os.getpid()}"
        self.cannot_listen = False  # a child found its port taken: stop, do not restart
        self._stop_event: asyncio.Event | None = None

    async def run(self) -> int:
        try:
            url = await prepare_database(self.settings)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir.mkdir(parents=True)
        except StartupError:
            raise
        except Exception as exc:
            log.debug("start-up failed", exc_info=True)
            raise StartupError(f"could not start: {exc}") from exc
        # A short private directory: Unix socket paths are limited to about 100 bytes.
        socket_dir = Path(tempfile.mkdtemp(prefix="lectr-"))
        tokenizer_path = str(socket_dir / "tokenizer.sock")
        # Set here too, before prometheus-client is imported, for the worker run in this process.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        env = {**os.environ, "LECTR_DATABASE_URL": url, TOKENIZER_SOCKET_ENV: tokenizer_path}
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._stop_event = stop
        watchers = [asyncio.create_task(self._keep_running(COLD, env))]
        inline = None
        try:
            if not await self._tokenizer_ready(tokenizer_path, stop):
                return await self._stop(watchers) if stop.is_set() else 1
            if self.count == 1:
                from lectr.app import Lectr, start_or_explain

                inline = Lectr(dataclasses.replace(self.settings, database_url=url), tokenizer_path=tokenizer_path)
                await start_or_explain(inline)
            else:
                watchers += [asyncio.create_task(self._keep_running(i, env)) for i in range(self.count)]
            log.info("Lectr supervisor: %d worker%s on port %d and a cold process", self.count,
                     "" if self.count == 1 else "s", self.settings.proxy_port)
            await stop.wait()
            if inline is not None:
                log.info("shutting down: finishing in-flight requests")
                await inline.stop()
                inline = None
            code = await self._stop(watchers)
            return 1 if self.cannot_listen else code
        finally:
            if inline is not None:
                await inline.stop()
            if not self.stopping:
                await self._stop(watchers)
            shutil.rmtree(socket_dir, ignore_errors=True)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _tokenizer_ready(self, path: str, stop: asyncio.Event) -> bool:
        """Wait until the cold process's tokeniser listens; False if stopped or it cannot start."""
        deadline = asyncio.get_running_loop().time() + TOKENIZER_WAIT
        while not os.path.exists(path):
            if stop.is_set() or self.cannot_listen or asyncio.get_running_loop().time() > deadline:
                if not stop.is_set():
                    log.error("the cold process did not start")
                return False
            await asyncio.sleep(0.02)
        return True

    async def _keep_running(self, index: int, env: dict[str, str]) -> None:
        role = "cold process" if index == COLD else f"worker {index}"
        args = ["--cold"] if index == COLD else ["--worker-index", str(index)]
        while not self.stopping:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lectr", "serve", *args, env=env)
            self.procs[index] = proc
            if self.stopping:  # (re)started while _stop was stopping the others: it would wait forever
                proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            _forget_process(self.metrics_dir, proc.pid)
            if self.stopping:
                return
            if code == EXIT_CANNOT_LISTEN:  # the child said why, in one line
                self.cannot_listen = True
                if self._stop_event is not None:
                    self._stop_event.set()
                return
            log.error("%s (pid %d) exited with %s; restarting", role, proc.pid, code)
            await asyncio.sleep(RESTART_DELAY)

    async def _stop(self, watchers: list[asyncio.Task]) -> int:
        """Stop the workers (they drain), then the cold process (its tokeniser serves them to the end)."""
        self.stopping = True
        workers = {i: p for i, p in self.procs.items() if i != COLD}
        log.info("stopping %d workers", len(workers) or 1)
        codes = dict(zip(workers, await self._terminate(list(workers.values()))))
        if COLD in self.procs:
            codes[COLD] = (await self._terminate([self.procs[COLD]]))[0]
        await asyncio.gather(*watchers, return_exceptions=True)
        # A child ended by the SIGTERM itself had not yet set its handler: it was still starting,
        # with nothing in flight and no event to write, so its stop is as clean as a drain.
        unclean = {i: code for i, code in codes.items() if code not in (0, -signal.SIGTERM)}
        for i, code in unclean.items():
            log.error("%s stopped with exit status %s", "the cold process" if i == COLD else f"worker {i}", code)
        return 1 if unclean else 0

    async def _terminate(self, procs: list[asyncio.subprocess.Process]) -> list[int]:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        deadline = self.settings.shutdown_timeout + 15
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), deadline))
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    log.error("a child still running %.0f s after SIGTERM is killed", deadline)
                    proc.kill()
            return [await proc.wait() for proc in procs]  # the killed ones: -SIGKILL, unclean


def _forget_process(path, pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))
