"""What the admin application shares with the rest of the process."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from lectr.settings.alerts import AlertConfig
from lectr.snapshot.directory import DirectoryHolder
from lectr.platform.metrics import Metrics


@dataclass
class AdminState:
    """The admin listener's view of the process: database, caches, metrics, settings."""

    pool: asyncpg.Pool
    directory: DirectoryHolder
    metrics: Metrics
    admin_secret: str | None
    session_hours: float
    refresh_seconds: int = 60
    alerts: AlertConfig = AlertConfig()


STATE = web.AppKey("state", AdminState)
