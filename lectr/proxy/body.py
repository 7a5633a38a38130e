"""What the hot path reads from a request body: the model and whether it asks for a stream.

Nothing else is read, and nothing is kept: the body goes upstream as it came.
"""

from __future__ import annotations

import orjson

_MULTIPART = b"multipart/form-data"
_MODEL_FIELD = b'name="model"'
# Below this size a full parse costs less than being clever.
SCAN_ABOVE = 8192
_SPACE = b" \t\r\n"


class BodyFacts:
    """``model`` and ``stream`` of one request body."""

    __slots__ = ("model", "stream")

    def __init__(self, model: str | None, stream: bool) -> None:
        self.model = model
        self.stream = stream


NO_FACTS = BodyFacts(None, False)


def read_body_facts(body: bytes, content_type: bytes | None) -> BodyFacts:
    """Find ``model`` and ``stream`` in a JSON body, or ``model`` in a multipart upload."""
    if not body:
        return NO_FACTS
    if content_type is not None and content_type[:19].lower() == _MULTIPART:
        return BodyFacts(_multipart_model(body), False)
    if body[:1] not in b"{ \t\r\n":
        return NO_FACTS
    if len(body) > SCAN_ABOVE:
        facts = _scan(body)
        if facts is not None:
            return facts
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return NO_FACTS  # not ours to judge: the provider answers malformed JSON itself
    if not isinstance(doc, dict):
        return NO_FACTS
    model = doc.get("model")
    return BodyFacts(model if isinstance(model, str) else None, doc.get("stream") is True)


def _multipart_model(body: bytes) -> str | None:
    # Audio transcription uploads carry the model as a form field, before or after the file.
    at = body.find(_MODEL_FIELD)
    if at < 0:
        return None
    start = body.find(b"\r\n\r\n", at)
    if start < 0:
        return None
    start += 4
    end = body.find(b"\r\n", start)
    if end < 0 or end - start > 256:
        return None
    return body[start:end].decode("utf-8", "replace").strip() or None


def _scan(body: bytes) -> BodyFacts | None:
    """``model`` and ``stream`` of a large body without parsing its prompt; None when unsure.

    Inside JSON strings quotes are escaped, so an unescaped ``"model"`` followed by a colon is
    a key. When it occurs exactly once it is the top-level one (a request has one), and the
    same holds for ``"stream"``. Anything less clear-cut goes to the full parser.
    """
    if body.count(b'"model"') != 1 or body.count(b'"stream"') > 1:
        return None
    model = _string_value(body, body.find(b'"model"') + 7)
    if model is None:
        return None
    at = body.find(b'"stream"')
    if at < 0:
        return BodyFacts(model, False)
    value = _value_start(body, at + 8)
    if value < 0:
        return None
    if body.startswith(b"true", value):
        return BodyFacts(model, True)
    if body.startswith(b"false", value) or body.startswith(b"null", value):
        return BodyFacts(model, False)
    return None


def _value_start(body: bytes, at: int) -> int:
    """Index of the value after ``: `` that follows a key ending at ``at``; -1 if not a key."""
    end = len(body)
    while at < end and body[at] in _SPACE:
        at += 1
    if at >= end or body[at] != 58:  # ":"
        return -1
    at += 1
    while at < end and body[at] in _SPACE:
        at += 1
    return at


def _string_value(body: bytes, at: int) -> str | None:
    start = _value_start(body, at)
    if start < 0 or start >= len(body) or body[start] != 34:  # '"'
        return None
    close = body.find(b'"', start + 1)
    if close < 0 or body.find(b"\\", start + 1, close) >= 0:
        return None  # an escape in a model name: let the parser decode it
    try:
        return body[start + 1:close].decode("utf-8")
    except UnicodeDecodeError:
        return None
