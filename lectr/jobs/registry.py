"""The scheduled jobs: name, interval, advisory lock id and what each runs.

A new cold-path job is one ``Job`` line in ``scheduled_jobs``. The cold process schedules
them all (``lectr.jobs.scheduler``); ``lectr jobs run NAME`` runs one of them by hand.
"""

from __future__ import annotations

from lectr.alerts.job import AlertJob
from lectr.jobs.aggregator import run_aggregator
from lectr.jobs.housekeeping import run_housekeeping
from lectr.settings.config import Settings
from lectr.jobs.anomalies import ANOMALY_LOCK, scheduled_run
from lectr.jobs.recommendations import RECOMMEND_LOCK, run_recommendations
from lectr.jobs.rollups import ROLLUPS_LOCK, run_rollups
from lectr.jobs.scheduler import Job

HOUSEKEEPING_SECONDS = 3600.0
# Advisory lock ids of the scheduled jobs, one per job.
AGGREGATOR_LOCK = 0x4C434147  # "LCAG"
HOUSEKEEPING_LOCK = 0x4C43484B  # "LCHK"
ALERTS_LOCK = 0x4C43414C  # "LCAL"


def scheduled_jobs(settings: Settings) -> list[Job]:
    """The cold-path jobs the cold process schedules (of several machines, one runs each turn)."""
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


def job_names(settings: Settings | None = None) -> list[str]:
    """The names ``lectr jobs run`` accepts."""
    return [job.name for job in scheduled_jobs(settings or Settings())]
