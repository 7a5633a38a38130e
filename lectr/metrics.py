"""Prometheus metrics, served as text at ``/metrics`` on the admin port.

The hot path updates none of them: request counts and durations are observed by the cold
path from the events it writes, and the ring's and the spool's state is read at scrape time.
So recording costs a request nothing beyond its event.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lectr.events.record import RequestEvent
from lectr.events.ring import EventRing

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ADDED_BUCKETS = (25e-6, 50e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3)
_LAG_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 500e-3)


class _LiveState:
    """Reads the ring, the spool and the database state when Prometheus scrapes."""

    def __init__(self, ring: EventRing, spool_bytes: Callable[[], int], database_up: Callable[[], bool]) -> None:
        self.ring = ring
        self.spool_bytes = spool_bytes
        self.database_up = database_up

    def collect(self):
        yield GaugeMetricFamily("lectr_events_buffered", "Events waiting in the ring buffer.", value=len(self.ring))
        dropped = CounterMetricFamily("lectr_events_dropped", "Events lost, by reason.", labels=["reason"])
        for reason in ("ring_full", "spool_full", "invalid"):
            dropped.add_metric([reason], self.ring.dropped.get(reason, 0))
        yield dropped
        yield GaugeMetricFamily("lectr_spool_bytes", "Bytes of events spooled while Postgres is unavailable.",
                                value=self.spool_bytes())
        yield GaugeMetricFamily("lectr_database_up", "1 when the last database write succeeded.",
                                value=1 if self.database_up() else 0)


class Metrics:
    """This process's metrics and their registry."""

    def __init__(self, ring: EventRing, *, spool_bytes: Callable[[], int] = lambda: 0,
                 database_up: Callable[[], bool] = lambda: True) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lectr_requests", "Requests by provider and status class.",
                                ["provider", "status_class"], registry=r)
        self.duration = Histogram("lectr_request_duration_seconds", "Total request duration.", ["provider"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.added = Histogram("lectr_added_latency_seconds", "Time Lectr itself added to a request.",
                               buckets=_ADDED_BUCKETS, registry=r)
        self.upstream_errors = Counter("lectr_upstream_errors", "Failed requests by provider and error type.",
                                       ["provider", "error_type"], registry=r)
        self.events_written = Counter("lectr_events_written", "Events written to Postgres.", registry=r)
        self.batch_seconds = Histogram("lectr_writer_batch_seconds", "Time to write one batch of events.",
                                       registry=r)
        self.unpriced = Counter("lectr_unpriced_events", "Events with tokens but no price for their model.",
                                ["provider"], registry=r)
        self.loop_lag = Histogram("lectr_event_loop_lag_seconds", "How late the event loop runs a timer.",
                                  buckets=_LAG_BUCKETS, registry=r)
        r.register(_LiveState(ring, spool_bytes, database_up))

    def observe(self, event: RequestEvent) -> None:
        """Count one finished request (called by the cold path for every event)."""
        self.requests.labels(event.provider, f"{event.status_code // 100}xx").inc()
        self.duration.labels(event.provider).observe(event.t_end - event.t_start)
        self.added.observe(event.overhead_s)
        if event.error_type is not None and event.error_origin != "client":
            self.upstream_errors.labels(event.provider, event.error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def watch_loop_lag(histogram: Histogram, interval: float = 0.25) -> None:
    """Measure how late the loop wakes a sleeper: the time any request would wait behind work."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - expected))
