"""What an alert says: what (metric, direction), where (org, feature), when (window), the current
value, the baseline (mean ± σ), the deviation in σ, and a link to the anomaly on the dashboard.

Pure: an anomaly row (a mapping with the ``anomalies`` table's columns) in, text and JSON out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from lectr.dashboard.pages import fmt_ms, fmt_pct, fmt_usd

# metric -> (what it is called, how a value is written)
METRIC_NAMES = {
    "cost": "Cost per hour",
    "requests": "Requests per hour",
    "error_rate": "Error rate",
    "p95_latency": "p95 latency",
    "latency_p95": "p95 latency",
    "model_drift": "Model mix",
    "latency_threshold": "p95 latency over the threshold",
}


def _count(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}".rstrip("0").rstrip(".")


def format_value(metric: str, value: float | None) -> str:
    """A metric's value in its unit: ``$12.40/h``, ``1,234 req/h``, ``4.2%``, ``812 ms``."""
    if value is None:
        return "—"
    if metric == "cost":
        return f"{fmt_usd(value)}/h"
    if metric == "requests":
        return f"{_count(value)} req/h"
    if metric in ("error_rate", "model_drift"):
        return fmt_pct(value)
    return fmt_ms(value)


def format_spread(metric: str, value: float | None) -> str:
    """A standard deviation in the metric's unit (a share's σ in percentage points)."""
    if value is None:
        return "—"
    if metric in ("error_rate", "model_drift"):
        return fmt_pct(value).replace("%", " pp")
    return format_value(metric, value)


def format_sigma(sigma: float | None) -> str:
    """``+4.3σ`` / ``-2.9σ``; ``—`` when there is no baseline."""
    return "—" if sigma is None else f"{sigma:+.1f}σ"


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def format_window(start: Any, end: Any) -> str:
    """``2025-05-01 14:00–16:00 UTC`` (or across days: ``2025-05-01 23:00 – 2025-05-02 01:00 UTC``)."""
    s, e = _utc(start), _utc(end)
    if s.date() == e.date():
        return f"{s:%Y-%m-%d %H:%M}–{e:%H:%M} UTC"
    if (e - s).days < 1 and e.hour == 0 and e.minute == 0 and (e - timedelta(seconds=1)).date() == s.date():
        return f"{s:%Y-%m-%d %H:%M}–24:00 UTC"
    return f"{s:%Y-%m-%d %H:%M} – {e:%Y-%m-%d %H:%M} UTC"


def what(anomaly: Mapping[str, Any]) -> str:
    """``Cost per hour up``, ``Model mix shifted to gpt-4o``, ``p95 latency over the threshold``."""
    metric = anomaly["metric"]
    detail = anomaly.get("detail") or {}
    if metric == "model_drift":
        model = detail.get("model")
        new = " (a model not seen in the baseline)" if detail.get("new_model") else ""
        return f"Model mix shifted to {model}{new}" if model else "Model mix shifted"
    if metric == "latency_threshold":
        threshold = detail.get("threshold_ms")
        return f"p95 latency over the {fmt_ms(threshold)} threshold" if threshold else METRIC_NAMES[metric]
    return f"{METRIC_NAMES.get(metric, metric)} {'up' if anomaly['direction'] == 'up' else 'down'}"


def where(anomaly: Mapping[str, Any]) -> str:
    return f"feature {anomaly['feature']}" if anomaly.get("feature") else "whole org"


def anomaly_link(dashboard_url: str, anomaly_id: int) -> str:
    return f"{dashboard_url.rstrip('/')}/dashboard/anomalies?anomaly={anomaly_id}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One anomaly, said for people (``subject``, ``body``, the one-line ``text``) and machines
    (``payload``: the anomaly's fields plus ``text`` and ``url``)."""

    subject: str
    text: str
    body: str
    payload: dict


def compose(anomaly: Mapping[str, Any], org_name: str, dashboard_url: str) -> Alert:
    """The alert for an anomaly row (``id, org_id, feature, metric, direction, window_start,
    window_end, current_value, baseline_mean, baseline_std, deviation_sigma, detail, opened_at``)."""
    metric = anomaly["metric"]
    headline = what(anomaly)
    place = where(anomaly)
    window = format_window(anomaly["window_start"], anomaly["window_end"])
    current = format_value(metric, anomaly["current_value"])
    mean, std = anomaly.get("baseline_mean"), anomaly.get("baseline_std")
    baseline = (f"{format_value(metric, mean)} ± {format_spread(metric, std)}" if mean is not None
                else "no baseline yet")
    sigma = format_sigma(anomaly.get("deviation_sigma"))
    url = anomaly_link(dashboard_url, anomaly["id"])
    text = (f"Lectr alert for {org_name}: {headline} ({place}), {window}: {current} against a baseline of "
            f"{baseline} ({sigma}). {url}")
    detail = anomaly.get("detail") or {}
    lines = [
        f"{headline} in {org_name} ({place}).",
        "",
        f"What:      {headline}",
        f"Where:     {org_name}, {place}",
        f"When:      {window}",
        f"Current:   {current}",
        f"Baseline:  {baseline}" + (f" ({detail['baseline']})" if detail.get("baseline") else ""),
        f"Deviation: {sigma}",
    ]
    if metric == "latency_threshold" and detail.get("threshold_ms"):
        lines.append(f"Threshold: {fmt_ms(detail['threshold_ms'])} (p95, set for this org)")
    lines += ["", f"See it on the dashboard: {url}", "",
              "— Lectr. Change where alerts go under Settings on the dashboard."]
    payload = {
        "id": anomaly["id"], "org": org_name, "feature": anomaly.get("feature"), "metric": metric,
        "direction": anomaly["direction"], "window_start": _utc(anomaly["window_start"]).isoformat(),
        "window_end": _utc(anomaly["window_end"]).isoformat(), "current_value": anomaly["current_value"],
        "baseline_mean": mean, "baseline_std": std, "deviation_sigma": anomaly.get("deviation_sigma"),
        "detail": dict(detail), "url": url, "text": text,
    }
    subject = f"[Lectr] {org_name}: {headline} ({place}) {sigma}"
    return Alert(subject=subject, text=text, body="\n".join(lines) + "\n", payload=payload)
