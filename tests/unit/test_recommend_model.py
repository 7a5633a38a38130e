"""The pure recommendation rules: volume, task first, reasoning never, ladder, saving, dismissal."""

import dataclasses

import pytest

from lectr.analysis import recommend_model as rm
from lectr.pricing.prices import downgrade_rows

LADDER = rm.index_downgrades(rm.Downgrade(*row) for row in downgrade_rows())
PRICES = {
    ("openai", "gpt-4.1"): rm.Price(2.0, 8.0, 0.5),
    ("openai", "gpt-4.1-mini"): rm.Price(0.4, 1.6, 0.1),
    ("openai", "gpt-4.1-nano"): rm.Price(0.1, 0.4, 0.025),
    ("openai", "gpt-4o"): rm.Price(2.5, 10.0),
    ("openai", "gpt-4o-mini"): rm.Price(0.15, 0.6),
}


def usage(**kw):
    base = dict(org_id=1, feature="triage", provider="openai", model="gpt-4.1", requests=10_000,
                avg_prompt_tokens=800.0, avg_completion_tokens=300.0, error_rate=0.01,
                p95_latency_ms=900.0, cost_usd=None, task_shares={})
    base.update(kw)
    return rm.ModelUsage(**base)


def test_seeded_ladder_stays_within_provider():
    # a model name another provider's ladder knows gets nothing under a provider without it
    out = rm.recommend(usage(provider="groq", task_shares={"classification": 1.0}), LADDER, PRICES)
    assert isinstance(out, rm.NoRecommendation)
    rec = rm.recommend(usage(provider="azure", task_shares={"classification": 1.0}), LADDER, PRICES)
    assert isinstance(rec, rm.Recommendation)
    assert rec.provider == "azure" and rec.suggested_model == "gpt-4.1-nano"
    assert rec.estimated_monthly_saving_usd is None  # azure prices were not given: unknown, said so
    assert rec.signals["saving_unknown"] == "target model has no price"


@pytest.mark.parametrize(("task", "step", "target"), [
    ("classification", "aggressive", "gpt-4.1-nano"),
    ("extraction", "aggressive", "gpt-4.1-nano"),
    ("summarisation", "moderate", "gpt-4.1-mini"),
])
def test_declared_task_decides_with_high_confidence(task, step, target):
    rec = rm.recommend(usage(task_shares={task: 0.95, "bogus": 0.05}), LADDER, PRICES)
    assert (rec.aggressiveness, rec.suggested_model, rec.confidence) == (step, target, "high")
    assert rec.signals["task_source"] == "declared" and rec.signals["dominant_task"] == task


def test_generation_is_conservative_and_falls_back_only_towards_caution():
    # gpt-4.1 has no conservative step: a generation feature gets nothing, never a bolder step
    out = rm.recommend(usage(task_shares={"generation": 1.0}), LADDER, PRICES)
    assert isinstance(out, rm.NoRecommendation) and "conservative" in out.reason
    # gpt-4o has only a moderate step: an aggressive wish falls back to it
    rec = rm.recommend(usage(model="gpt-4o", task_shares={"extraction": 1.0}), LADDER, PRICES)
    assert (rec.suggested_model, rec.aggressiveness, rec.signals["wanted_aggressiveness"]) == (
        "gpt-4o-mini", "moderate", "aggressive")


@pytest.mark.parametrize("shares", [
    {"reasoning": 1.0},
    {"classification": 0.97, "reasoning": 0.03},
    {"reasoning": 0.001},
])
def test_reasoning_is_never_downgraded(shares):
    # every other signal says "downgrade aggressively"
    u = usage(task_shares=shares, avg_prompt_tokens=100, avg_completion_tokens=3, requests=10**6)
    out = rm.recommend(u, LADDER, PRICES)
    assert isinstance(out, rm.NoRecommendation)
    assert out.reason == "reasoning is never downgraded"


def test_minimum_volume_is_configurable():
    u = usage(requests=499, task_shares={"classification": 1.0})
    assert isinstance(rm.recommend(u, LADDER, PRICES), rm.NoRecommendation)
    assert isinstance(rm.recommend(u, LADDER, PRICES, rm.Policy(min_requests=100)), rm.Recommendation)
    assert isinstance(rm.recommend(dataclasses.replace(u, requests=500), LADDER, PRICES),
                      rm.Recommendation)


