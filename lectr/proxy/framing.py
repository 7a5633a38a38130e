"""Framing facts the parser does not hand over: chunk sizes, heads to parse again, a stream's end.

Pure functions over bytes, used by ``protocol.py`` off the common path (chunked uploads,
upgrade requests, error messages) and by ``handler.py`` when a client hangs up.
"""

from __future__ import annotations

import re

import httptools

_TOO_BIG = 1 << 64  # more hex digits than llhttp accepts
_LATER_MINOR = re.compile(rb"HTTP/1\.[2-9]\r\n")


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line (without its CRLF) declares, in bytes; 0 if it is no size line.

    Leading zeros are allowed in any number; more than 16 significant hex digits is 2**64.
    Chunk extensions (``;name=value``) are ignored.
    """
    digits = line.split(b";", 1)[0].strip(b" \t\r").lstrip(b"0")
    if not digits:
        return 0
    if len(digits) > 16:
        return _TOO_BIG
    try:
        return int(digits, 16)
    except ValueError:
        return 0  # a trailer line after the last chunk, not a size


def head_without_upgrade(method: bytes, url: bytes, version: str, raw: list[tuple[bytes, bytes]]) -> bytes:
    """A request head rebuilt from its parsed parts, less its Upgrade field.

    Parsed again, it is an ordinary request: its body is read and it is answered in HTTP/1.1.
    """
    lines = [b"%s %s HTTP/%s\r\n" % (method, url, version.encode())]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in raw if name.lower() != b"upgrade"]
    lines.append(b"\r\n")
    return b"".join(lines)


def upgrade_tokens(value: bytes | None) -> set[bytes]:
    """The protocols an Upgrade field names, lower-cased and without versions' spacing."""
    return {t.strip().lower() for t in (value or b"").split(b",")} - {b""}


def header_name(lname: bytes) -> str:
    """``x-lectr-key`` as ``X-Lectr-Key``, for a message."""
    return "-".join(part.capitalize() for part in lname.decode("latin-1").split("-"))


def parser_reason(exc: httptools.HttpParserError) -> str:
    """What httptools said was wrong, cut to 200 characters."""
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def later_minor_as_http11(data: bytes, method: bytes, url: bytes) -> bytes | None:
    """``data`` from the start of its ``HTTP/1.x`` request line (x from 2 to 9), as ``HTTP/1.1``.

    RFC 9110 §2.5: a message of a later minor version of a major version the recipient speaks
    is processed as its highest minor version; llhttp refuses any but 1.0 and 1.1. None when the
    line (``method``, ``url`` as parsed so far, version) is not wholly in ``data``.
    """
    found = _LATER_MINOR.search(data)
    if found is None:
        return None
    line = method + b" " + url + b" "
    start = found.start() - len(line)
    if start < 0 or data[start:found.start()] != line:
        return None
    return line + b"HTTP/1.1\r\n" + data[found.end():]


# How an OpenAI-compatible event stream ends. The openai Python SDK closes its connection as soon
# as it has read this event, often before the provider's last chunk of framing has arrived.
_SSE_DONE = (b"data: [DONE]\n\n", b"data:[DONE]\n\n")


def ends_event_stream(chunks: list[bytes]) -> bool:
    """True when the relayed body ``chunks`` end with the event that ends a stream (so the client
    has had every byte of the answer): a hang-up after it is the client being done, not leaving."""
    if not chunks:
        return False
    end = (chunks[-1] if len(chunks) == 1 or len(chunks[-1]) >= 16 else chunks[-2] + chunks[-1])[-16:]
    return end.replace(b"\r\n", b"\n").endswith(_SSE_DONE)
