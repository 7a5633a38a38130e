"""Token usage from a response's bytes: what the provider reported, else the completion counted.

Cold path only (a worker thread). Any body, however broken, yields a ``Usage``; nothing raises.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import NamedTuple

import brotli
import orjson

from lectr.events.tokens import TokenCounter
from lectr.events.websocket import realtime_usage


class Usage(NamedTuple):
    """Token counts of one response and where they come from: "provider", "measured" or "none"."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    source: str


NO_USAGE = Usage(None, None, None, None, "none")
# Usage was a frozen dataclass, whose __init__ alone took 0.5 µs of every row. The row builder
# now gets plain tuples in Usage's field order; the public functions wrap them with this.
_new_usage = tuple.__new__

# A capped body can still inflate enormously (a compression bomb); no real usage body comes near this.
MAX_DECODED_BYTES = 64 * 1024 * 1024
# Strings in a streamed delta that the model generated and the provider bills as completion.
_DELTA_TEXT_FIELDS = ("content", "reasoning_content", "refusal")
# Content type -> True (SSE), False (JSON) or None (neither); providers send a handful of them.
_MIME_KINDS: dict[str | None, bool | None] = {}
_MIME_KINDS_MAX = 256
_UNKNOWN = object()


def extract_usage(*, provider: str, model: str | None, stream: bool, status_code: int, content_type: str | None,
                  content_encoding: str | None, chunks: list[bytes] | None, counter: TokenCounter) -> Usage:
    """The usage of one response from its captured body ``chunks`` (exactly as the provider sent them)."""
    usage = usage_values(provider, model, stream, status_code, content_type, content_encoding, chunks, counter)
    return usage if type(usage) is Usage else _new_usage(Usage, usage)


def usage_values(provider: str, model: str | None, stream: bool, status_code: int, content_type: str | None,
                 content_encoding: str | None, chunks: list[bytes] | None,
                 counter: TokenCounter) -> tuple[int | None, int | None, int | None, int | None, str]:
    """``extract_usage`` for the row builder: positional, and a plain tuple in ``Usage``'s field order."""
    if chunks is None or status_code >= 400:
        return NO_USAGE
    try:
        if status_code == 101:  # a relayed WebSocket session: content_encoding holds its extensions
            return realtime_usage(chunks, content_encoding) or NO_USAGE
        body = b"".join(chunks)
        if content_encoding:
            body = decode_body(body, content_encoding)
        if not body:
            return NO_USAGE
        kind = _MIME_KINDS.get(content_type, _UNKNOWN)  # is_event_stream, inline: this runs for every event
        if kind is _UNKNOWN:
            kind = _remember_mime_kind(content_type)
        if stream if kind is None else kind:
            return usage_from_event_stream(body, provider, model, counter)
        doc = orjson.loads(body)  # usage_from_json_body, inline for the same reason
        values = _counts(doc.get("usage"), provider) if isinstance(doc, dict) else None
        return values or NO_USAGE
    except Exception:  # a broken body (or tokeniser) costs this event its usage, never the worker
        return NO_USAGE


def is_event_stream(stream: bool, content_type: str | None) -> bool:
    """Whether the body is SSE: by its content type when it names one, else by the request's ``stream``."""
    kind = _MIME_KINDS.get(content_type, _UNKNOWN)
    if kind is _UNKNOWN:
        kind = _remember_mime_kind(content_type)
    return stream if kind is None else kind


def _remember_mime_kind(content_type: str | None) -> bool | None:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    kind = True if mime == "text/event-stream" else False if mime.endswith("json") else None
    if len(_MIME_KINDS) < _MIME_KINDS_MAX:
        _MIME_KINDS[content_type] = kind
    return kind


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo ``content_encoding`` (gzip, deflate, br, identity; a list is undone last-applied first)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):
        body = _decode_one(body, coding)
    return body


def _decode_one(body: bytes, coding: str) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS)
        except zlib.error:  # many servers send raw deflate despite the RFC's zlib wrapper
            return _inflate(body, -zlib.MAX_WBITS)
    if coding == "br":
        return _unbrotli(body)
    if coding == "identity":
        return body
    raise ValueError(f"unsupported content-encoding {coding!r}")


def _inflate(body: bytes, wbits: int) -> bytes:
    # A streaming decompressor also yields what it can of a truncated body (an interrupted stream).
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, MAX_DECODED_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("decoded body too large")
    return out


def _unbrotli(body: bytes) -> bytes:
    out = brotli.Decompressor().process(body, output_buffer_limit=MAX_DECODED_BYTES)
    if len(out) >= MAX_DECODED_BYTES:
        raise ValueError("decoded body too large")
    return out


