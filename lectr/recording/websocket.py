"""Usage from a relayed WebSocket session (OpenAI's Realtime API): the frames the server sent.

Cold path only. The hot path tunnels the bytes untouched and keeps a bounded capture of the
server → client direction; here those bytes are read as RFC 6455 frames (unmasked, as a
server's are; fragmented messages joined, control frames skipped), messages compressed
with permessage-deflate are inflated as RFC 7692 says, and the ``usage`` of every
``response.done`` event is added up: each reports one response's tokens, so a session's are
their sum. A capture cut short, or an extension other than permessage-deflate, gives no usage.

Such a session is one ``RequestEvent`` with ``status_code`` 101: ``response_chunks`` are the
frames the server sent, ``content_encoding`` the extensions its 101 agreed to
(``permessage-deflate; …``), ``bytes_in``/``bytes_out`` the bytes each way.
"""

from __future__ import annotations

import zlib

import orjson

_TEXT, _BINARY, _CONTINUATION = 1, 2, 0
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.2: removed by the sender, put back to inflate
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # per inflated message; a Realtime event is far smaller


def frame_messages(data: bytes, extensions: str | None):
    """The complete data messages in ``data`` (a server's frames from the start), as bytes.

    Raises ValueError for an extension it cannot undo; stops at a frame cut off at the end.
    """
    deflate, takeover = _deflate_params(extensions)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflate else None
    fragments: list[bytes] = []
    compressed = False
    at, end = 0, len(data)
    while at + 2 <= end:
        b0, b1 = data[at], data[at + 1]
        length = b1 & 0x7F
        at += 2
        if length == 126:
            if at + 2 > end:
                return
            length = int.from_bytes(data[at:at + 2], "big")
            at += 2
        elif length == 127:
            if at + 8 > end:
                return
            length = int.from_bytes(data[at:at + 8], "big")
            at += 8
        mask = None
        if b1 & 0x80:  # servers do not mask, but a masked frame is still readable
            if at + 4 > end:
                return
            mask = data[at:at + 4]
            at += 4
        if at + length > end:
            return
        payload = data[at:at + length]
        at += length
        if mask is not None:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        opcode = b0 & 0x0F
        if opcode >= 8:
            continue  # close, ping, pong: may come between fragments, never part of a message
        if opcode != _CONTINUATION:
            fragments = []
            compressed = bool(b0 & 0x40)  # RSV1 on a message's first frame
        fragments.append(payload)
        if not b0 & 0x80:  # FIN not set: more fragments follow
            continue
        message = b"".join(fragments)
        fragments = []
        if compressed:
            if inflater is None:
                raise ValueError("a compressed message without permessage-deflate")
            message = inflater.decompress(message + _DEFLATE_TAIL, MAX_MESSAGE_BYTES)
            if not takeover:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        yield message


def _deflate_params(extensions: str | None) -> tuple[bool, bool]:
    """(permessage-deflate negotiated, server keeps its context between messages)."""
    if not extensions:
        return False, True
    deflate, takeover = False, True
    for extension in extensions.split(","):
        name, *params = [p.strip().lower() for p in extension.split(";")]
        if name != "permessage-deflate":
            raise ValueError(f"unsupported WebSocket extension {name!r}")
        deflate = True
        takeover = "server_no_context_takeover" not in [p.split("=", 1)[0].strip() for p in params]
    return deflate, takeover


def realtime_usage(chunks: list[bytes] | None,
                   extensions: str | None) -> tuple[int | None, int | None, int | None, int | None, str] | None:
    """Summed ``response.done`` usage as (prompt, completion, cached, reasoning, "provider"), or None."""
    if not chunks:
        return None
    prompt = completion = cached = 0
    seen = False
    for message in frame_messages(b"".join(chunks), extensions):
        if b"response.done" not in message:
            continue  # audio deltas and the like: not worth parsing
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or doc.get("type") != "response.done":
            continue
        response = doc.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if not isinstance(usage, dict):
            continue
        seen = True
        prompt += _count(usage.get("input_tokens"))
        completion += _count(usage.get("output_tokens"))
        details = usage.get("input_token_details")
        if isinstance(details, dict):
            cached += _count(details.get("cached_tokens"))
    if not seen:
        return None
    return prompt, completion, cached, None, "provider"


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0
