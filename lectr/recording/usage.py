"""Token usage from a response's bytes: what the provider reported, else the completion counted.

Cold path only (the event writer, on the worker's loop between requests). Any body, however broken, yields a ``Usage``; nothing raises.
Besides the usage, ``response_values`` gives the model the response names (the snapshot that
served it) and a note when the usage could not be fully read: ``"undecodable"`` (a
content-encoding that could not be undone) or ``"truncated"`` (the body outgrew the capture
limit and only its head and tail were kept: a measured count is then a lower bound).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import NamedTuple

import orjson

from lectr.recording.body_scan import HEAD_SEARCH_BYTES, first_usage_object, last_usage_object, sse_json_documents
from lectr.recording.encodings import UndecodableBody, decode_body
from lectr.recording.generated import collect_generated
from lectr.recording.tokens import TokenCounter
from lectr.recording.websocket import realtime_usage
from lectr.providers.anthropic import CACHE_READ_FIELD, CACHE_WRITE_FIELD
from lectr.providers.gemini import gemini_billed_completion  # noqa: F401 (its old home; still read here)
from lectr.providers.registry import PROVIDERS, USAGE_HOLDERS


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

UNDECODABLE = "undecodable"
TRUNCATED = "truncated"
_NOTHING = (NO_USAGE, None, None, None)
_UNREADABLE = (NO_USAGE, UNDECODABLE, None, None)
_MODEL_NAME_MAX = 200
# The top-level "model" of a JSON body whose head alone was kept; providers put it near the start.
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
# About a millisecond of parsing between two yields of response_steps.
_EVENTS_PER_STEP = 200
# How an SSE body's first line starts: a field (data, event, id, retry) or a comment.
_SSE_STARTS = (b"d", b"e", b"i", b"r", b":")
_BOM = b"\xef\xbb\xbf"
# How much of a truncated body's head is read with its tail (an object cut at the capture's end).
_JOIN_BYTES = 64 * 1024
# Content type -> True (SSE), False (JSON) or None (neither); providers send a handful of them.
_MIME_KINDS: dict[str | None, bool | None] = {}
_MIME_KINDS_MAX = 256
_UNKNOWN = object()
# The providers whose reported counts are not what they bill (Gemini's thinking tokens), each
# with its own way from the reported counts to the billed completion.
_BILLED_COMPLETION = {name: p.billed_completion for name, p in PROVIDERS.items() if p.billed_completion}


def extract_usage(*, provider: str, model: str | None, stream: bool, status_code: int, content_type: str | None,
                  content_encoding: str | None, chunks: list[bytes] | None, counter: TokenCounter,
                  tail: list[bytes] | None = None) -> Usage:
    """The usage of one response from its captured body ``chunks`` (exactly as the provider sent them).

    ``tail`` is the last bytes of a body that outgrew the capture (``chunks`` is then its head).
    """
    usage = response_values(provider, model, stream, status_code, content_type, content_encoding, chunks, tail,
                            counter)[0]
    return usage if type(usage) is Usage else _new_usage(Usage, usage)


def usage_values(provider: str, model: str | None, stream: bool, status_code: int, content_type: str | None,
                 content_encoding: str | None, chunks: list[bytes] | None,
                 counter: TokenCounter) -> tuple[int | None, int | None, int | None, int | None, str]:
    """``extract_usage`` for the row builder: positional, and a plain tuple in ``Usage``'s field order."""
    return response_values(provider, model, stream, status_code, content_type, content_encoding, chunks, None,
                           counter)[0]


