"""Scheduled jobs, each run by one process only.

A job runs inside a transaction that first takes a Postgres advisory lock with
``pg_try_advisory_xact_lock``: of several machines' cold processes, whoever gets the lock
runs the job and the others skip that turn. ``run_once(name, wait=True)`` and ``run_job``
(``lectr jobs run``) wait for the lock instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg

from lectr.platform.background import Background

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    """A named piece of cold-path work and how often it runs."""

    name: str
    interval: float
    lock_id: int
    run: Callable[[asyncpg.Connection], Awaitable[object]]


class Scheduler:
    """Runs each job every ``interval`` seconds, first right after start."""

    def __init__(self, pool: asyncpg.Pool, jobs: list[Job]) -> None:
        self.pool = pool
        self.jobs = {job.name: job for job in jobs}
        self.runs: dict[str, int] = {job.name: 0 for job in jobs}
        self._background = Background()

    def start(self) -> None:
        for job in self.jobs.values():
            self._background.start(self._every(job), f"lectr-job-{job.name}")

    async def stop(self) -> None:
        await self._background.stop()

    async def run_once(self, name: str, *, wait: bool = False) -> bool:
        """Run job ``name`` now if no other process is running it; True when it ran here."""
        job = self.jobs[name]
        async with self.pool.acquire() as conn, conn.transaction():
            if wait:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", job.lock_id)
            elif not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", job.lock_id):
                return False
            await job.run(conn)
        self.runs[name] += 1
        return True

    async def _every(self, job: Job) -> None:
        while True:
            try:
                await self.run_once(job.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; try again next turn
                log.warning("job %s failed: %s", job.name, exc)
            await asyncio.sleep(job.interval)


async def run_job(conn: asyncpg.Connection, job: Job) -> None:
    """Run ``job`` once on ``conn``, waiting for its advisory lock if another process holds it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", job.lock_id)
        await job.run(conn)
