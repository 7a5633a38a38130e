"""The event a finished request leaves behind: metadata and references, never text."""

from __future__ import annotations

from typing import NamedTuple

# How much of a body's end is kept once it outgrows the capture limit: a stream's usage chunk,
# or the usage object closing a JSON body, is a few hundred bytes.
CAPTURE_TAIL_BYTES = 64 * 1024


class RequestEvent(NamedTuple):
    """One request's metadata, built by the hot path and read by the cold path.

    Times are ``time.perf_counter()`` readings except ``created_at`` (Unix seconds).
    ``response_chunks`` are the response body bytes exactly as the provider sent them
    (still compressed if it compressed them), kept by reference for usage parsing, up to the
    capture limit. A longer body keeps its head there and its last bytes (at most
    ``CAPTURE_TAIL_BYTES`` plus one read) in ``response_tail``, which is otherwise ``None``, so
    usage reported at the end of a long response is still read. No prompt text, no key.
    """

    org_id: int
    created_at: float
    provider: str
    model: str | None
    model_used: str | None
    feature: str
    task: str | None
    status_code: int
    error_type: str | None
    error_origin: str | None  # "lectr" | "provider" | None
    stream: bool
    t_start: float
    t_first_byte: float | None
    t_end: float
    overhead_s: float
    provider_unknown: bool
    rule_id: int | None
    bytes_in: int
    bytes_out: int
    content_type: str | None
    content_encoding: str | None
    response_chunks: list[bytes] | None
    response_tail: list[bytes] | None = None

    @property
    def latency_ms(self) -> float:
        return (self.t_end - self.t_start) * 1000.0

    @property
    def ttfb_ms(self) -> float | None:
        if self.t_first_byte is None:
            return None
        return (self.t_first_byte - self.t_start) * 1000.0
