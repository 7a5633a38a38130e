"""The synthetic trace generator: deterministic, consistent, injections where and as big as it says."""

import math

import pytest

from lectr.analysis import tracegen
from lectr.analysis.tracegen import KINDS, generate

SMALL = dict(days=16, n_orgs=2, injections_per_org=2, peaks=(300.0, 120.0))


@pytest.fixture(scope="module")
def trace():
    return generate(5, **SMALL)


def test_same_seed_same_trace_other_seed_other_trace(trace):
    again = generate(5, **SMALL)
    assert again.injections == trace.injections
    assert all(again.series[k].hours == trace.series[k].hours for k in trace.series)
    other = generate(6, **SMALL)
    assert other.series[(1, None)].hours != trace.series[(1, None)].hours


def test_shape_and_org_scope_is_the_sum_of_features(trace):
    assert trace.hours == 16 * 24 and trace.org_ids == [1, 2]
    for org in trace.org_ids:
        scopes = trace.scopes(org)
        org_scope = trace.series[(org, None)]
        features = [s for s in scopes if s.feature is not None]
        assert 2 <= len(features) <= 4
        for k in range(trace.hours):
            hours = [f.hours[k] for f in features]
            total = org_scope.hours[k]
            assert total.requests == sum(h.requests for h in hours)
            assert total.errors == sum(h.errors for h in hours)
            assert total.cost_usd == pytest.approx(sum(h.cost_usd for h in hours))
            models = {}
            for h in hours:
                for m, c in h.models.items():
                    models[m] = models.get(m, 0) + c
            assert total.models == models and sum(models.values()) == total.requests
            assert (total.latency_p95_ms is None) == (total.requests == 0)


def test_daily_and_weekly_cycles(trace):
    s = trace.series[(1, None)]
    by_hour = [sum(s.hours[k].requests for k in range(h, trace.hours, 24)) for h in range(24)]
    assert max(by_hour) > 2.5 * min(by_hour)  # busy afternoons, quiet nights
    days = [sum(h.requests for h in s.hours[d * 24:(d + 1) * 24]) for d in range(16)]
    assert max(days) > 1.2 * sorted(days)[3]  # the quiet (weekend) days stand out


def test_injections_start_after_a_week_and_do_not_overlap(trace):
    assert trace.injections
    for org in trace.org_ids:
        mine = sorted((i for i in trace.injections if i.org_id == org), key=lambda i: i.start_hour)
        for a, b in zip(mine, mine[1:], strict=False):
            assert a.end_hour <= b.start_hour
    for i in trace.injections:
        assert i.kind in KINDS and i.start_hour - trace.start_hour >= 8 * 24
        assert i.end_hour <= trace.start_hour + trace.hours
        assert i.feature in {s.feature for s in trace.scopes(i.org_id)}
        assert i.size_sigma >= 3 or i.kind == "model_drift"


