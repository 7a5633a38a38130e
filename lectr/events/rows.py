"""Turning a hot-path event into a ``request_logs`` row: tokens, cost, and the rest as recorded."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from lectr.events.record import RequestEvent
from lectr.events.tokens import encoding_name
from lectr.events.usage import Usage, extract_usage
from lectr.pricing import PricingTable, compute_cost

# The order of ``request_logs`` columns in every row and every COPY.
COLUMNS = (
    "created_at", "org_id", "provider", "model", "model_used", "feature", "task", "status_code",
    "error_type", "error_origin", "stream", "latency_ms", "ttfb_ms", "overhead_us",
    "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "token_source",
    "cost_usd", "cost_partial", "pricing_id", "provider_unknown", "rule_id", "bytes_in", "bytes_out",
)
CREATED_AT = COLUMNS.index("created_at")
ORG_ID = COLUMNS.index("org_id")
PROVIDER = COLUMNS.index("provider")
COST_USD = COLUMNS.index("cost_usd")
TOKEN_SOURCE = COLUMNS.index("token_source")
PRICING_ID = COLUMNS.index("pricing_id")
COMPLETION_TOKENS = COLUMNS.index("completion_tokens")
_PRICED = slice(COLUMNS.index("cost_usd"), COLUMNS.index("pricing_id") + 1)

Measure = tuple[str, str]  # (encoding name, completion text) to count with the tokeniser


class _CountLater:
    """Stands in for the tokeniser while a row is built: keeps the text, to count with the batch."""

    __slots__ = ("wanted",)

    def __init__(self) -> None:
        self.wanted: Measure | None = None

    def count(self, text: str, model: str | None, provider: str) -> int:
        self.wanted = (encoding_name(model, provider), text)
        return 0
_INT32_MAX = 2**31 - 1


class RowBuilder:
    """Builds rows from events with the current pricing table."""

    def __init__(self, pricing: PricingTable) -> None:
        self.pricing = pricing

    def build(self, event: RequestEvent) -> tuple[tuple, Measure | None]:
        """One row, in ``COLUMNS`` order, and the text still to count when the tokens are measured."""
        later = _CountLater()
        usage = extract_usage(
            provider=event.provider, model=event.model_used, stream=event.stream,
            status_code=event.status_code, content_type=event.content_type,
            content_encoding=event.content_encoding, chunks=event.response_chunks, counter=later)
        return self._row(event, usage), later.wanted if usage.source == "measured" else None

    def with_count(self, event: RequestEvent, row: tuple, completion_tokens: int) -> tuple:
        """``row`` with its measured completion count, and the cost that follows from it."""
        usage = Usage(None, completion_tokens, None, None, "measured")
        cost, partial, pricing_id = self._price(event, usage, row[CREATED_AT])
        values = list(row)
        values[COMPLETION_TOKENS] = completion_tokens
        values[_PRICED] = [cost, partial, pricing_id]
        return tuple(values)

    def unmeasured(self, row: tuple) -> tuple:
        """``row`` when its text could not be counted: no tokens, no cost, said honestly."""
        values = list(row)
        values[COMPLETION_TOKENS] = None
        values[TOKEN_SOURCE] = "none"
        values[_PRICED] = [None, False, None]
        return tuple(values)

    def _row(self, event: RequestEvent, usage: Usage) -> tuple:
        created_at = datetime.fromtimestamp(event.created_at, timezone.utc)
        cost, partial, pricing_id = self._price(event, usage, created_at)
        return (
            created_at, event.org_id, event.provider, event.model, event.model_used, event.feature,
            event.task, event.status_code, event.error_type, event.error_origin, event.stream,
            event.latency_ms, event.ttfb_ms, min(_INT32_MAX, int(event.overhead_s * 1e6)),
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens,
            usage.source, cost, partial, pricing_id, event.provider_unknown, event.rule_id,
            event.bytes_in, event.bytes_out,
        )

    def _price(self, event: RequestEvent, usage: Usage,
               at: datetime) -> tuple[Decimal | None, bool, int | None]:
        if usage.source == "none":
            return None, False, None
        row = self.pricing.lookup(event.provider, event.model_used, at)
        if row is None:  # an unpriced model gets no cost, never a guess
            return None, False, None
        cost, partial = compute_cost(row, prompt_tokens=usage.prompt_tokens,
                                     completion_tokens=usage.completion_tokens,
                                     cached_tokens=usage.cached_tokens)
        return cost, partial, row.id
