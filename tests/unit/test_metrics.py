"""Request metrics counted in batches export exactly what counting each request on its own did.

``Metrics`` updates histogram buckets and sums below prometheus-client's public API; these tests
compare the /metrics text with per-event ``observe`` calls, so a client upgrade that changes
those internals fails here rather than exporting wrong numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

from prometheus_client import generate_latest

from lectr.proxy.event import RequestEvent
from lectr.proxy.ring import EventRing
from lectr.platform.metrics import Metrics


def event(provider: str = "openai", status: int = 200, duration: float = 0.2, overhead: float = 80e-6,
          error_type: str | None = None, error_origin: str | None = None) -> RequestEvent:
    return RequestEvent(1, 1.7e9, provider, "m", "m", "untagged", None, status, error_type, error_origin, False,
                        100.0, 100.0 + duration / 2, 100.0 + duration, overhead, False, None, 10, 20,
                        "application/json", None, [b"{}"])


def mixed_events() -> list[RequestEvent]:
    """Several providers and status classes, errors of every origin, and amounts on, between and past the
    bucket bounds (a sum of many floats also shows whether they were added in the same order)."""
    events = []
    durations = [0.005, 0.0050001, 0.01, 0.3, 1 / 3, 2.5, 299.99, 300, 1000.0, 0.0, -0.001, 0.1 + 0.2]
    overheads = [25e-6, 24e-6, 1e-3, 0.05, 0.07, 0.0, 1 / 7]
    for i in range(600):
        provider = ("openai", "anthropic", "groq")[i % 3 if i % 5 else 0]
        status = (200, 200, 201, 400, 429, 500, 503)[i % 7]
        error = (None, "timeout", "connect")[i % 3] if status >= 400 else None
        origin = ("provider", "lectr", "client")[i % 4 % 3] if error else None
        events.append(event(provider, status, durations[i % len(durations)] * (1 + i / 1e4),
                            overheads[i % len(overheads)], error, origin))
    return events


def observe_one_by_one(metrics: Metrics, e: RequestEvent) -> None:
    """What ``Metrics.observe`` did before it counted in batches, through the public API only."""
    metrics.requests.labels(e.provider, f"{e.status_code // 100}xx").inc()
    metrics.duration.labels(e.provider).observe(e.t_end - e.t_start)
    metrics.added.observe(e.overhead_s)
    if e.error_type is not None and e.error_origin != "client":
        metrics.upstream_errors.labels(e.provider, e.error_type).inc()


def text(metrics: Metrics) -> str:
    metrics.flush()
    # _created is the time a child was made, which two registries never share.
    return "\n".join(line for line in generate_latest(metrics.registry).decode().splitlines()
                     if "_created" not in line)


def test_a_batch_exports_what_observing_each_event_did():
    batched, reference = Metrics(EventRing(1)), Metrics(EventRing(1))
    events = mixed_events()
    batched.observe_batch(events[:250])
    batched.observe_batch(events[250:])
    for e in events:
        observe_one_by_one(reference, e)
    assert text(batched) == text(reference)
    assert 'lectr_request_duration_seconds_bucket{le="+Inf",provider="openai"}' in text(batched)
    assert 'lectr_upstream_errors_total{error_type="timeout",provider="openai"}' in text(batched)


def test_observe_collects_and_a_refresh_or_flush_exports():
    batched, reference = Metrics(EventRing(1)), Metrics(EventRing(1))
    events = mixed_events()
    for e in events[:300]:  # past one automatic flush, and some left over
        batched.observe(e)
        observe_one_by_one(reference, e)
    batched.refresh()
    reference.refresh()
    assert text(batched) == text(reference)
    for e in events[300:]:
        batched.observe(e)
        observe_one_by_one(reference, e)
    batched.observe_batch(events[:10])  # earlier observe() calls are applied first
    for e in events[:10]:
        observe_one_by_one(reference, e)
    assert text(batched) == text(reference)


def test_nan_and_infinite_amounts_land_where_observe_puts_them():
    batched, reference = Metrics(EventRing(1)), Metrics(EventRing(1))
    events = [event(duration=math.inf), event(duration=0.2), event(overhead=math.nan), event(overhead=1e-3),
              event(duration=math.nan)]
    batched.observe_batch(events)
    for e in events:
        observe_one_by_one(reference, e)
    assert text(batched) == text(reference)


def test_a_malformed_event_is_skipped_not_fatal():
    metrics = Metrics(EventRing(1))
    metrics.observe_batch([event()._replace(status_code=None), event()])
    assert metrics.registry.get_sample_value("lectr_requests_total", {"provider": "openai",
                                                                      "status_class": "2xx"}) == 1


_MULTIPROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    from tests.unit.test_metrics import mixed_events, observe_one_by_one
    from lectr.proxy.ring import EventRing
    from lectr.platform.metrics import Metrics

    metrics = Metrics(EventRing(1))
    events = mixed_events()
    if sys.argv[1] == "batched":
        metrics.observe_batch(events[:400])
        for e in events[400:]:
            metrics.observe(e)
    else:
        for e in events:
            observe_one_by_one(metrics, e)
    print(json.dumps(metrics.render().decode()))
""")


def _render_in_a_process(tmp_path, way: str) -> str:
    directory = tmp_path / way
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", _MULTIPROCESS_SCRIPT, way], env=env, capture_output=True,
                          text=True, timeout=60, check=True, cwd=root)
    return json.loads(done.stdout)


def test_multiprocess_mode_exports_the_same(tmp_path):
    batched = _render_in_a_process(tmp_path, "batched")
    assert "lectr_request_duration_seconds_sum" in batched
    # The merging collector orders metrics as it finds them in the files; the lines are what count.
    assert sorted(batched.splitlines()) == sorted(_render_in_a_process(tmp_path, "one_by_one").splitlines())