def usage_from_json_body(body: bytes, provider: str) -> Usage:
    """The ``usage`` object of a complete JSON response, if it has one."""
    doc = orjson.loads(body)
    usage = usage_from_mapping(doc.get("usage"), provider) if isinstance(doc, dict) else None
    return usage or NO_USAGE


def usage_from_event_stream(body: bytes, provider: str, model: str | None, counter: TokenCounter) -> Usage:
    """The last usage the stream reported; without one, the streamed completion text counted."""
    last_usage: Usage | None = None
    texts: list[str] = []
    for doc in _sse_json_documents(body):
        # Keep the last, never sum: Gemini may repeat the usage on several chunks.
        last_usage = usage_from_mapping(_chunk_usage(doc), provider) or last_usage
        texts.extend(_delta_texts(doc))
    if last_usage is not None:
        return last_usage
    text = "".join(texts)
    if not text:
        return NO_USAGE
    return Usage(None, counter.count(text, model, provider), None, None, "measured")


def _sse_json_documents(body: bytes) -> Iterator[dict]:
    """Each event's ``data`` parsed as a JSON object; ``[DONE]`` and unparsable events are skipped."""
    normalised = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for event in normalised.split(b"\n\n"):
        data = b"\n".join(_field_value(line) for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data.strip() or data.strip() == b"[DONE]":
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:  # e.g. the last event of an interrupted stream
            continue
        if isinstance(doc, dict):
            yield doc


def _field_value(line: bytes) -> bytes:
    value = line[5:]  # after "data:"; the SSE spec strips one optional leading space
    return value[1:] if value.startswith(b" ") else value


def _chunk_usage(doc: dict) -> object:
    """A chunk's usage: the top-level ``usage``, else Groq's ``x_groq.usage`` (sent on the last chunk),
    else the ``response.usage`` of an OpenAI Responses API event."""
    for holder in (doc, doc.get("x_groq"), doc.get("response")):
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if usage is not None:
            return usage
    return None


def _delta_texts(doc: dict) -> Iterator[str]:
    """The generated strings in a chunk's deltas; Azure sends chunks with ``choices: []`` or no delta."""
    choices = doc.get("choices")
    if not isinstance(choices, list):
        return
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for field in _DELTA_TEXT_FIELDS:
            value = delta.get(field)
            if isinstance(value, str):
                yield value


def usage_from_mapping(usage: object, provider: str) -> Usage | None:
    """A provider ``usage`` object as ``Usage``; None when it is not an object or holds no count."""
    values = _counts(usage, provider)
    return None if values is None else _new_usage(Usage, values)


def _counts(usage: object, provider: str) -> tuple[int | None, int | None, int | None, int | None, str] | None:
    """``usage_from_mapping`` as a plain tuple, which is cheaper to build than a ``Usage``."""
    if not isinstance(usage, dict):
        return None
    # The usual case (OpenAI names holding plain non-negative ints) is read inline; anything
    # else falls back to the full search, which gives the same answer for the usual case too.
    # OpenAI names first, then the input/output names of Anthropic's native API and OpenAI's Responses API.
    get = usage.get
    prompt = get("prompt_tokens")
    if type(prompt) is not int or prompt < 0:
        prompt = _first_count(usage, ("prompt_tokens",), ("input_tokens",))
    completion = get("completion_tokens")
    if type(completion) is not int or completion < 0:
        completion = _first_count(usage, ("completion_tokens",), ("output_tokens",))
    details = get("prompt_tokens_details")
    cached = details.get("cached_tokens") if type(details) is dict else None
    if type(cached) is not int or cached < 0:
        cached = _first_count(usage, ("prompt_tokens_details", "cached_tokens"),
                              ("input_tokens_details", "cached_tokens"))
    details = get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if type(details) is dict else None
    if type(reasoning) is not int or reasoning < 0:
        reasoning = _first_count(usage, ("completion_tokens_details", "reasoning_tokens"),
                                 ("output_tokens_details", "reasoning_tokens"))
    if provider == "gemini":
        completion = gemini_billed_completion(prompt, completion, _count(usage, "total_tokens"))
    if prompt is None and completion is None and cached is None and reasoning is None:
        return None
    return prompt, completion, cached, reasoning, "provider"


def gemini_billed_completion(prompt: int | None, completion: int | None, total: int | None) -> int | None:
    """Gemini's billed output tokens, given its reported prompt, completion and total."""
    # Gemini bills thinking tokens as output but leaves them out of completion_tokens (only total has them).
    if prompt is None or total is None or total <= prompt + (completion or 0):
        return completion
    return total - prompt


def _first_count(mapping: dict, *paths: tuple[str, ...]) -> int | None:
    for path in paths:
        value = _count(mapping, *path)
        if value is not None:
            return value
    return None


def _count(mapping: dict, *path: str) -> int | None:
    """The non-negative integer at ``path`` in nested objects, or None (absent, null or not a count)."""
    value: object = mapping
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