@pytest.mark.parametrize("seed, config", [
    (3, {}), (101, {}), (555, {}), (4242, {}), (2026, {}),  # the benchmark's own traces
    (7, dict(days=20, n_orgs=3, injections_per_org=4, durations=(48,))),  # long windows of every kind
])
def test_every_reported_injection_is_applied_in_full(seed, config, monkeypatch):
    # The ground truth is what the data holds: every hour of every injection's window was drawn
    # with that injection, on its feature, inside the trace — a 1–3-day model drift must not run
    # into the next injection (which one hour can carry only one of) nor past the trace's end.
    applied = {}
    draw = tracegen._hour

    def spy(rng, org, f, hour, inj, org_hour):
        applied[(org.org_id, f.name, hour)] = inj
        return draw(rng, org, f, hour, inj, org_hour)

    monkeypatch.setattr(tracegen, "_hour", spy)
    trace = generate(seed, **config)
    assert len(trace.injections) >= 4 * len(trace.org_ids)
    for org in trace.org_ids:
        mine = sorted((i for i in trace.injections if i.org_id == org), key=lambda i: i.start_hour)
        for a, b in zip(mine, mine[1:], strict=False):
            assert a.end_hour <= b.start_hour, (a, b)
    for inj in trace.injections:
        assert trace.start_hour + 8 * 24 <= inj.start_hour < inj.end_hour <= trace.start_hour + trace.hours
        hours = range(inj.start_hour, inj.end_hour)
        assert [applied[(inj.org_id, inj.feature, h)] for h in hours] == [inj] * len(hours), inj
    applied_hours = sum(i is not None for i in applied.values())
    assert applied_hours == sum(i.end_hour - i.start_hour for i in trace.injections)
    # and where it can be seen directly: the new model is there in every drift, and only there
    for (org, feature), s in trace.series.items():
        drifts = [i for i in trace.injections if (i.org_id, i.feature, i.kind) == (org, feature, "model_drift")]
        for k, h in enumerate(s.hours):
            if "drift-model-x" in h.models and feature is not None:
                assert any(i.start_hour <= s.start_hour + k < i.end_hour for i in drifts)
        for i in drifts:
            window = s.hours[i.start_hour - s.start_hour:i.end_hour - s.start_hour]
            assert sum(h.models.get("drift-model-x", 0) for h in window) >= 0.1 * sum(h.requests for h in window)


@pytest.mark.parametrize("kind", ["traffic_spike", "traffic_drop", "error_spike", "cost_spike"])
def test_injected_size_shows_in_the_data(kind):
    # six sigma per hour: the injected hours differ from the same hours a week before
    trace = generate(11, days=20, n_orgs=1, injections_per_org=2, peaks=(800.0,), sizes=(6.0,),
                     kinds=(kind,))
    inj = trace.injections[0]
    assert inj.kind == kind and inj.size_sigma == 6.0
    s = trace.series[(inj.org_id, inj.feature)]
    now = [s.hours[h - s.start_hour] for h in range(inj.start_hour, inj.end_hour)]
    before = [s.hours[h - s.start_hour - 168] for h in range(inj.start_hour, inj.end_hour)]
    n_now, n_before = sum(h.requests for h in now), sum(h.requests for h in before)
    if kind == "traffic_spike":
        assert n_now > n_before + 3 * math.sqrt(n_before)
    elif kind == "traffic_drop":
        assert n_now < n_before - 3 * math.sqrt(n_before)
    elif kind == "error_spike":
        assert sum(h.errors for h in now) / n_now > 1.5 * sum(h.errors for h in before) / n_before
    else:
        assert sum(h.cost_usd for h in now) / n_now > 1.1 * sum(h.cost_usd for h in before) / n_before


def test_model_drift_brings_a_new_model():
    trace = generate(12, days=20, n_orgs=1, injections_per_org=1, peaks=(800.0,), kinds=("model_drift",))
    inj = trace.injections[0]
    assert inj.kind == "model_drift" and inj.end_hour - inj.start_hour >= 24
    s = trace.series[(inj.org_id, inj.feature)]
    during = s.hours[inj.start_hour - s.start_hour + 2]
    before = s.hours[inj.start_hour - s.start_hour - 24]
    assert "drift-model-x" in during.models and "drift-model-x" not in before.models


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kinds"):
        generate(1, kinds=("meteor",))


def test_replayed_trace_finds_six_sigma_injections():
    # the benchmark's own replay and matching, on a small trace of large injections
    from lectr.bench.anomaly_quality import _finds, replay

    trace = generate(21, days=16, n_orgs=2, injections_per_org=2, peaks=(600.0, 300.0), sizes=(6.0,),
                     durations=(6,), kinds=("traffic_spike", "error_spike", "latency", "traffic_drop"))
    opened = replay(trace)
    assert trace.injections
    for inj in trace.injections:
        assert any(_finds(d, inj) for d in opened), inj