@pytest.mark.parametrize(("shares", "prompt", "completion", "expected"), [
    ({}, 600, 12, ("moderate", "gpt-4.1-mini")),                        # no task, classification-like
    ({"triage-bot": 1.0}, 600, 12, ("moderate", "gpt-4.1-mini")),       # invalid task: ignored
    ({"classification": 0.5, "generation": 0.5}, 600, 12, ("moderate", "gpt-4.1-mini")),  # mixed
    ({}, 6000, 300, None),                       # summarisation-like, but gpt-4.1 has no conservative step
    ({}, 500, 700, None),                        # long generation: no signal, no advice
])
def test_heuristics_give_medium_confidence(shares, prompt, completion, expected):
    out = rm.recommend(usage(task_shares=shares, avg_prompt_tokens=prompt,
                             avg_completion_tokens=completion), LADDER, PRICES)
    if expected is None:
        assert isinstance(out, rm.NoRecommendation)
        return
    assert (out.aggressiveness, out.suggested_model, out.confidence) == (*expected, "medium")
    assert out.signals["task_source"] == "heuristic" and "heuristic" in out.signals


def test_summarisation_like_heuristic_picks_a_conservative_step():
    out = rm.recommend(usage(model="gpt-5.6-sol", avg_prompt_tokens=6000, avg_completion_tokens=300),
                       LADDER, {})
    assert (out.suggested_model, out.aggressiveness, out.confidence) == (
        "gpt-5.6-terra", "conservative", "medium")


def test_saving_prices_the_window_tokens_at_both_models():
    u = usage(requests=1000, avg_prompt_tokens=1000, avg_completion_tokens=100, avg_cached_tokens=200,
              task_shares={"classification": 1.0})
    rec = rm.recommend(u, LADDER, PRICES)
    # current: 0.8M uncached * 2 + 0.2M cached * 0.5 + 0.1M * 8 = 1.6 + 0.1 + 0.8 = 2.5 USD
    # nano:    0.8M * 0.1 + 0.2M * 0.025 + 0.1M * 0.4 = 0.08 + 0.005 + 0.04 = 0.125 USD
    assert rec.estimated_monthly_saving_usd == pytest.approx(2.375, abs=0.01)
    # the recorded cost wins over a recomputation, and a 15-day window is scaled to a month
    rec = rm.recommend(dataclasses.replace(u, cost_usd=5.0), LADDER, PRICES, rm.Policy(window_days=15))
    assert rec.estimated_monthly_saving_usd == pytest.approx((5.0 - 0.125) * 2, abs=0.01)


def test_not_cheaper_means_no_recommendation():
    prices = dict(PRICES)
    prices[("openai", "gpt-4.1-nano")] = rm.Price(50.0, 50.0)
    out = rm.recommend(usage(task_shares={"classification": 1.0}), LADDER, prices)
    assert isinstance(out, rm.NoRecommendation) and "not be cheaper" in out.reason


def test_dated_snapshots_find_their_family():
    def names(model):
        return [model, model.rsplit("-", 3)[0]] if model.count("-") >= 3 else [model]
    u = usage(model="gpt-4o-2024-08-06", task_shares={"summarisation": 1.0})
    assert isinstance(rm.recommend(u, LADDER, PRICES), rm.NoRecommendation)
    assert rm.recommend(u, LADDER, PRICES, model_names=names).suggested_model == "gpt-4o-mini"


def test_pick_target_and_invalid_ladder():
    assert rm.pick_target({"conservative": "b"}, "aggressive") == ("b", "conservative")
    assert rm.pick_target({"aggressive": "a"}, "moderate") is None
    with pytest.raises(ValueError):
        rm.index_downgrades([rm.Downgrade("openai", "x", "y", "reckless")])


def test_dismissal_holds_until_signals_change_materially():
    rec = rm.recommend(usage(task_shares={"classification": 1.0}, cost_usd=300.0), LADDER, PRICES)
    old = {**rec.signals, "suggested_model": rec.suggested_model, "confidence": rec.confidence}
    assert not rm.changed_materially(old, dict(old))
    small = {**old, "requests": old["requests"] * 1.2, "avg_completion_tokens": 320.0,
             "error_rate": 0.03, "cost_usd": 330.0}
    assert not rm.changed_materially(old, small)
    for change in ({"requests": old["requests"] * 2}, {"avg_prompt_tokens": 1200.0},
                   {"error_rate": 0.07}, {"dominant_task": "generation"},
                   {"suggested_model": "gpt-4.1-mini"}, {"confidence": "medium"}, {"cost_usd": None}):
        assert rm.changed_materially(old, {**old, **change}), change
