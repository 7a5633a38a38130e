"""Prometheus metrics, served as text at ``/metrics`` on the admin port.

The hot path updates none of them: request counts and durations are observed by the cold
path from the events it writes, and the ring's state is copied into the metrics once a second
by each worker (the spool's is read from the disk at every scrape). The cold process serves
``/metrics``, merged over every process by prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor). Requests are counted in batches:
``observe`` collects, ``flush`` updates each metric once per label set.
"""

from __future__ import annotations

import asyncio
import math
import os
from bisect import bisect_right
from collections import Counter as Tally
from collections.abc import Iterable
from operator import itemgetter
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from lectr.proxy.event import RequestEvent
from lectr.proxy.ring import EventRing

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ADDED_BUCKETS = (25e-6, 50e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3)
_LAG_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 500e-3)
DROP_REASONS = ("ring_full", "spool_full", "invalid")
# Events observed one at a time are applied this many at once (and at every refresh).
_OBSERVE_EVERY = 256
# One C call for the fields observed, rather than a (slow, unspecialised) NamedTuple attribute each.
_EVENT_FIELDS = itemgetter(*map(RequestEvent._fields.index, (
    "provider", "status_code", "t_start", "t_end", "overhead_s", "error_type", "error_origin")))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """This process's metrics and their registry."""

    def __init__(self, ring: EventRing, *, spool_bytes: Callable[[], int] = lambda: 0,
                 database_up: Callable[[], bool] = lambda: True, unwritten: Callable[[], int] = lambda: 0,
                 exports_state: bool = True) -> None:
        # False for a process with no ring or writer of its own (the cold process): it renders
        # the workers' state and must not add a ring, a database view or drops of its own.
        self._exports_state = exports_state
        self._ring = ring
        self._unwritten = unwritten  # events out of the ring, not yet in Postgres (the writer's batch)
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
        self.undecodable = Counter("lectr_undecodable_responses",
                                   "Responses whose content-encoding could not be undone, so no usage was read.",
                                   ["encoding"], registry=r)
        self.unmeasured = Counter("lectr_unmeasured_events",
                                  "Streams without usage recorded without a measured count, by reason.",
                                  ["reason"], registry=r)
        self.loop_lag = Histogram("lectr_event_loop_lag_seconds", "How late the event loop runs a timer.",
                                  buckets=_LAG_BUCKETS, registry=r)
        self.dropped = Counter("lectr_events_dropped", "Events lost, by reason.", ["reason"], registry=r)
        self.buffered = Gauge("lectr_events_buffered", "Events recorded and not yet written (or spooled).", registry=r,
                              multiprocess_mode="livesum")
        # The spool is one directory shared by every worker, and any worker may replay it: its
        # size is read from the disk at each scrape, not kept per worker (a worker that spooled
        # and did not replay would hold its peak for ever).
        self._spool = _SpoolCollector(spool_bytes)
        r.register(self._spool)
        # Whether Postgres takes writes, as the worker that learnt it last knows it: each worker
        # sets it only when its writer's view changes, and a scrape shows the latest one set
        # (a worker that saw the outage and has written nothing since no longer outvotes the
        # worker that replayed the spool).
        self.database = Gauge("lectr_database_up", "1 when the latest database write (by any worker) succeeded.",
                              registry=r, multiprocess_mode="livemostrecent")
        self._database_exported: bool | None = None
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        # labels() builds and locks on every call; the children are few, so keep them.
        self._request_counters: dict[tuple[str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._pending: list[tuple] = []  # the _EVENT_FIELDS of events observed since the last flush

    def observe(self, event: RequestEvent) -> None:
        """Count one finished request; exported with the next ``flush`` (at the latest, the next refresh)."""
        pending = self._pending
        pending.append(_EVENT_FIELDS(event))
        if len(pending) >= _OBSERVE_EVERY:
            self.flush()

    def flush(self) -> None:
        """Apply the requests ``observe`` has collected to the exported metrics."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._apply(pending)

    def observe_batch(self, events: Iterable[RequestEvent]) -> None:
        """Count finished requests, updating each metric once per label set rather than once per event."""
        self.flush()  # earlier events first, so every histogram's sum adds up in event order
        self._apply(list(map(_EVENT_FIELDS, events)))

    def _apply(self, observed: list[tuple]) -> None:
        requests: dict[tuple[str, int], int] = {}
        durations: dict[str, list[float]] = {}
        added: list[float] = []
        errors: dict[tuple[str, str], int] = {}
        for provider, status_code, t_start, t_end, overhead, error_type, error_origin in observed:
            try:
                key = (provider, status_code // 100)
                duration = t_end - t_start
            except Exception:  # a malformed event fails its row too, and is dropped and counted there
                continue
            requests[key] = requests.get(key, 0) + 1
            same_provider = durations.get(provider)
            if same_provider is None:
                durations[provider] = [duration]
            else:
                same_provider.append(duration)
            added.append(overhead)
            if error_type is not None and error_origin != "client":
                errors[(provider, error_type)] = errors.get((provider, error_type), 0) + 1
        for (provider, status_class), n in requests.items():
            counter = self._request_counters.get((provider, status_class))
            if counter is None:
                counter = self._request_counters[(provider, status_class)] = \
                    self.requests.labels(provider, f"{status_class}xx")
            counter.inc(n)
        for provider, amounts in durations.items():
            histogram = self._durations.get(provider)
            if histogram is None:
                histogram = self._durations[provider] = self.duration.labels(provider)
            observe_many(histogram, amounts)
        if added:
            observe_many(self.added, added)
        for (provider, error_type), n in errors.items():
            self.upstream_errors.labels(provider, error_type).inc(n)

    def refresh(self) -> None:
        """Copy the ring's and the spool's current state into the exported metrics."""
        self.flush()
        if not self._exports_state:
            return
        self.buffered.set(len(self._ring) + self._unwritten())
        up = bool(self._database_up())
        if up != self._database_exported:
            self.database.set(1 if up else 0)
            self._database_exported = up
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
        merged.register(self._spool)
        return generate_latest(merged)

    async def keep_fresh(self, interval: float = 1.0) -> None:
        """Refresh every ``interval`` seconds, so every worker's state reaches a merged scrape."""
        while True:
            self.refresh()
            await asyncio.sleep(interval)


class _SpoolCollector:
    """``lectr_spool_bytes``, read when scraped."""

    def __init__(self, spool_bytes: Callable[[], int]) -> None:
        self._spool_bytes = spool_bytes

    def collect(self):
        yield GaugeMetricFamily("lectr_spool_bytes", "Bytes of events spooled while Postgres is unavailable "
                                "(read from the spool directory at each scrape).", value=self._spool_bytes())


def observe_many(histogram: Histogram, amounts: list[float]) -> None:
    """``histogram.observe(a)`` for each amount, with one update per bucket and one of the sum."""
    # Below prometheus-client's public API (a child's _upper_bounds, _buckets and _sum), which has
    # no way to add n to a bucket. tests/unit/test_metrics.py compares the /metrics text with per-event
    # observe(), so an upgrade that changes those internals fails there, not in production.
    total = histogram._sum.get()
    for amount in amounts:
        total += amount  # one at a time, in order, so the float sum is exactly observe()'s
    if math.isnan(total):  # a NaN amount, which observe() puts in no bucket (and which would spoil the sort)
        amounts = [amount for amount in amounts if not math.isnan(amount)]
    # observe() counts an amount in the first bucket whose bound is >= it; so the amounts up to
    # each bound, found by bisecting them sorted, are that bucket's and every earlier one's.
    ordered = sorted(amounts)
    below = 0
    for bucket, bound in zip(histogram._buckets, histogram._upper_bounds):
        upto = bisect_right(ordered, bound)
        if upto > below:
            bucket.inc(upto - below)
        below = upto
    histogram._sum.set(total)


async def watch_loop_lag(histogram: Histogram, interval: float = 0.25) -> None:
    """Measure how late the loop wakes a sleeper: the time any request would wait behind work."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - expected))
