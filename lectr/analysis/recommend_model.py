"""Model recommendations, as pure decisions: one feature's use of one model → a cheaper sibling or not.

Inputs are 30 days of one (org, feature, provider, model) taken from the hourly rollups, the
``model_downgrades`` ladder and the prices; nothing here reads a database or a clock.

The rules, in order (each refusal is a ``NoRecommendation`` with its reason):

1. Volume: at least ``Policy.min_requests`` (500) requests in the window.
2. ``reasoning`` is never downgraded — a hard rule: if any request of this feature and model was
   declared ``reasoning``, nothing is recommended, whatever else the signals say.
3. Task first: when one valid declared task covers at least ``Policy.min_task_share`` (80%) of the
   requests, it decides with **high** confidence: classification and extraction → aggressive,
   summarisation → moderate, generation → conservative.
4. Otherwise (no task, an invalid one, or a mix) heuristics decide with **medium** confidence and
   one step more caution than a declared task would get: short completions from a modest prompt
   look like classification (→ moderate); a long prompt condensed into a short-to-medium answer
   looks like summarisation (→ conservative); anything else gets no recommendation.
5. The target comes from the ladder within the same provider only; when the wanted step is
   missing, the next less aggressive one is used (aggressive → moderate → conservative), never a
   more aggressive one.
6. Saving: the window's tokens priced at the target's prices, against what they cost (the recorded
   cost, or the current model's prices when nothing was recorded), scaled to 30 days. A target
   priced and not cheaper → no recommendation (a downgrade that saves nothing is not advice). A
   target without a price → a recommendation whose saving is ``None`` ("unknown"), said in the
   signals, because the ladder is hand-checked to be cheaper but we cannot put a number on it.

``changed_materially`` decides when a dismissed recommendation may come back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

VALID_TASKS = ("classification", "summarisation", "extraction", "generation", "reasoning")
TASK_AGGRESSIVENESS = {"classification": "aggressive", "extraction": "aggressive",
                       "summarisation": "moderate", "generation": "conservative"}
# From most to least aggressive: a missing step falls back towards the right only.
LADDER = ("aggressive", "moderate", "conservative")


@dataclass(frozen=True, slots=True)
class Policy:
    min_requests: int = 500
    window_days: float = 30.0
    min_task_share: float = 0.8
    # classification-like: completions this short on average, from prompts no longer than this
    short_completion_tokens: float = 40.0
    short_prompt_tokens: float = 2000.0
    # summarisation-like: prompt at least this many times the completion, completion at most this
    summary_ratio: float = 4.0
    summary_max_completion_tokens: float = 600.0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


@dataclass(frozen=True, slots=True)
class Downgrade:
    provider: str
    from_model: str
    to_model: str
    aggressiveness: str


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One feature's use of one model over the window (``Policy.window_days``).

    ``task_shares`` maps each declared ``X-Lectr-Task`` value (valid or not; undeclared requests
    are simply absent) to its share of ``requests``. ``cost_usd`` is the recorded cost, ``None``
    when no request was priced. Token figures are averages per request.
    """

    org_id: int
    feature: str
    provider: str
    model: str
    requests: int
    avg_prompt_tokens: float
    avg_completion_tokens: float
    error_rate: float
    p95_latency_ms: float | None
    cost_usd: float | None
    task_shares: Mapping[str, float] = field(default_factory=dict)
    avg_cached_tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class Recommendation:
    org_id: int
    feature: str
    provider: str
    current_model: str
    suggested_model: str
    aggressiveness: str
    confidence: str  # "high" (declared task) or "medium" (heuristics)
    reason: str
    signals: dict
    estimated_monthly_saving_usd: float | None  # None: the target has no price


@dataclass(frozen=True, slots=True)
class NoRecommendation:
    reason: str
    signals: dict


