"""A synthetic, seeded month of hourly traffic with injected anomalies of known size: the ground truth
the anomaly detector is measured against (``lectr/bench/anomaly_quality.py``, ``tests``).

Each org has a local time zone, a daily shape (quiet nights, a busy afternoon), quieter weekends
and a few features, each with its own share of traffic, error rate, lognormal latency, model mix
and per-request cost. Every hour of every feature is drawn: requests ~ Poisson(λ), errors ~
Binomial, models ~ multinomial, cost = a sum of lognormal per-request costs, and every request's
latency goes into the hour's fixed-bucket histogram (``histogram``), from which the p95 is read (values
spread within their bucket, as the detector should be fed). The org scope is the sum of its features (histograms merged).

Injections (``Injection``) start after the first week, on busy hours, one at a time per org, and
have a size in σ of that hour's own noise — what "a 3σ deviation" means here:

- ``traffic_spike`` / ``traffic_drop``: λ ± k·√λ each hour;
- ``cost_spike``: mean cost per request × (1 + k·√(1 + cv²) / √λ) — k σ of the hour's cost;
- ``error_spike``: error probability + k·√(p(1 − p) / λ);
- ``latency``: every latency × exp(k · s · 2.11 / √λ) — the sampling σ of a lognormal(s) p95;
- ``model_drift``: a model the feature never used takes a share of 20–45% for one to three days,
  cut short where the org's next injection begins (its size in σ is the binomial σ of that share
  at the hour's volume, always far above 3).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from lectr.analysis import histogram as hg
from lectr.analysis.anomaly_model import HourStats, ScopeSeries

KINDS = ("traffic_spike", "traffic_drop", "cost_spike", "error_spike", "latency", "model_drift")
# the detector metric (and direction) each kind is meant to be found by, and what else it moves
_PRIMARY = {"traffic_spike": ("requests", "up"), "traffic_drop": ("requests", "down"),
            "cost_spike": ("cost", "up"), "error_spike": ("error_rate", "up"),
            "latency": ("latency_p95", "up"), "model_drift": ("model_drift", "up")}
_ALSO = {"traffic_spike": ("cost",), "traffic_drop": ("cost", "error_rate"), "cost_spike": (),
         "error_spike": (), "latency": (), "model_drift": ("cost",)}
_Z95_SAMPLING = math.sqrt(0.95 * 0.05) / 0.10314  # sd of a sample p95 in σ_log units × √n
_MODEL_FAMILIES = (("gpt-4.1", "gpt-4.1-mini"), ("claude-sonnet-4", "claude-haiku-4"),
                   ("gpt-4o", "gpt-4o-mini"), ("gemini-2.5-pro", "gemini-2.5-flash"))


@dataclass(frozen=True, slots=True)
class Injection:
    """Ground truth: hours ``[start_hour, end_hour)`` since the epoch, size in σ of hourly noise."""

    org_id: int
    feature: str
    kind: str
    metric: str
    direction: str
    start_hour: int
    end_hour: int
    size_sigma: float
    also: tuple[str, ...] = ()


@dataclass(slots=True)
class Trace:
    start_hour: int
    hours: int
    org_ids: list[int]
    series: dict[tuple[int, str | None], ScopeSeries] = field(default_factory=dict)
    injections: list[Injection] = field(default_factory=list)

    def scopes(self, org_id: int) -> list[ScopeSeries]:
        return [s for (o, _), s in self.series.items() if o == org_id]


@dataclass(slots=True)
class _Feature:
    name: str
    share: float
    error_p: float
    latency_mu: float
    latency_s: float
    models: dict[str, float]
    cost_mu: float  # mean USD per request
    cost_cv: float


@dataclass(slots=True)
class _Org:
    org_id: int
    peak: float  # requests per hour at the busiest weekday hour
    tz: int
    night: float
    weekend: float
    features: list[_Feature]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam < 40:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0:
        return 0
    if n < 60:
        return sum(rng.random() < p for _ in range(n))
    return _poisson(rng, n * p) if p < 0.05 else min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))


def _profile(org: _Org, hour: int) -> float:
    """Share of the weekday peak at an absolute hour: night floor, afternoon bump, quiet weekends."""
    local = hour + org.tz
    h, day = local % 24, (local // 24 + 3) % 7  # epoch day 0 was a Thursday; 5, 6 = Sat, Sun
    bump = math.exp(-((h - 14.0) / 4.5) ** 2)
    level = org.night + (1.0 - org.night) * bump
    return level * (org.weekend if day >= 5 else 1.0)


def _drift_share(start_hour: int) -> float:
    return 0.2 + 0.25 * ((start_hour * 7919) % 100) / 100


def _orgs(rng: random.Random, n_orgs: int, peaks: tuple[float, ...]) -> list[_Org]:
    orgs = []
    for i in range(n_orgs):
        n_features = rng.randint(2, 4)
        raw = [rng.uniform(0.5, 2.0) for _ in range(n_features)]
        features = []
        for j, r in enumerate(raw):
            big, small = _MODEL_FAMILIES[(i + j) % len(_MODEL_FAMILIES)]
            main = rng.uniform(0.6, 1.0)
            models = {big: main, small: 1.0 - main} if main < 0.97 else {big: 1.0}
            features.append(_Feature(
                name=f"feature-{j}", share=r / sum(raw), error_p=rng.uniform(0.005, 0.03),
                latency_mu=math.log(rng.uniform(300, 2500)), latency_s=rng.uniform(0.35, 0.7),
                models=models, cost_mu=rng.uniform(0.0005, 0.02), cost_cv=rng.uniform(0.3, 1.0)))
        orgs.append(_Org(org_id=i + 1, peak=peaks[i % len(peaks)] * rng.uniform(0.8, 1.2),
                         tz=rng.randint(0, 23), night=rng.uniform(0.08, 0.3),
                         weekend=rng.uniform(0.35, 0.8), features=features))
    return orgs


def _plan(rng: random.Random, org: _Org, start_hour: int, hours: int, per_org: int,
          sizes: tuple[float, ...], durations: tuple[int, ...], kinds: tuple[str, ...]) -> list[Injection]:
    """Non-overlapping injections after the first week, each on a feature busy enough to see it.

    Each starts in the first hours of its own slot. One that would run into the next (a 1–3-day
    model drift) or past the trace ends where the next starts, or with the trace: ``_hour`` applies
    one injection per feature-hour, so the later one would be partly or wholly missing from the
    data while it still counted as ground truth.
    """
    planned: list[tuple[int, int, _Feature, str, float]] = []
    first, last = 8 * 24, hours - 14
    slot = (last - first) // per_org
    for n in range(per_org):
        kind = kinds[(n + org.org_id) % len(kinds)]
        for _ in range(200):
            lo = first + n * slot
            at = rng.randint(lo, lo + slot - 40)
            f = rng.choice(org.features)
            lam = org.peak * f.share * _profile(org, start_hour + at)
            if lam >= 25:
                break
        else:
            continue
        duration = rng.randint(24, 72) if kind == "model_drift" else rng.choice(durations)
        size = rng.choice(sizes)
        if kind == "model_drift":
            share = _drift_share(start_hour + at)
            size = round(math.sqrt(lam * share / (1 - share)), 1)  # the share over its binomial σ
        planned.append((at, duration, f, kind, size))
    out: list[Injection] = []
    for i, (at, duration, f, kind, size) in enumerate(planned):
        # the next starts in a later slot, ≥ 40 hours on: a drift cut short still lasts over a day
        end = min(at + duration, planned[i + 1][0] if i + 1 < len(planned) else hours)
        metric, direction = _PRIMARY[kind]
        out.append(Injection(org.org_id, f.name, kind, metric, direction, start_hour + at, start_hour + end,
                             size, _ALSO[kind]))
    return out


def generate(seed: int, *, days: int = 30, n_orgs: int = 5, injections_per_org: int = 9,
             peaks: tuple[float, ...] = (1500.0, 600.0, 250.0, 120.0, 70.0),
             sizes: tuple[float, ...] = (3.0, 4.0, 6.0), durations: tuple[int, ...] = (4, 6, 8, 12),
             start_hour: int = 490_000, kinds: tuple[str, ...] = KINDS) -> Trace:
    """A deterministic trace: same arguments, same numbers. ``start_hour`` is hours since the epoch.

    Each org's injections take their kinds from ``kinds`` in turn.
    """
    if not set(kinds) <= set(KINDS):
        raise ValueError(f"unknown kinds {sorted(set(kinds) - set(KINDS))}")
    rng = random.Random(seed)
    hours = days * 24
    orgs = _orgs(rng, n_orgs, peaks)
    trace = Trace(start_hour=start_hour, hours=hours, org_ids=[o.org_id for o in orgs])
    for org in orgs:
        plan = _plan(rng, org, start_hour, hours, injections_per_org, sizes, durations, kinds)
        trace.injections.extend(plan)
        org_hours: list[list] = [[0, 0, 0.0, hg.empty(), {}, 0.0] for _ in range(hours)]
        for f in org.features:
            mine = [inj for inj in plan if inj.feature == f.name]
            points = []
            for k in range(hours):
                hour = start_hour + k
                active = next((i for i in mine if i.start_hour <= hour < i.end_hour), None)
                points.append(_hour(rng, org, f, hour, active, org_hours[k]))
            trace.series[(org.org_id, f.name)] = ScopeSeries(org.org_id, f.name, start_hour, points)
        trace.series[(org.org_id, None)] = ScopeSeries(org.org_id, None, start_hour, [
            HourStats(requests=r, errors=e, cost_usd=c, latency_p95_ms=hg.quantile(h, 0.95, spread=True), models=m,
                      cost_sq_usd=sq)
            for r, e, c, h, m, sq in org_hours])
    return trace


def _hour(rng: random.Random, org: _Org, f: _Feature, hour: int, inj: Injection | None,
          org_hour: list) -> HourStats:
    lam = org.peak * f.share * _profile(org, hour)
    error_p, cost_mu, latency_mu, models = f.error_p, f.cost_mu, f.latency_mu, f.models
    if inj is not None:
        k = inj.size_sigma
        if inj.kind == "traffic_spike":
            lam += k * math.sqrt(lam)
        elif inj.kind == "traffic_drop":
            lam = max(0.0, lam - k * math.sqrt(lam))
        elif inj.kind == "cost_spike":
            cost_mu *= 1.0 + k * math.sqrt(1.0 + f.cost_cv ** 2) / math.sqrt(max(lam, 1.0))
        elif inj.kind == "error_spike":
            error_p = min(1.0, error_p + k * math.sqrt(error_p * (1 - error_p) / max(lam, 1.0)))
        elif inj.kind == "latency":
            latency_mu += k * f.latency_s * _Z95_SAMPLING / math.sqrt(max(lam, 1.0))
        elif inj.kind == "model_drift":
            share = _drift_share(inj.start_hour)
            models = {m: s * (1 - share) for m, s in models.items()}
            models["drift-model-x"] = share
    n = _poisson(rng, lam)
    errors = _binomial(rng, n, error_p)
    counts: dict[str, int] = {}
    left, share_left = n, 1.0
    names = list(models)
    for i, m in enumerate(names):
        c = left if i == len(names) - 1 else _binomial(rng, left, min(1.0, models[m] / share_left))
        share_left -= models[m]
        left -= c
        if c:
            counts[m] = c
    # a sum of n lognormal costs: exact when few, its normal limit when many
    sd_log = math.sqrt(math.log(1 + f.cost_cv ** 2))
    mu_log = math.log(cost_mu) - sd_log ** 2 / 2
    if n < 30:
        costs = [rng.lognormvariate(mu_log, sd_log) for _ in range(n)]
        cost, cost_sq = sum(costs), sum(c * c for c in costs)
    else:
        cost = max(0.0, rng.gauss(n * cost_mu, math.sqrt(n) * cost_mu * math.sqrt(1 + f.cost_cv ** 2)))
        cost_sq = n * cost_mu ** 2 * (1 + f.cost_cv ** 2)
    hist = hg.empty()
    for _ in range(n):
        hist[hg.bucket_index(rng.lognormvariate(latency_mu, f.latency_s))] += 1
    org_hour[0] += n
    org_hour[1] += errors
    org_hour[2] += cost
    org_hour[5] += cost_sq
    org_hour[3] = hg.merge(org_hour[3], hist)
    for m, c in counts.items():
        org_hour[4][m] = org_hour[4].get(m, 0) + c
    return HourStats(requests=n, errors=errors, cost_usd=cost, latency_p95_ms=hg.quantile(hist, 0.95, spread=True),
                     models=counts, cost_sq_usd=cost_sq)
