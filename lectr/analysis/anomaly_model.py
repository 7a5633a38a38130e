"""The anomaly detector's decisions, pure: hourly series in, anomalies opened, continued, resolved.

The job (every ``LECTR_ANOMALY_INTERVAL``) reads one org's hourly rollups — the org as a whole and
each feature, each a ``ScopeSeries`` — and calls ``evaluate`` for the last complete hour with the
anomalies already recorded. Nothing here reads a clock or a database, so a month can be replayed
hour by hour (``lectr/bench/anomaly_quality.py``) and gives the same answers as the live job.

Per scope and metric the test is run on windows of the last 1, 2, 4 and 8 hours (``Config.windows``
gives each window its own threshold in σ; ``anomaly_stats`` builds the baselines). Why windows:
the σ of an hour is estimated from a week of history and real incidents last hours, so a modest
deviation held for several hours is far more certain than one hour at the same level — summing
hours is what lets a 3σ-per-hour deviation be found without thousands of 2σ false alarms a week.

- An anomaly **opens** when any window deviates by at least its threshold and passes the metric's
  minimum volume; its window is the window that fired.
- It **stays open** (one anomaly, however many runs) while a short window (1 or 2 hours) still
  deviates by ``hold_sigma`` in the same direction; then it is **resolved**.
- After a resolution, a new anomaly of the same kind only counts hours after the old one's window,
  so the tail of one incident never opens a second.
- Scopes with fewer than 48 hours of data are skipped; the per-org ``latency_threshold`` needs no
  history (the last hour's p95 against ``organizations.p95_threshold_ms``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lectr.analysis import anomaly_rates as rates
from lectr.analysis import anomaly_stats as st
from lectr.analysis.anomaly_unit_cost import UnitCost

METRICS = ("requests", "cost", "error_rate", "latency_p95", "model_drift", "latency_threshold")
# Hours of series an evaluation reads back from the evaluated hour: the 7-day baseline, the
# 8-hour windows, last week's same day and its neighbours for the weekday factor and day cut.
# A caller may pass just this many (more changes nothing).
HISTORY_HOURS = 240


@dataclass(frozen=True, slots=True)
class HourStats:
    """One scope's hour: counts, cost in USD, p95 latency in ms (``None`` without requests).

    ``models`` counts requests per ``model_used``.
    """

    requests: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    latency_p95_ms: float | None = None
    models: Mapping[str, int] = field(default_factory=dict)
    # sum of each request's cost squared (USD²): with it, the cost baseline knows how unequal
    # requests' costs are; without it, it assumes they are equal (the least noise possible)
    cost_sq_usd: float | None = None


@dataclass(frozen=True, slots=True)
class ScopeSeries:
    """Consecutive hours of one scope; ``hours[k]`` is the hour ``start_hour + k``.

    Hours are counted since the Unix epoch (``int(ts.timestamp()) // 3600``); an hour without
    traffic is a ``HourStats()``, not a gap. ``feature`` is ``None`` for the org as a whole.
    """

    org_id: int
    feature: str | None
    start_hour: int
    hours: Sequence[HourStats]


@dataclass(frozen=True, slots=True)
class Config:
    # window length in hours -> threshold in σ for opening
    windows: tuple[tuple[int, float], ...] = ((1, 5.0), (2, 4.5), (4, 4.25), (8, 4.0))
    hold_windows: tuple[int, ...] = (1, 2)
    hold_sigma: float = 2.0
    min_history_hours: int = 48
    min_requests: int = 20              # requests (observed for "up", expected for "down") per window
    min_profile: float = 3.0            # hours quieter than this do not set the weekday factor
    min_errors: int = 5
    min_error_rate_increase: float = 0.005   # absolute, so a 0.1% → 0.2% move at huge volume is quiet
    error_rate_floor: float = 0.001
    latency_min_hour_requests: int = 20
    latency_min_requests: int = 50
    latency_relative_floor: float = 0.01
    drift_min_requests: int = 50
    drift_tvd: float = 0.2
    drift_new_model_share: float = 0.10
    threshold_min_requests: int = 10


@dataclass(frozen=True, slots=True)
class AnomalyKey:
    org_id: int
    feature: str | None
    metric: str
    direction: str  # "up" or "down"


@dataclass(frozen=True, slots=True)
class KnownAnomaly:
    """An anomaly already recorded; hours since the epoch, ``window_end`` exclusive."""

    key: AnomalyKey
    window_start: int
    window_end: int
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class AnomalyDecision:
    """What the detector says about one anomaly at this run.

    ``current``, ``baseline_mean`` and ``baseline_std`` are the same quantity (requests or USD per
    hour averaged over the window, an error rate, a p95 in ms, a model's share), so
    ``deviation_sigma == (current - baseline_mean) / baseline_std``; ``detail`` says which window
    and baseline they came from. A ``latency_threshold`` anomaly without a week of history has
    ``None`` baseline fields.
    """

    key: AnomalyKey
    window_start: int
    window_end: int
    current: float
    baseline_mean: float | None
    baseline_std: float | None
    deviation_sigma: float | None
    detail: dict


@dataclass(slots=True)
class Evaluation:
    opened: list[AnomalyDecision] = field(default_factory=list)
    ongoing: list[AnomalyDecision] = field(default_factory=list)
    resolved: list[AnomalyKey] = field(default_factory=list)


def _first_active(hours: Sequence[HourStats], t: int) -> int | None:
    for i in range(t + 1):
        if hours[i].requests > 0:
            return i
    return None


class _Scope:
    """One scope's columns and baselines at hour ``t``, built once per evaluation."""

    def __init__(self, series: ScopeSeries, t: int, cfg: Config) -> None:
        hours = series.hours[:t + 1]
        self.t, self.cfg = t, cfg
        requests = [float(h.requests) for h in hours]
        cost = [h.cost_usd for h in hours]
        self.requests = requests
        # The 7 days before the longest window are the baseline of every window, so no window
        # (and no incident of up to that length) is ever part of its own baseline.
        baseline_end = t - max(L for L, _ in cfg.windows) + 1
        r = range(max(0, baseline_end - st.BASELINE_HOURS), max(0, baseline_end))
        base_n, base_cost = sum(requests[r.start:r.stop]), sum(cost[r.start:r.stop])
        # A sum of per-request costs c over Poisson arrivals has variance/mean = E[c²]/E[c]:
        # exact from the sums of squares when the rollups carry them, else E[c] (a lower bound).
        base_sq = [h.cost_sq_usd for h in hours[r.start:r.stop]]
        if base_cost > 0 and base_sq and None not in base_sq:
            cost_floor = sum(base_sq) / base_cost
        else:
            cost_floor = base_cost / base_n if base_n > 0 else 0.0
        self._baselines = {
            "requests": st.SeasonalSum(requests, t, baseline_end, floor_dispersion=1.0,
                                       min_profile=cfg.min_profile),
            "cost": (st.SeasonalSum(cost, t, baseline_end, floor_dispersion=cost_floor,
                                    min_profile=cfg.min_profile * cost_floor, skewed=True)
                     if cost_floor > 0 else None),
            "error_rate": rates.ErrorRate(requests, [float(h.errors) for h in hours], t, baseline_end,
                                       min_rate=cfg.error_rate_floor),
            "latency_p95": rates.LatencyP95([h.latency_p95_ms for h in hours], requests, t, baseline_end,
                                         min_hour_requests=cfg.latency_min_hour_requests,
                                         relative_floor=cfg.latency_relative_floor),
            "model_drift": rates.ModelMix([h.models for h in hours], t, baseline_end),
        }
        self._unit_cost = UnitCost(requests, cost, [h.cost_sq_usd for h in hours], t, baseline_end)

    def deviation(self, metric: str, L: int) -> st.Deviation | None:
        baseline = self._baselines[metric]
        d = baseline.window(L) if baseline is not None else None
        if d is not None and metric == "cost":
            # minimum volume counts requests, not dollars
            d = st.Deviation(d.current, d.mean, d.std, d.sigma,
                             sum(self.requests[self.t - L + 1:self.t + 1]), d.detail, d.score)
        if metric == "cost":
            # two views of one cost: against the season (traffic free to move), and against this
            # window's own requests (traffic held fixed, so only dearer requests move it)
            u = self._unit_cost.window(L)
            if u is not None and (d is None or u.z > d.z):
                d = u
        return d

    def passes_volume(self, metric: str, direction: str, d: st.Deviation, holding: bool = False) -> bool:
        cfg = self.cfg
        if metric == "requests":
            volume = d.current * d.detail["window_hours"] if direction == "up" else d.volume
            return volume >= cfg.min_requests
        if metric == "cost":
            return d.volume >= cfg.min_requests
        if metric == "error_rate":
            return (d.volume >= cfg.min_requests and d.detail["errors"] >= cfg.min_errors
                    and d.current - d.mean >= cfg.min_error_rate_increase)
        if metric == "latency_p95":
            return d.volume >= cfg.latency_min_requests
        if metric == "model_drift":
            # an open drift holds until the mix is back within half the distance that opened it
            scale = 0.5 if holding else 1.0
            return d.volume >= cfg.drift_min_requests and (
                d.detail["tvd"] >= cfg.drift_tvd * scale
                or (d.detail["new_model"] and d.current >= cfg.drift_new_model_share * scale))
        raise ValueError(metric)


_DIRECTIONS = {"requests": ("up", "down"), "cost": ("up",), "error_rate": ("up",),
               "latency_p95": ("up",), "model_drift": ("up",)}


def _signed(d: st.Deviation, direction: str) -> float:
    return d.z if direction == "up" else -d.z


def evaluate(scopes: Iterable[ScopeSeries], at_hour: int, *, known: Iterable[KnownAnomaly] = (),
             p95_threshold_ms: float | None = None, config: Config = Config()) -> Evaluation:
    """Decide, for the complete hour ``at_hour`` (hours since the epoch), what opens, holds, resolves.

    ``known`` holds the org's open anomalies and recently resolved ones (resolved within the
    longest window is enough). Returns an ``Evaluation``; a known open anomaly that is neither
    ongoing nor resolved belongs to a scope that could not be evaluated (too little data).
    """
    out = Evaluation()
    open_by_key: dict[AnomalyKey, KnownAnomaly] = {}
    not_before: dict[AnomalyKey, int] = {}
    for k in known:
        if k.resolved:
            not_before[k.key] = max(not_before.get(k.key, k.window_end), k.window_end)
        else:
            open_by_key[k.key] = k
    for series in scopes:
        t = at_hour - series.start_hour
        if t < 0 or t >= len(series.hours):
            continue
        first = _first_active(series.hours, t)
        enough = first is not None and t - first + 1 >= config.min_history_hours
        if not enough and (series.feature is not None or p95_threshold_ms is None):
            continue
        scope = _Scope(series, t, config)
        if series.feature is None and p95_threshold_ms is not None:
            _threshold(series, scope, t, p95_threshold_ms, open_by_key, out)
        if not enough:
            continue
        for metric, directions in _DIRECTIONS.items():
            devs = {L: scope.deviation(metric, L) for L, _ in config.windows if L <= t + 1}
            for direction in directions:
                key = AnomalyKey(series.org_id, series.feature, metric, direction)
                _decide(key, scope, devs, series.start_hour, t, open_by_key.get(key),
                        not_before.get(key), out)
    return out


def _decide(key: AnomalyKey, scope: _Scope, devs: Mapping[int, st.Deviation | None], start_hour: int,
            t: int, existing: KnownAnomaly | None, not_before: int | None, out: Evaluation) -> None:
    cfg, metric, direction = scope.cfg, key.metric, key.direction

    def qualifies(d: st.Deviation | None, threshold: float, holding: bool = False) -> bool:
        return (d is not None and _signed(d, direction) >= threshold
                and scope.passes_volume(metric, direction, d, holding))

    if existing is not None:
        holding = [devs.get(L) for L in cfg.hold_windows
                   if qualifies(devs.get(L), cfg.hold_sigma, holding=True)]
        if not holding:
            out.resolved.append(key)
            return
        d = max(holding, key=lambda d: _signed(d, direction))
        out.ongoing.append(_decision(key, existing.window_start, start_hour + t + 1, d))
        return
    firing = []
    for L, threshold in cfg.windows:
        window_start = start_hour + t - L + 1
        if not_before is not None and window_start < not_before:
            continue
        d = devs.get(L)
        if qualifies(d, threshold):
            firing.append((L, d))
    if firing:
        L, d = max(firing, key=lambda ld: _signed(ld[1], direction))
        out.opened.append(_decision(key, start_hour + t - L + 1, start_hour + t + 1, d))


def _decision(key: AnomalyKey, start: int, end: int, d: st.Deviation) -> AnomalyDecision:
    return AnomalyDecision(key=key, window_start=start, window_end=end, current=d.current,
                           baseline_mean=d.mean, baseline_std=d.std, deviation_sigma=d.sigma,
                           detail=d.detail)


def _threshold(series: ScopeSeries, scope: _Scope, t: int, threshold_ms: float,
               open_by_key: Mapping[AnomalyKey, KnownAnomaly], out: Evaluation) -> None:
    key = AnomalyKey(series.org_id, None, "latency_threshold", "up")
    hour = series.hours[t]
    if hour.latency_p95_ms is None or hour.requests < scope.cfg.threshold_min_requests:
        return  # too little traffic to say either way: an open one stays open
    existing = open_by_key.get(key)
    if hour.latency_p95_ms < threshold_ms:
        if existing is not None:
            out.resolved.append(key)
        return
    base = scope.deviation("latency_p95", 1)
    detail = {"threshold_ms": threshold_ms, "window_hours": 1}
    if base is not None:
        detail["baseline"] = base.detail["baseline"]
    decision = AnomalyDecision(
        key=key, window_start=existing.window_start if existing else series.start_hour + t,
        window_end=series.start_hour + t + 1, current=hour.latency_p95_ms,
        baseline_mean=base.mean if base else None, baseline_std=base.std if base else None,
        deviation_sigma=base.sigma if base else None, detail=detail)
    (out.ongoing if existing else out.opened).append(decision)
