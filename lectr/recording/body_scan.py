"""Finding JSON in a response's captured bytes without reading the body as one document.

Cold path only, for ``usage``: the data of each event of an SSE body, and a complete ``"usage"``
object in a fragment of JSON (the head or the tail a body past the capture limit keeps, where an
object may be cut). Nothing here raises on broken input; what cannot be read is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson

# How far into a body's kept head a field is looked for; providers put theirs near the start.
HEAD_SEARCH_BYTES = 64 * 1024
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')


def sse_json_documents(body: bytes) -> Iterator[dict]:
    """Each event's ``data`` parsed as a JSON object; ``[DONE]`` and unparsable events are skipped."""
    if b"\r" in body:  # two copies of a body of megabytes, for the few servers that send CRs
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for event in body.split(b"\n\n"):
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


def last_usage_object(body: bytes) -> dict | None:
    """The last complete ``"usage": {...}`` object in ``body`` (a JSON fragment), or None."""
    starts = [m.end() - 1 for m in _USAGE_KEY.finditer(body)]
    for start in reversed(starts):
        end = _object_end(body, start)
        if end is None:
            continue
        try:
            doc = orjson.loads(body[start:end])
        except orjson.JSONDecodeError:
            continue
        if type(doc) is dict:
            return doc
    return None


def first_usage_object(body: bytes) -> dict | None:
    """The first complete ``"usage": {...}`` object in the first ``HEAD_SEARCH_BYTES`` of ``body``."""
    match = _USAGE_KEY.search(body, 0, HEAD_SEARCH_BYTES)
    end = _object_end(body, match.end() - 1) if match else None
    if end is None:
        return None
    try:
        doc = orjson.loads(body[match.end() - 1:end])
    except orjson.JSONDecodeError:
        return None
    return doc if type(doc) is dict else None


def _object_end(body: bytes, start: int) -> int | None:
    """The index just past the JSON object opening at ``start``, or None if it does not close."""
    depth = 0
    in_string = escaped = False
    for i in range(start, min(len(body), start + 65536)):  # a usage object is a few hundred bytes
        c = body[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
    return None
