"""The scheduled jobs: name, interval, advisory lock id and what each runs.

A new cold-path job is one ``Job`` line in ``scheduled_jobs``. The cold process schedules
them all (``lectr.jobs.scheduler``); ``lectr jobs run NAME`` runs one of them by hand.
"""

from __future__ import annotations

from lectr.analysis.aggregator import run_aggregator
from lectr.analysis.housekeeping import run_housekeeping
from lectr.config import Settings
from lectr.jobs.scheduler import Job

HOUSEKEEPING_SECONDS = 3600.0
# Advisory lock ids of the scheduled jobs, one per job.
AGGREGATOR_LOCK = 0x4C434147  # "LCAG"
HOUSEKEEPING_LOCK = 0x4C43484B  # "LCHK"


def scheduled_jobs(settings: Settings) -> list[Job]:
    """The cold-path jobs the cold process schedules (of several machines, one runs each turn)."""
    retention = settings.recording.retention_days
    return [
        Job("aggregator", settings.admin.aggregate_interval, AGGREGATOR_LOCK, run_aggregator),
        Job("housekeeping", HOUSEKEEPING_SECONDS, HOUSEKEEPING_LOCK, lambda conn: run_housekeeping(conn, retention)),
    ]


def job_names(settings: Settings | None = None) -> list[str]:
    """The names ``lectr jobs run`` accepts."""
    return [job.name for job in scheduled_jobs(settings or Settings())]
