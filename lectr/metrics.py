"""Prometheus metrics, served as text at ``/metrics`` on the admin port.

The hot path updates none of them: request counts and durations are observed by the cold
path from the events it writes, and the ring's and the spool's state is copied into gauges
once a second (and at every scrape). With several workers, prometheus-client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor) merges every worker's values.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter as Tally
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lectr.events.record import RequestEvent
from lectr.events.ring import EventRing

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ADDED_BUCKETS = (25e-6, 50e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3)
_LAG_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 500e-3)
DROP_REASONS = ("ring_full", "spool_full", "invalid")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """This process's metrics and their registry."""

    def __init__(self, ring: EventRing, *, spool_bytes: Callable[[], int] = lambda: 0,
                 database_up: Callable[[], bool] = lambda: True) -> None:
        self._ring = ring
        self._spool_bytes = spool_bytes
        self._database_up = database_up
        self._drops_exported: Tally = Tally()
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
        self.dropped = Counter("lectr_events_dropped", "Events lost, by reason.", ["reason"], registry=r)
        self.buffered = Gauge("lectr_events_buffered", "Events waiting in the ring buffers.", registry=r,
                              multiprocess_mode="livesum")
        self.spool = Gauge("lectr_spool_bytes", "Bytes of events spooled while Postgres is unavailable.",
                           registry=r, multiprocess_mode="livemax")
        self.database = Gauge("lectr_database_up", "1 when every worker's last database write succeeded.",
                              registry=r, multiprocess_mode="livemin")
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        # labels() builds and locks on every call; the children are few, so keep them.
        self._request_counters: dict[tuple[str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}

    def observe(self, event: RequestEvent) -> None:
        """Count one finished request (called by the cold path for every event)."""
        provider, status_class = event.provider, event.status_code // 100
        counter = self._request_counters.get((provider, status_class))
        if counter is None:
            counter = self._request_counters[(provider, status_class)] = \
                self.requests.labels(provider, f"{status_class}xx")
        counter.inc()
        duration = self._durations.get(provider)
        if duration is None:
            duration = self._durations[provider] = self.duration.labels(provider)
        duration.observe(event.t_end - event.t_start)
        self.added.observe(event.overhead_s)
        if event.error_type is not None and event.error_origin != "client":
            self.upstream_errors.labels(provider, event.error_type).inc()

    def refresh(self) -> None:
        """Copy the ring's and the spool's current state into the exported metrics."""
        self.buffered.set(len(self._ring))
        self.spool.set(self._spool_bytes())
        self.database.set(1 if self._database_up() else 0)
        new = Tally(self._ring.dropped) - self._drops_exported
        for reason, n in new.items():
            self.dropped.labels(reason).inc(n)
        self._drops_exported.update(new)

    def render(self) -> bytes:
        self.refresh()
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)
        return generate_latest(merged)

    async def keep_fresh(self, interval: float = 1.0) -> None:
        """Refresh every ``interval`` seconds, so every worker's state reaches a merged scrape."""
        while True:
            self.refresh()
            await asyncio.sleep(interval)


async def watch_loop_lag(histogram: Histogram, interval: float = 0.25) -> None:
    """Measure how late the loop wakes a sleeper: the time any request would wait behind work."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - expected))