def dominant_task(task_shares: Mapping[str, float]) -> tuple[str | None, float]:
    """The declared task with the largest share, and that share; ``(None, 0.0)`` when none."""
    if not task_shares:
        return None, 0.0
    task = max(sorted(task_shares), key=lambda t: task_shares[t])
    return task, float(task_shares[task])


def index_downgrades(rows: Iterable[Downgrade]) -> dict[tuple[str, str], dict[str, str]]:
    """``{(provider, from_model): {aggressiveness: to_model}}`` for ``recommend``."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        if r.aggressiveness not in LADDER:
            raise ValueError(f"unknown aggressiveness {r.aggressiveness!r}")
        out.setdefault((r.provider, r.from_model), {})[r.aggressiveness] = r.to_model
    return out


def pick_target(ladder: Mapping[str, str], wanted: str) -> tuple[str, str] | None:
    """``(to_model, aggressiveness)``: the wanted step, else the next less aggressive one."""
    for step in LADDER[LADDER.index(wanted):]:
        if step in ladder:
            return ladder[step], step
    return None


def token_cost(price: Price, *, prompt_tokens: float, completion_tokens: float,
               cached_tokens: float = 0.0) -> float:
    """USD for these token totals; cached prompt tokens at the cached price when there is one."""
    cached = min(cached_tokens, prompt_tokens) if price.cached_input_per_mtok is not None else 0.0
    uncached = prompt_tokens - cached
    usd = uncached * price.input_per_mtok + completion_tokens * price.output_per_mtok
    if cached:
        usd += cached * price.cached_input_per_mtok
    return usd / 1_000_000


def _signals(u: ModelUsage) -> dict:
    task, share = dominant_task(u.task_shares)
    return {
        "requests": u.requests,
        "avg_prompt_tokens": round(u.avg_prompt_tokens, 1),
        "avg_completion_tokens": round(u.avg_completion_tokens, 1),
        "error_rate": round(u.error_rate, 4),
        "p95_latency_ms": None if u.p95_latency_ms is None else round(u.p95_latency_ms, 1),
        "cost_usd": None if u.cost_usd is None else round(u.cost_usd, 6),
        "dominant_task": task,
        "dominant_task_share": round(share, 3),
    }


def _heuristic(u: ModelUsage, policy: Policy) -> tuple[str, str] | None:
    """``(aggressiveness, what the traffic looks like)`` from token shapes, or ``None``."""
    prompt, completion = u.avg_prompt_tokens, u.avg_completion_tokens
    if completion <= policy.short_completion_tokens and prompt <= policy.short_prompt_tokens:
        return "moderate", "classification-like: short completions from a modest prompt"
    if (completion <= policy.summary_max_completion_tokens
            and prompt >= policy.summary_ratio * max(completion, 1.0)):
        return "conservative", "summarisation-like: a long prompt condensed into a shorter answer"
    return None


def recommend(u: ModelUsage, downgrades: Mapping[tuple[str, str], Mapping[str, str]],
              prices: Mapping[tuple[str, str], Price], policy: Policy = Policy(), *,
              model_names: Callable[[str], Sequence[str]] | None = None,
              ) -> Recommendation | NoRecommendation:
    """Decide for one (org, feature, provider, model); see the module docstring for the rules.

    ``downgrades`` comes from ``index_downgrades``; ``prices`` maps ``(provider, model)`` to the
    current ``Price``. ``model_names(model)`` gives the names to look the model up by, most
    specific first (e.g. a dated snapshot, then its family); by default the name itself.
    """
    signals = _signals(u)
    if u.requests < policy.min_requests:
        return NoRecommendation(f"fewer than {policy.min_requests} requests", signals)
    if u.task_shares.get("reasoning", 0.0) > 0.0:
        return NoRecommendation("reasoning is never downgraded", signals)

    task, share = signals["dominant_task"], signals["dominant_task_share"]
    if task in TASK_AGGRESSIVENESS and share >= policy.min_task_share:
        wanted, confidence = TASK_AGGRESSIVENESS[task], "high"
        why = f"declared task {task} on {share:.0%} of requests"
        signals["task_source"] = "declared"
    else:
        guess = _heuristic(u, policy)
        signals["task_source"] = "heuristic"
        if guess is None:
            return NoRecommendation("no declared task and no heuristic signal", signals)
        wanted, why = guess
        confidence = "medium"
        signals["heuristic"] = why

    names = list(model_names(u.model)) if model_names else [u.model]
    ladder = next((downgrades[(u.provider, n)] for n in names if (u.provider, n) in downgrades), None)
    picked = pick_target(ladder, wanted) if ladder else None
    if picked is None:
        return NoRecommendation(f"no {wanted} or gentler downgrade for {u.provider} {u.model}", signals)
    target, step = picked
    signals["wanted_aggressiveness"] = wanted

    prompt_total = u.avg_prompt_tokens * u.requests
    completion_total = u.avg_completion_tokens * u.requests
    cached_total = u.avg_cached_tokens * u.requests
    scale = 30.0 / policy.window_days
    current_cost = u.cost_usd
    if current_cost is None:
        current_price = next((prices[(u.provider, n)] for n in names if (u.provider, n) in prices), None)
        if current_price is not None:
            current_cost = token_cost(current_price, prompt_tokens=prompt_total,
                                      completion_tokens=completion_total, cached_tokens=cached_total)
    target_price = prices.get((u.provider, target))
    saving: float | None = None
    if target_price is None or current_cost is None:
        signals["saving_unknown"] = ("target model has no price" if target_price is None
                                     else "current model has no recorded cost or price")
    else:
        target_cost = token_cost(target_price, prompt_tokens=prompt_total,
                                 completion_tokens=completion_total, cached_tokens=cached_total)
        signals["target_cost_usd"] = round(target_cost * scale, 6)
        saving = (current_cost - target_cost) * scale
        if saving <= 0:
            return NoRecommendation(f"{target} would not be cheaper", signals)
        saving = round(saving, 2)
    return Recommendation(
        org_id=u.org_id, feature=u.feature, provider=u.provider, current_model=u.model,
        suggested_model=target, aggressiveness=step, confidence=confidence, reason=why,
        signals=signals, estimated_monthly_saving_usd=saving)


# -- dismissed stays dismissed until the signals change materially ---------------------------

# Relative change in these numeric signals that counts as material.
MATERIAL_RELATIVE = {"requests": 0.5, "avg_prompt_tokens": 0.25, "avg_completion_tokens": 0.25,
                     "cost_usd": 0.5}
MATERIAL_ERROR_RATE_POINTS = 0.05
# A change in any of these is material whatever its size.
MATERIAL_LABELS = ("dominant_task", "task_source", "suggested_model", "confidence")


def changed_materially(old: Mapping, new: Mapping) -> bool:
    """Whether a dismissed recommendation's signals moved enough to show it again.

    ``old`` and ``new`` are signal dicts (those of ``Recommendation.signals``, plus
    ``suggested_model`` and ``confidence`` if the caller adds them). Material: a different
    dominant task, task source, target or confidence; requests or cost up or down by half;
    average prompt or completion tokens by a quarter; the error rate by 5 percentage points.
    A signal missing on one side only counts as a change.
    """
    for key in MATERIAL_LABELS:
        if old.get(key) != new.get(key):
            return True
    for key, limit in MATERIAL_RELATIVE.items():
        a, b = old.get(key), new.get(key)
        if (a is None) != (b is None):
            return True
        if a is None:
            continue
        base = max(abs(a), 1e-9)
        if abs(b - a) / base >= limit:
            return True
    a, b = old.get("error_rate"), new.get("error_rate")
    if (a is None) != (b is None):
        return True
    return a is not None and abs(b - a) >= MATERIAL_ERROR_RATE_POINTS
