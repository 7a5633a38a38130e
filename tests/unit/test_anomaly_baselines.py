"""Baselines that decide recall: cost held against its own requests, a weekday factor pooled over
days of the same kind. Each miss kind is checked over several seeds (a detector finds a 3-4σ
deviation most of the time, not always), each false-alarm kind stays quiet."""

import math
import random

from lectr.analysis import anomaly_stats as st
from lectr.analysis.anomaly_model import HourStats, ScopeSeries, evaluate
from lectr.analysis.anomaly_unit_cost import UnitCost, dispersion_lower_bound
from tests.unit.test_anomaly_model import START, level, poisson, replay


def costed(days, *, seed, peak=150.0, weekend=0.5, cost_mu=0.01, cv=0.6, edit=None):
    """Poisson requests, each with a lognormal cost; the rollups' Σcost and Σcost² per hour.

    ``edit(k, lam)`` returns ``(lam, cost per request)`` for hour k.
    """
    rng = random.Random(seed)
    sd_log = math.sqrt(math.log(1 + cv * cv))
    hours = []
    for k in range(days * 24):
        lam, mu = level(k, peak, weekend), cost_mu
        if edit:
            lam, mu = edit(k, lam, mu)
        n = poisson(rng, lam)
        costs = [rng.lognormvariate(math.log(mu) - sd_log ** 2 / 2, sd_log) for _ in range(n)]
        hours.append(HourStats(requests=n, errors=0, cost_usd=sum(costs), latency_p95_ms=800.0 if n else None,
                               models={"m": n} if n else {}, cost_sq_usd=sum(c * c for c in costs)))
    return ScopeSeries(1, None, START, hours)


def _found(opened, metric, direction, hours):
    return any(d.key.metric == metric and d.key.direction == direction
               and START + hours.start < d.window_end <= START + hours.stop + 1 for d in opened)


def test_dearer_requests_are_found_through_traffic_noise():
    # 3.5σ per hour of the hour's cost (compound-Poisson σ), four afternoon hours: the requests
    # as usual, each one dearer. Against the season alone the traffic's own noise hides it.
    dear = range(9 * 24 + 12, 9 * 24 + 16)

    def edit(k, lam, mu):
        return lam, (mu * (1 + 3.5 * math.sqrt(1 + 0.6 ** 2) / math.sqrt(lam)) if k in dear else mu)

    found = 0
    for seed in range(10):
        s = costed(10, seed=seed, edit=edit)
        opened, _, _ = replay([s], dear.start, dear.stop)
        found += _found(opened, "cost", "up", dear)
        cost = [d for d in opened if d.key.metric == "cost"]
        assert all(d.deviation_sigma == (d.current - d.baseline_mean) / d.baseline_std for d in cost)
    assert found >= 9, found


def test_cost_per_request_is_quiet_when_only_traffic_moves():
    # half as many requests again for six hours, each at its usual price: the traffic is the
    # anomaly; the cost-per-request view sees nothing
    busy = range(9 * 24 + 11, 9 * 24 + 17)
    s = costed(10, seed=3, edit=lambda k, lam, mu: (lam * 1.5 if k in busy else lam, mu))
    x = s.hours
    t = busy.stop - 1
    u = UnitCost([float(h.requests) for h in x], [h.cost_usd for h in x], [h.cost_sq_usd for h in x],
                 t, t - 7)
    for L in (1, 2, 4, 8):
        d = u.window(L)
        assert abs(d.z) < 3.0, (L, d)
        assert d.detail["baseline"].startswith("the window's requests")
    opened, _, _ = replay([s], busy.start, busy.stop + 2)
    assert _found(opened, "requests", "up", busy)


def test_unit_cost_needs_the_sums_of_squares():
    # without Σcost² nothing says how unequal request costs are: the seasonal test alone decides
    hours = [HourStats(requests=10, cost_usd=0.1) for _ in range(24 * 9)]
    u = UnitCost([10.0] * len(hours), [0.1] * len(hours), [None] * len(hours), len(hours) - 1, len(hours) - 8)
    assert u.window(4) is None


def test_a_noisy_spread_estimate_does_not_widen_sigma():
    rng = random.Random(4)
    poisson_like = [rng.gauss(0, 1) for _ in range(24)]
    assert dispersion_lower_bound(poisson_like) == 1.0  # MAD² of 24 normals is often 1.3: not evidence
    assert dispersion_lower_bound([rng.gauss(0, 3) for _ in range(168)]) > 3.0  # real overdispersion is


def test_a_three_sigma_drop_over_four_hours_is_found():
    # 3.5σ per hour below normal for four weekday-afternoon hours: the weekday factor learnt from
    # last week's weekdays together (not one day) leaves σ close to the hours' own noise
    drop = range(9 * 24 + 12, 9 * 24 + 16)

    def edit(k, lam, kw):
        return lam - 3.5 * math.sqrt(lam) if k in drop else lam

    from tests.unit.test_anomaly_model import series

    found = 0
    for seed in range(10):
        s = series(10, peak=300.0, weekend=0.5, seed=100 + seed, edit=edit)
        opened, _, _ = replay([s], drop.start, drop.stop)
        found += _found(opened, "requests", "down", drop)
    assert found >= 9, found


def test_weekday_factor_pools_days_of_the_same_kind():
    from tests.unit.test_anomaly_model import series

    s = series(16, weekend=0.4, seed=21)
    x = [float(h.requests) for h in s.hours]
    wednesday = 14 * 24 + 14  # day 14: (14 % 7) == 0, a weekday in this calendar
    b = st.SeasonalSum(x[:wednesday + 1], wednesday, wednesday - 7, floor_dispersion=1.0, min_profile=3.0)
    w, rel_var, pooled, known = b.factor(b.day_of(wednesday))
    day_total = sum(x[wednesday - 14 - 168 + i] for i in range(24))
    # the weekdays pooled, not last week's one: the factor's variance is about a fifth
    assert known and rel_var < 0.4 / day_total
    assert len(pooled) >= 4 and all(start % 24 == pooled[0][0] % 24 for start, _ in pooled)
    assert all((start // 24) % 7 < 5 for start, _ in pooled)  # no weekend day among them


def test_last_weeks_incident_on_the_same_day_raises_nothing_today():
    # a twelve-hour outage to 30% last Tuesday afternoon: this Tuesday's ordinary afternoon is
    # not a surge (the outage's hours are trimmed from last week's level)
    from tests.unit.test_anomaly_model import series

    outage = range(8 * 24 + 12, 9 * 24)
    s = series(16, weekend=0.5, seed=31, edit=lambda k, lam, kw: lam * 0.3 if k in outage else lam)
    opened, _, _ = replay([s], 15 * 24 + 8, 15 * 24 + 23)
    assert [d for d in opened if d.key.metric == "requests"] == []


def test_evaluate_still_reads_only_its_history():
    # the pooled factor reads the 7 days before the baseline's end, never the window
    s = costed(12, seed=5)
    at = START + 11 * 24 + 15
    before = evaluate([s], at)
    later = ScopeSeries(1, None, START, list(s.hours[:11 * 24 + 16]) + [HourStats(requests=10_000)] * 5)
    assert evaluate([later], at) == before
