"""``lectr bench --background-summary`` holds summaries back the way a second Lectr would.

The bench compares Lectr's p99 with summaries running and without, in one run; the "without"
arm is only fair if the cold process really skips its summary turns there (and only those),
and if holding back waits for a summary already under way rather than overlapping it.
"""

import asyncio

import asyncpg

from lectr.bench.background import SummaryHold
from lectr.jobs.registry import AGGREGATOR_LOCK, ALERTS_LOCK
from lectr.jobs.scheduler import Job, Scheduler


async def test_held_summaries_are_skipped_and_a_run_under_way_is_waited_for(database_url):
    started, release = asyncio.Event(), asyncio.Event()
    runs = []

    async def job(conn) -> None:
        runs.append(1)
        started.set()
        await asyncio.wait_for(release.wait(), 10)

    async def other(conn) -> None:
        runs.append(2)

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    scheduler = Scheduler(pool, [Job("aggregator", 3600, AGGREGATOR_LOCK, job),
                                 Job("alerts", 3600, ALERTS_LOCK, other)])
    hold = SummaryHold(database_url)
    try:
        running = asyncio.create_task(scheduler.run_once("aggregator"))
        await asyncio.wait_for(started.wait(), 10)
        holding = asyncio.create_task(hold.hold())
        done, _ = await asyncio.wait({holding}, timeout=0.5)
        assert not done, "the hold waits for the summary under way"
        release.set()
        assert await running is True
        await asyncio.wait_for(holding, 10)

        assert await scheduler.run_once("aggregator") is False  # held: the turn is skipped
        assert await scheduler.run_once("alerts") is True  # the other jobs go on
        await hold.release()
        release.set()
        assert await scheduler.run_once("aggregator") is True
        assert runs == [1, 2, 1]
    finally:
        release.set()
        await hold.close()
        await pool.close()
