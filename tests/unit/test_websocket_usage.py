"""Usage from a server's WebSocket frames (the cold path's reading of a relayed Realtime session)."""

from __future__ import annotations

import os
import zlib

import orjson
import pytest

from lectr.recording.usage import usage_values
from lectr.recording.websocket import frame_messages, realtime_usage


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, rsv1: bool = False, mask: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        head = bytes([b0, (0x80 if mask else 0) | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, (0x80 if mask else 0) | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def done(n: int) -> bytes:
    return orjson.dumps({"type": "response.done", "response": {"id": f"r{n}", "usage": {
        "input_tokens": 100 * n, "output_tokens": 10 * n, "input_token_details": {"cached_tokens": n}}}})


DELTA = orjson.dumps({"type": "response.audio.delta", "delta": "A" * 70_000})  # a 64-bit length frame
CREATED = b'{"type":"session.created","session":{}}'


class Deflater:
    """permessage-deflate, as a server sends it (RFC 7692 §7.2.1)."""

    def __init__(self, takeover: bool) -> None:
        self.takeover = takeover
        self.c = zlib.compressobj(wbits=-zlib.MAX_WBITS)

    def __call__(self, message: bytes) -> bytes:
        if not self.takeover:
            self.c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = self.c.compress(message) + self.c.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        return data[:-4]


def plain_session() -> bytes:
    return frame(CREATED) + frame(DELTA) + frame(done(1)) + frame(b"", 9) + frame(done(2))


def fragmented_session() -> bytes:
    # response.done split over three frames, with a ping and a pong between the fragments.
    d = done(1)
    return (frame(CREATED) + frame(d[:10], fin=False) + frame(b"p", 9) + frame(d[10:20], 0, fin=False)
            + frame(b"", 10) + frame(d[20:], 0) + frame(done(2)))


def deflated_session(takeover: bool, fragmented: bool = False) -> bytes:
    deflate = Deflater(takeover)
    out = b""
    for message in (CREATED, DELTA, done(1), done(2), done(2)):  # repeats: context takeover matters
        data = deflate(message)
        if fragmented:
            out += frame(data[:5], rsv1=True, fin=False) + frame(data[5:], 0)
        else:
            out += frame(data, rsv1=True)
    return out


CASES = [  # (name, bytes, extensions, expected usage)
    ("plain", plain_session(), None, (300, 30, 3, None, "provider")),
    ("masked", frame(done(1), mask=True) + frame(done(2), mask=True), None, (300, 30, 3, None, "provider")),
    ("fragmented", fragmented_session(), None, (300, 30, 3, None, "provider")),
    ("deflate, context kept", deflated_session(True), "permessage-deflate", (500, 50, 5, None, "provider")),
    ("deflate, no context takeover", deflated_session(False),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover", (500, 50, 5, None, "provider")),
    ("deflate, fragmented", deflated_session(True, fragmented=True),
     "permessage-deflate; server_max_window_bits=15", (500, 50, 5, None, "provider")),
    ("no response.done", frame(CREATED) + frame(DELTA), None, None),
    ("cut in the middle of a frame", plain_session()[:-7], None, (100, 10, 1, None, "provider")),
]


@pytest.mark.parametrize("name,data,extensions,expected", CASES, ids=[c[0] for c in CASES])
def test_usage_is_the_sum_of_response_done_events(name, data, extensions, expected):
    assert realtime_usage([data[:100], data[100:]], extensions) == expected


def test_every_message_is_read_whole_and_in_order():
    messages = list(frame_messages(fragmented_session(), None))
    assert messages == [CREATED, done(1), done(2)]
    assert list(frame_messages(deflated_session(True), "permessage-deflate")) == \
        [CREATED, DELTA, done(1), done(2), done(2)]


def test_an_unknown_extension_gives_no_usage_rather_than_a_wrong_one():
    with pytest.raises(ValueError):
        realtime_usage([plain_session()], "x-webkit-deflate-frame")
    assert usage_values("openai", "gpt-realtime", False, 101, None, "x-webkit-deflate-frame",
                        [plain_session()], None) == (None, None, None, None, "none")


def test_the_row_builder_reads_a_101_as_a_websocket_session():
    assert usage_values("openai", "gpt-realtime", False, 101, None, None, [plain_session()], None) == \
        (300, 30, 3, None, "provider")
    assert usage_values("openai", "gpt-realtime", False, 101, None, None, None, None)[4] == "none"
