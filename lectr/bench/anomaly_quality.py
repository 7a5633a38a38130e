"""Anomaly detector quality on synthetic traces: recall of injected deviations, false alarms per org-week.

Each seed's trace (``lectr.analysis.tracegen``: 30 days, 5 orgs, daily and weekly cycles, Poisson,
binomial and lognormal noise, injections of 3σ, 4σ and 6σ per hour) is replayed hour by hour
through ``lectr.analysis.anomaly_model.evaluate``, as the 5-minute job would see it, carrying the
open and resolved anomalies from one hour to the next. Pure CPU, no database; one core.

    python -m lectr.bench.anomaly_quality                 # tuning seeds 1-3, held out 2026, 77, 4242
    python -m lectr.bench.anomaly_quality --seeds 4 5 --holdout 101 555

Scoring:

- found: an anomaly of the injection's metric (and direction; model drift either way) in its
  feature or in the org as a whole opened while the injection ran, or in the hour after it;
- false alarm: an opened anomaly that no injection of its org explains — same feature and one of
  the metrics the injection moves, or the org scope (any metric: a feature's change changes the
  org's mix), during the injection or the 8 hours after it (the longest window's tail);
- false alarms per org-week = false alarms / (orgs × replayed hours / 168).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass, field

from lectr.analysis.anomaly_model import AnomalyDecision, Config, KnownAnomaly, evaluate
from lectr.analysis.tracegen import Injection, Trace, generate

_FIRST_HOUR = 48  # nothing can fire earlier: scopes need 48 hours of data
_TAIL_HOURS = 8


@dataclass(slots=True)
class Score:
    seed: int
    injections: list[Injection]
    found: list[bool]
    false_alarms: list[AnomalyDecision]
    org_weeks: float
    seconds: float
    by_kind_size: dict = field(default_factory=dict)

    def recall(self, min_sigma: float = 3.0) -> tuple[int, int]:
        pairs = [f for i, f in zip(self.injections, self.found, strict=True) if i.size_sigma >= min_sigma]
        return sum(pairs), len(pairs)


def replay(trace: Trace, config: Config = Config()) -> list[AnomalyDecision]:
    """Every anomaly opened over the trace, evaluating each complete hour in turn."""
    opened: list[AnomalyDecision] = []
    for org_id in trace.org_ids:
        scopes = trace.scopes(org_id)
        known: dict = {}
        for k in range(_FIRST_HOUR - 1, trace.hours):
            at = trace.start_hour + k
            ev = evaluate(scopes, at, known=list(known.values()), config=config)
            for d in ev.opened:
                opened.append(d)
                known[d.key] = KnownAnomaly(d.key, d.window_start, d.window_end)
            for d in ev.ongoing:
                known[d.key] = KnownAnomaly(d.key, known[d.key].window_start, d.window_end)
            for key in ev.resolved:
                old = known[key]
                known[key] = KnownAnomaly(key, old.window_start, at + 1, resolved=True)
    return opened


def _finds(d: AnomalyDecision, inj: Injection) -> bool:
    k = d.key
    if k.org_id != inj.org_id or k.metric != inj.metric or k.feature not in (None, inj.feature):
        return False
    if inj.metric != "model_drift" and k.direction != inj.direction:
        return False
    return inj.start_hour < d.window_end <= inj.end_hour + 1


def _explains(inj: Injection, d: AnomalyDecision) -> bool:
    k = d.key
    if k.org_id != inj.org_id or not (inj.start_hour < d.window_end <= inj.end_hour + _TAIL_HOURS):
        return False
    return k.feature is None or (k.feature == inj.feature and k.metric in (inj.metric, *inj.also))


def score(seed: int, config: Config = Config()) -> Score:
    t0 = time.process_time()
    trace = generate(seed)
    opened = replay(trace, config)
    found = [any(_finds(d, inj) for d in opened) for inj in trace.injections]
    false = [d for d in opened if not any(_explains(inj, d) for inj in trace.injections)]
    weeks = len(trace.org_ids) * (trace.hours - _FIRST_HOUR) / 168
    s = Score(seed, trace.injections, found, false, weeks, time.process_time() - t0)
    table: dict = defaultdict(lambda: [0, 0])
    for inj, f in zip(trace.injections, found, strict=True):
        for key in ((inj.kind, _size_band(inj.size_sigma)), ("hours", _hours_band(inj))):
            table[key][0] += f
            table[key][1] += 1
    s.by_kind_size = dict(table)
    return s


def _size_band(sigma: float) -> str:
    return "3-4σ" if sigma < 4 else "4-6σ" if sigma < 6 else ">=6σ"


def _hours_band(inj: Injection) -> str:
    hours = inj.end_hour - inj.start_hour
    return "<=4h" if hours <= 4 else "5-8h" if hours <= 8 else ">=9h"


def _print(scores: list[Score], holdout: list[int]) -> None:
    print(f"{'seed':>6} {'found >=3σ':>11} {'recall':>7} {'false alarms':>13} {'per org-week':>13} {'cpu s':>6}")
    for s in scores:
        f, n = s.recall()
        tag = " (held out)" if s.seed in holdout else ""
        print(f"{s.seed:>6} {f:>5}/{n:<5} {f / n:>7.1%} {len(s.false_alarms):>13} "
              f"{len(s.false_alarms) / s.org_weeks:>13.2f} {s.seconds:>6.1f}{tag}")
    f = sum(s.recall()[0] for s in scores)
    n = sum(s.recall()[1] for s in scores)
    fa = sum(len(s.false_alarms) for s in scores)
    weeks = sum(s.org_weeks for s in scores)
    print(f"{'all':>6} {f:>5}/{n:<5} {f / n:>7.1%} {fa:>13} {fa / weeks:>13.2f}")
    print("\nrecall by kind and size in σ per hour (all seeds):")
    table: dict = defaultdict(lambda: [0, 0])
    for s in scores:
        for key, (a, b) in s.by_kind_size.items():
            table[key][0] += a
            table[key][1] += b
    bands = ("3-4σ", "4-6σ", ">=6σ")
    print(f"{'kind':>14} " + " ".join(f"{b:>8}" for b in bands))
    for kind in sorted({k for k, _ in table if k != "hours"}):
        cells = [table.get((kind, b)) for b in bands]
        print(f"{kind:>14} " + " ".join(f"{f'{c[0]}/{c[1]}' if c else '-':>8}" for c in cells))
    durations = ("<=4h", "5-8h", ">=9h")
    print(f"\n{'duration':>14} " + " ".join(f"{b:>8}" for b in durations))
    cells = [table.get(("hours", b)) for b in durations]
    print(f"{'all kinds':>14} " + " ".join(f"{f'{c[0]}/{c[1]}' if c else '-':>8}" for c in cells))
    if fa:
        print("\nfalse alarms:")
        for s in scores:
            for d in s.false_alarms:
                k = d.key
                print(f"  seed {s.seed} org {k.org_id} {k.feature or '(org)'} {k.metric} {k.direction} "
                      f"hour {d.window_end - 1 - 490_000} {d.deviation_sigma:+.1f}σ {d.detail.get('window_hours')}h")
    missed = [(s.seed, i) for s in scores for i, f in zip(s.injections, s.found, strict=True) if not f]
    if missed:
        print("\nmissed:")
        for seed, i in missed:
            print(f"  seed {seed} org {i.org_id} {i.feature} {i.kind} {i.size_sigma:g}σ "
                  f"{i.end_hour - i.start_hour}h at hour {i.start_hour - 490_000}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--holdout", type=int, nargs="*", default=[2026, 77, 4242],
                        help="seeds never used for tuning")
    args = parser.parse_args(argv)
    seeds = list(args.seeds) + [s for s in args.holdout if s not in args.seeds]
    scores = [score(seed) for seed in seeds]
    _print(scores, args.holdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
