"""Turning a hot-path event into a ``request_logs`` row: tokens, cost, and the rest as recorded."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

from lectr.events.record import RequestEvent
from lectr.events.usage import Usage, extract_usage
from lectr.pricing import PricingTable, compute_cost

if TYPE_CHECKING:
    from lectr.events.tokens import TokenCounter

# The order of ``request_logs`` columns in every row and every COPY.
COLUMNS = (
    "created_at", "org_id", "provider", "model", "model_used", "feature", "task", "status_code",
    "error_type", "error_origin", "stream", "latency_ms", "ttfb_ms", "overhead_us",
    "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "token_source",
    "cost_usd", "cost_partial", "pricing_id", "provider_unknown", "rule_id", "bytes_in", "bytes_out",
)
CREATED_AT = COLUMNS.index("created_at")
ORG_ID = COLUMNS.index("org_id")
COST_USD = COLUMNS.index("cost_usd")
TOKEN_SOURCE = COLUMNS.index("token_source")
PRICING_ID = COLUMNS.index("pricing_id")
_INT32_MAX = 2**31 - 1


class RowBuilder:
    """Builds rows from events with the tokeniser and the current pricing table."""

    def __init__(self, counter: TokenCounter, pricing: PricingTable) -> None:
        self.counter = counter
        self.pricing = pricing

    def build(self, event: RequestEvent) -> tuple:
        """One row, in ``COLUMNS`` order."""
        usage = extract_usage(
            provider=event.provider, model=event.model_used, stream=event.stream,
            status_code=event.status_code, content_type=event.content_type,
            content_encoding=event.content_encoding, chunks=event.response_chunks, counter=self.counter)
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