def response_values(provider: str, model: str | None, stream: bool, status_code: int, content_type: str | None,
                    content_encoding: str | None, chunks: list[bytes] | None, tail: list[bytes] | None,
                    counter: TokenCounter) -> tuple[tuple, str | None, str | None, int | None]:
    """``(usage, note, served_model, cache_write_tokens)``: the usage as a tuple in ``Usage``'s
    field order, why it is incomplete (``UNDECODABLE``, ``TRUNCATED`` or None), the model the
    response names (or None), and the tokens written to the prompt cache (Anthropic's
    ``cache_creation_input_tokens``, reported beside its ``input_tokens``), or None.

    ``model`` (the requested model) chooses the tokeniser when the response names none.
    """
    if chunks is None or status_code >= 400:
        return _NOTHING
    try:
        if status_code == 101:  # a relayed WebSocket session: content_encoding holds its extensions
            return realtime_usage(chunks, content_encoding) or NO_USAGE, None, None, None
        truncated = tail is not None
        try:
            body, tail_body = _readable(chunks, tail, content_encoding)
        except UndecodableBody:
            return _UNREADABLE
        if not body and not tail_body:
            return (NO_USAGE, TRUNCATED, None, None) if truncated else _NOTHING
        kind = _MIME_KINDS.get(content_type, _UNKNOWN)  # is_event_stream, inline: this runs for every event
        if kind is _UNKNOWN:
            kind = _remember_mime_kind(content_type)
        if kind is not True and body[:1] != b"{" and body[:64].lstrip()[:1] in _SSE_STARTS:
            # SSE sent with no content type, a generic one, or mislabelled as JSON (self-hosted servers)
            kind = True
        if stream if kind is None else kind:
            return _finish(_event_stream_steps(body, tail_body if truncated else None, provider, model, counter))
        if truncated:
            # The body's end holds its usage (OpenAI, Anthropic and the Responses API put it last);
            # a server that writes it before the content has it in the kept head.
            # The usage object may straddle the head's end and the tail's start: read them joined.
            found = last_usage_object(body[-_JOIN_BYTES:] + tail_body) or first_usage_object(body)
            values = _counts(found, provider)
            match = _MODEL_FIELD.search(body, 0, HEAD_SEARCH_BYTES)
            served = match.group(1).decode("utf-8", "replace") if match else None
            return (values, None, served, _cache_writes(found)) if values else (NO_USAGE, TRUNCATED, served, None)
        doc = orjson.loads(body)  # usage_from_json_body, inline for the same reason
        if type(doc) is not dict:
            return _NOTHING
        found = doc.get("usage")
        values = _counts(found, provider)
        served = doc.get("model")
        if type(served) is not str or not served or len(served) > _MODEL_NAME_MAX:
            served = None
        if values is None:
            return NO_USAGE, None, served, None
        return values, None, served, _cache_writes(found)
    except Exception:  # a broken body (or tokeniser) costs this event its usage, never the worker
        return _NOTHING


def response_steps(provider: str, model: str | None, stream: bool, status_code: int, content_type: str | None,
                   content_encoding: str | None, chunks: list[bytes] | None, tail: list[bytes] | None,
                   counter: TokenCounter) -> Generator[None, None, tuple]:
    """``response_values`` as a generator that yields every few hundred events while it parses a
    stream, and returns what ``response_values`` returns: for a caller that must not hold its
    event loop for the tenth of a second a stream of megabytes takes."""
    if chunks is None or status_code >= 400 or not is_event_stream(stream, content_type):
        return response_values(provider, model, stream, status_code, content_type, content_encoding, chunks, tail,
                               counter)
    try:
        try:
            body, tail_body = _readable(chunks, tail, content_encoding)
        except UndecodableBody:
            return _UNREADABLE
        if not body and not tail_body:
            return (NO_USAGE, TRUNCATED, None, None) if tail is not None else _NOTHING
        return (yield from _event_stream_steps(body, tail_body if tail is not None else None, provider, model,
                                               counter))
    except Exception:  # as response_values: never raises
        return _NOTHING


def _readable(chunks: list[bytes], tail: list[bytes] | None, content_encoding: str | None) -> tuple[bytes, bytes]:
    """The captured body decoded, and its kept tail (b"" when none, or when it cannot be decoded)."""
    body = b"".join(chunks)
    if content_encoding:
        body = decode_body(body, content_encoding)
    if body[:3] == _BOM:  # a byte-order mark some servers put before their JSON or SSE
        body = body[3:]
    if not content_encoding:
        return body, b"".join(tail) if tail is not None else b""
    # The tail of a compressed body cannot be decoded without what came before it.
    return body, b"".join(tail) if tail is not None and content_encoding.strip().lower() == "identity" else b""


def _finish(steps: Generator[None, None, tuple]) -> tuple:
    """Run ``steps`` to the end, without pausing; its result."""
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


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


def usage_from_json_body(body: bytes, provider: str) -> Usage:
    """The ``usage`` object of a complete JSON response, if it has one."""
    doc = orjson.loads(body)
    usage = usage_from_mapping(doc.get("usage"), provider) if isinstance(doc, dict) else None
    return usage or NO_USAGE


def usage_from_event_stream(body: bytes, provider: str, model: str | None, counter: TokenCounter) -> Usage:
    """The usage the stream reported; without one, the streamed completion counted."""
    usage = _finish(_event_stream_steps(body, None, provider, model, counter))[0]
    return usage if type(usage) is Usage else _new_usage(Usage, usage)


