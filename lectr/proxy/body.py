"""What the hot path reads from a request body: the model and whether it asks for a stream.

Nothing else is read, and nothing is kept: the body goes upstream as it came.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

_MULTIPART = b"multipart/form-data"
_MODEL_FIELD = b'name="model"'


class BodyFacts(NamedTuple):
    """``model`` and ``stream`` of one request body."""

    model: str | None
    stream: bool


NO_FACTS = BodyFacts(None, False)
_new_facts = tuple.__new__  # BodyFacts without its Python-level __new__


def read_body_facts(body: bytes, content_type: bytes | None) -> BodyFacts:
    """Find ``model`` and ``stream`` in a JSON body, or ``model`` in a multipart upload."""
    return _new_facts(BodyFacts, body_facts(body, content_type))


def body_facts(body: bytes, content_type: bytes | None) -> tuple[str | None, bool]:
    """``read_body_facts`` as a plain (model, stream) tuple: what ``decide`` reads per request."""
    if not body:
        return NO_FACTS
    if content_type is not None and content_type[:19].lower() == _MULTIPART:
        return _multipart_model(body), False
    if body[:1] not in b"{ \t\r\n":
        return NO_FACTS
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return NO_FACTS  # not ours to judge: the provider answers malformed JSON itself
    if not isinstance(doc, dict):
        return NO_FACTS
    model = doc.get("model")
    return (model if isinstance(model, str) else None), doc.get("stream") is True


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
