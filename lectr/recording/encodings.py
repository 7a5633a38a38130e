"""Undoing a response's ``Content-Encoding``: every coding a client can negotiate with a provider.

Cold path only. Lectr forwards the client's ``Accept-Encoding``, so a provider may answer in any
coding the client named: gzip (and its old alias x-gzip), deflate (zlib-wrapped, or raw as many
servers send it), br, zstd, identity, or several stacked. A body that cannot be read raises
``UndecodableBody``, which the row builder records and the metrics count.
"""

from __future__ import annotations

import io
import zlib

import brotli
import zstandard

# A capped body can still inflate enormously (a compression bomb); no real usage body comes near this.
MAX_DECODED_BYTES = 64 * 1024 * 1024
ENCODING_LABEL_MAX = 32


class UndecodableBody(ValueError):
    """A body in a coding Lectr does not know, corrupt, or inflating past ``MAX_DECODED_BYTES``."""


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo ``content_encoding``; a list (``gzip, br``) is undone last-applied first.

    Raises ``UndecodableBody``. An interrupted body yields what could be decoded of it.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):
        try:
            body = _decode_one(body, coding)
        except UndecodableBody:
            raise
        except Exception as exc:  # zlib.error, brotli.error, zstandard.ZstdError: all one outcome
            raise UndecodableBody(f"{coding}: {exc}") from None
    return body


def encoding_label(content_encoding: str | None) -> str:
    """``content_encoding`` as a bounded metric label (a provider could send anything there)."""
    label = (content_encoding or "").strip().lower().replace(" ", "")
    return label[:ENCODING_LABEL_MAX] or "identity"


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
    if coding == "zstd":
        return _unzstd(body)
    if coding == "identity":
        return body
    raise UndecodableBody(f"unsupported content-encoding {coding!r}")


def _inflate(body: bytes, wbits: int) -> bytes:
    # A streaming decompressor also yields what it can of a truncated body (an interrupted stream).
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, MAX_DECODED_BYTES)
    if inflater.unconsumed_tail:
        raise UndecodableBody("decoded body too large")
    return out


def _unbrotli(body: bytes) -> bytes:
    out = brotli.Decompressor().process(body, output_buffer_limit=MAX_DECODED_BYTES)
    if len(out) >= MAX_DECODED_BYTES:
        raise UndecodableBody("decoded body too large")
    return out


def _unzstd(body: bytes) -> bytes:
    # A stream reader bounds the output even when the frame does not state its size (a streamed
    # response's never does), and reads on across frames, as a client does.
    parts: list[bytes] = []
    size = 0
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
        while part := reader.read(MAX_DECODED_BYTES + 1 - size):
            parts.append(part)
            size += len(part)
            if size > MAX_DECODED_BYTES:
                raise UndecodableBody("decoded body too large")
    return b"".join(parts)