def _event_stream_steps(body: bytes, tail: bytes | None, provider: str, model: str | None,
                        counter: TokenCounter) -> Generator[None, None, tuple]:
    """``response_values`` of an SSE body (``tail``: the kept end of one that outgrew the capture),
    yielding every ``_EVENTS_PER_STEP`` events."""
    usage: tuple | None = None
    served: str | None = None
    written: int | None = None
    texts: list[str] = []
    if tail:
        # An event cut where the capture ended goes on in the tail (when nothing was dropped
        # between them): read the head's unfinished last event joined to the tail.
        end = max(body.rfind(b"\n\n"), body.rfind(b"\n\r\n") + 1, body.rfind(b"\r\r"))
        body, tail = body[:end + 2], body[end + 2:] + tail
    for part in (body, tail):
        if not part:
            continue
        for i, doc in enumerate(sse_json_documents(part), 1):
            if not i % _EVENTS_PER_STEP:
                yield
            if served is None:
                served = _served_model(doc)
            reported = _chunk_usage(doc)
            found = _counts(reported, provider)
            if found is not None:
                # Field by field, the last value reported: Gemini repeats its usage on several
                # chunks, Anthropic reports the input in message_start and the output in message_delta.
                usage = found if usage is None else _merge_counts(usage, found)
                writes = _cache_writes(reported)
                if writes is not None:
                    written = writes
            collect_generated(doc, texts)
    if usage is None and tail:
        # An event longer than the tail window (a Responses API response.completed repeats the
        # whole output) still ends with its usage.
        reported = last_usage_object(tail)
        usage = _counts(reported, provider)
        written = _cache_writes(reported)
    note = TRUNCATED if tail is not None else None
    if usage is not None:
        return usage, None, served, written
    text = "".join(texts)
    if not text:
        return NO_USAGE, note, served, None
    return (None, counter.count(text, served or model, provider), None, None, "measured"), note, served, None


def _merge_counts(earlier: tuple, later: tuple) -> tuple:
    return (*(new if new is not None else old for new, old in zip(later[:4], earlier[:4])), "provider")


def _served_model(doc: dict) -> str | None:
    """The model a stream chunk names: on the chunk itself, Anthropic's ``message_start``
    ``message``, or a Responses API event's ``response``."""
    name = doc.get("model")
    if type(name) is not str:
        for key in ("message", "response"):
            holder = doc.get(key)
            if type(holder) is dict and type(name := holder.get("model")) is str:
                break
        else:
            return None
    return name if 0 < len(name) <= _MODEL_NAME_MAX else None


def _chunk_usage(doc: dict) -> object:
    """A chunk's usage: the top-level ``usage``, else the one nested where a provider puts it
    (``USAGE_HOLDERS``: Groq's ``x_groq``, the Responses API's ``response``, Anthropic's ``message``)."""
    usage = doc.get("usage")
    if usage is not None:
        return usage
    for key in USAGE_HOLDERS:
        holder = doc.get(key)
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if usage is not None:
            return usage
    return None


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
    billed = _BILLED_COMPLETION.get(provider)
    if billed is not None:
        completion = billed(prompt, completion, _count(usage, "total_tokens"))
    elif provider == "anthropic" and cached and prompt is not None and type(get("prompt_tokens")) is int:
        # Anthropic's OpenAI-compatible endpoint counts cache reads inside prompt_tokens, as OpenAI
        # does; its rows keep Anthropic's native terms (input after the cache), as compute_cost reads them.
        prompt = max(prompt - cached, 0)
    if cached is None:
        # Anthropic's cache reads, reported beside its input_tokens (which leave them out, as
        # compute_cost knows): kept in the provider's own terms, like every count here.
        cached = _count(usage, CACHE_READ_FIELD)
    if prompt is None and completion is None and cached is None and reasoning is None:
        return None
    return prompt, completion, cached, reasoning, "provider"


def _cache_writes(usage: object) -> int | None:
    """Anthropic's ``cache_creation_input_tokens``: the prompt tokens written to its cache."""
    # Absent in every response but Anthropic's: one dict lookup decides, without _count's call.
    if type(usage) is not dict or usage.get(CACHE_WRITE_FIELD) is None:
        return None
    return _count(usage, CACHE_WRITE_FIELD)


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
