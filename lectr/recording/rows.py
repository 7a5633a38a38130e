"""Turning a hot-path event into a ``request_logs`` row: tokens, cost, and the rest as recorded.

One direction: the response is read (usage, or the text still to count), the tokens are
counted when they must be, the price is looked up once, and the row is built once from all of
it. A stream without usage waits as a ``Pending`` (what its row will be built from) until its
text is counted; no row is built before and patched after.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timezone
from operator import itemgetter
from typing import NamedTuple

from lectr.proxy.event import RequestEvent
from lectr.recording.tokens import encoding_name
from lectr.recording.usage import response_steps, response_values
from lectr.pricing.prices import PriceRow, PricingTable, compute_cost

# The order of ``request_logs`` columns in every row and every COPY.
COLUMNS = (
    "created_at", "org_id", "provider", "model", "model_used", "feature", "task", "status_code",
    "error_type", "error_origin", "stream", "latency_ms", "ttfb_ms", "overhead_us",
    "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "token_source",
    "cost_usd", "cost_partial", "pricing_id", "provider_unknown", "rule_id", "bytes_in", "bytes_out",
    "usage_note",
)
CREATED_AT = COLUMNS.index("created_at")
ORG_ID = COLUMNS.index("org_id")
PROVIDER = COLUMNS.index("provider")
MODEL = COLUMNS.index("model")
MODEL_USED = COLUMNS.index("model_used")
COST_USD = COLUMNS.index("cost_usd")
TOKEN_SOURCE = COLUMNS.index("token_source")
PRICING_ID = COLUMNS.index("pricing_id")
COMPLETION_TOKENS = COLUMNS.index("completion_tokens")
USAGE_NOTE = COLUMNS.index("usage_note")
# Why a row's usage is missing or incomplete (the usage_note column; NULL when it is whole).
UNDECODABLE, TRUNCATED, NOT_COUNTED = "undecodable", "truncated", "not_counted"
_NO_COUNTS = (None, None, None, None, "none")


class Pending(NamedTuple):
    """A row still to be built, waiting for its completion text to be counted.

    ``encoding`` and ``text`` are what to count (a tiktoken encoding name, the streamed
    completion); ``fields`` and ``facts`` are what the row is then built from.
    """

    encoding: str
    text: str
    fields: tuple
    facts: tuple

    def cut(self, chars: int) -> Pending:
        """Only the first ``chars`` of the text counted: the count is then a lower bound (``TRUNCATED``)."""
        usage, _, served, written = self.facts
        return self._replace(text=self.text[:chars], facts=(usage, TRUNCATED, served, written))



class _CountLater:
    """Stands in for the tokeniser while a row is built: keeps the text, to count with the batch."""

    __slots__ = ("wanted",)

    def __init__(self) -> None:
        self.wanted: tuple[str, str] | None = None  # (encoding name, completion text)

    def count(self, text: str, model: str | None, provider: str) -> int:
        self.wanted = (encoding_name(model, provider), text)
        return 0


_INT32_MAX = 2**31 - 1
_fromtimestamp = datetime.fromtimestamp
_UTC = timezone.utc
# The event's fields a row needs, read in one C call: each ``event.field`` of a NamedTuple goes
# through a generic descriptor lookup (about 25 ns, not specialised by CPython 3.11), and a row
# needs twenty of them. Picked by name, so RequestEvent's field order may change freely.
_FIELD_NAMES = (
    "created_at", "org_id", "provider", "model", "model_used", "feature", "task", "status_code", "error_type",
    "error_origin", "stream", "t_start", "t_first_byte", "t_end", "overhead_s", "provider_unknown", "rule_id",
    "bytes_in", "bytes_out", "content_type", "content_encoding", "response_chunks", "response_tail")
_EVENT_FIELDS = itemgetter(*map(RequestEvent._fields.index, _FIELD_NAMES))
# response_values' arguments, from those fields.
_USAGE_ARGS = itemgetter(*map(_FIELD_NAMES.index, (
    "provider", "model_used", "stream", "status_code", "content_type", "content_encoding", "response_chunks",
    "response_tail")))


class RowBuilder:
    """Builds rows from events with the current pricing table."""

    def __init__(self, pricing: PricingTable) -> None:
        self.pricing = pricing
        # One stand-in, reset per row: build never awaits, so rows cannot interleave.
        self._later = _CountLater()

    def build(self, event: RequestEvent) -> tuple[tuple | None, Pending | None]:
        """``(row, None)``: the row, in ``COLUMNS`` order; or ``(None, pending)`` when the
        completion must be counted first (then ``counted`` or ``uncounted`` builds the row)."""
        fields = _EVENT_FIELDS(event)
        later = self._later
        later.wanted = None
        facts = response_values(*_USAGE_ARGS(fields), later)
        return self._row_or_pending(fields, facts, later)

    def build_steps(self, event: RequestEvent) -> Generator[None, None, tuple[tuple | None, Pending | None]]:
        """``build`` as a generator that yields now and then while it parses a long stream, and
        returns what ``build`` returns. Any number may be under way at once."""
        fields = _EVENT_FIELDS(event)
        later = _CountLater()
        facts = yield from response_steps(*_USAGE_ARGS(fields), later)
        return self._row_or_pending(fields, facts, later)

    def counted(self, pending: Pending, completion_tokens: int) -> tuple:
        """The row of ``pending`` with its measured completion count, priced by it."""
        _, note, served, _ = pending.facts
        return self._row(pending.fields, ((None, completion_tokens, None, None, "measured"), note, served, None))

    def uncounted(self, pending: Pending) -> tuple:
        """The row of ``pending`` when its text could not be counted: no tokens, no cost, said honestly."""
        return self._row(pending.fields, (_NO_COUNTS, NOT_COUNTED, pending.facts[2], None))

    def _row_or_pending(self, fields: tuple, facts: tuple, later: _CountLater) -> tuple[tuple | None, Pending | None]:
        wanted = later.wanted
        if wanted is not None and facts[0][4] == "measured":
            return None, Pending(wanted[0], wanted[1], fields, facts)
        return self._row(fields, facts), None

    def _row(self, fields: tuple, facts: tuple) -> tuple:
        (created_at, org_id, provider, model, model_used, feature, task, status_code, error_type, error_origin,
         stream, t_start, t_first_byte, t_end, overhead_s, provider_unknown, rule_id, bytes_in, bytes_out,
         _, _, _, _) = fields
        (prompt, completion, cached, reasoning, source), note, served, written = facts
        created_at = _fromtimestamp(created_at, _UTC)
        cost = pricing_id = None
        partial = False
        routed = model_used
        if served is not None:
            model_used = served  # the snapshot the provider says served it (gpt-4o-mini-2024-07-18)
        # Model names come from JSON, where "\u0000" is legal; PostgreSQL text cannot hold NUL,
        # and one such row would cost its batch a row-by-row retry and itself. Stored marked.
        if model is not None and "\x00" in model:
            model = model.replace("\x00", "\ufffd")
        if model_used is not None and "\x00" in model_used:
            model_used = model_used.replace("\x00", "\ufffd")
        if source != "none":
            price = self._price_row(provider, model_used, routed, created_at)
            if price is not None:  # an unpriced model gets no cost, never a guess
                cost, partial = compute_cost(price, prompt_tokens=prompt, completion_tokens=completion,
                                             cached_tokens=cached, reasoning_tokens=reasoning,
                                             cache_write_tokens=written)
                pricing_id = price.id
        # RequestEvent.latency_ms and .ttfb_ms, from the fields at hand: the two properties cost
        # 0.15 µs a row. tests/unit/test_rows.py holds them equal.
        latency_ms = (t_end - t_start) * 1000.0
        ttfb_ms = None if t_first_byte is None else (t_first_byte - t_start) * 1000.0
        overhead_us = int(overhead_s * 1e6)
        if overhead_us > _INT32_MAX:
            overhead_us = _INT32_MAX
        return (
            created_at, org_id, provider, model, model_used, feature, task, status_code, error_type, error_origin,
            stream, latency_ms, ttfb_ms, overhead_us, prompt, completion, cached, reasoning, source,
            cost, partial, pricing_id, provider_unknown, rule_id, bytes_in, bytes_out, note,
        )

    def _price_row(self, provider: str, served: str | None, requested: str | None, at: datetime) -> PriceRow | None:
        """The price of the model that served the request, else of the one requested (an
        unpriced snapshot name, or a response naming a model Lectr does not know)."""
        price = self.pricing.lookup_utc(provider, served, at)
        if price is None and requested != served:
            price = self.pricing.lookup_utc(provider, requested, at)
        return price
