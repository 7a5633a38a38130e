"""The one shape of a dashboard summary: its periods, its error condition and its fields.

The aggregator builds summaries to it, the API's OpenAPI document describes them from it, the
pages name the periods from it. A new period or field is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Period:
    """A summary period: the last ``length`` (compared with the ``length`` before it)."""

    name: str
    length: timedelta
    bucket: timedelta  # width of one point of the time series
    label: str  # "Last 24 hours", the dashboard's period picker
    phrase: str  # "24 hours", as in "than the previous 24 hours"


PERIODS = (
    Period("last_24h", timedelta(hours=24), timedelta(hours=1), "Last 24 hours", "24 hours"),
    Period("last_7d", timedelta(days=7), timedelta(hours=6), "Last 7 days", "7 days"),
    Period("last_30d", timedelta(days=30), timedelta(days=1), "Last 30 days", "30 days"),
)
PERIOD_NAMES = tuple(p.name for p in PERIODS)
PERIOD_BY_NAME = {p.name: p for p in PERIODS}
DEFAULT_PERIOD = PERIODS[0]

# A request counts as an error when this holds (SQL over request_logs): the summary's error
# counts and rates and the failures list use the same condition.
ERROR_CONDITION = "(status_code >= 400 OR error_type IS NOT NULL)"


@dataclass(frozen=True, slots=True)
class Fields:
    """The fields of one summary object: name → kind, and which are always present.

    Kinds: ``int``, ``number``, ``string``, ``time`` (ISO 8601), each with ``?`` when it may be null.
    """

    kinds: dict[str, str]
    required: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.kinds)


def _fields(required: str, **kinds: str) -> Fields:
    return Fields(kinds, tuple(required.split()))


TOTALS = _fields("requests errors error_rate cost_usd",
                 requests="int", errors="int", error_rate="number", cost_usd="number", prompt_tokens="int",
                 completion_tokens="int", total_tokens="int", latency_avg_ms="number?", latency_p50_ms="number?",
                 latency_p95_ms="number?", latency_p99_ms="number?", ttfb_avg_ms="number?", ttfb_p95_ms="number?",
                 measured_requests="int", partial_cost_requests="int", unpriced_requests="int",
                 unread_requests="int")
MODEL_ROW = _fields("model provider requests cost_usd",
                    model="string?", provider="string", requests="int", errors="int", cost_usd="number",
                    latency_avg_ms="number?", latency_p95_ms="number?", tokens="int", unpriced_requests="int")
PROVIDER_ROW = _fields("provider requests error_rate cost_usd",
                       provider="string", requests="int", errors="int", error_rate="number", cost_usd="number",
                       previous_cost_usd="number", latency_p95_ms="number?", unpriced_requests="int",
                       previous_unpriced_requests="int", provider_errors="int", provider_error_rate="number",
                       connection_errors="int", lectr_errors="int", client_errors="int")
FEATURE_ROW = _fields("feature requests cost_usd",
                      feature="string", requests="int", errors="int", error_rate="number", cost_usd="number",
                      latency_avg_ms="number?", latency_p95_ms="number?", tokens="int", unpriced_requests="int")
SERIES_POINT = _fields("start requests", start="time", requests="int", errors="int", cost_usd="number",
                       latency_p95_ms="number?")
# The top level: period, computed_at, window, previous_window, totals, previous, series
# (bucket_seconds, points), models, providers, features, dropped_events.
SUMMARY_REQUIRED = ("period", "totals", "previous", "series", "models", "providers", "features", "dropped_events")
