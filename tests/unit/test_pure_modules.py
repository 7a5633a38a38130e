"""Unit tests that pin the pure request-path modules down (headers, body facts, detection),
written to kill the mutants ``make mutation`` found surviving."""

from __future__ import annotations

import pytest

from lectr.providers import registry
from lectr.providers.registry import ModelRegistry
from lectr.proxy import headers
from lectr.proxy.body import read_body_facts
from lectr.proxy.headers import ClientHeaders, parse_response_head

MULTIPART = b"multipart/form-data; boundary=b"


# -- detection ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model, provider", [
    ("o1", "openai"), ("o3", "openai"), ("o1-mini", "openai"), ("o3-mini-2025-01-31", "openai"),
    ("o4-mini", "openai"), ("omni-moderation-latest", "openai"),
    # An "o1"/"o3" prefix that is not the o-series is nobody's (not OpenAI's by accident)...
    ("o1x", None), ("o3pro", None), ("ollama-3", None),
    # ...unless another rule claims it.
    ("o3pro-versatile", "groq"),
    ("models/gemini-2.5-flash", "gemini"), ("MODELS/Gemini-2.5-Pro", "gemini"), ("Claude-Opus-4", "anthropic"),
    ("custom-8192", "groq"), ("custom-32768", "groq"), ("custom-instant", "groq"), ("my-model", None),
])
def test_detection_edges(model, provider):
    assert registry._detect_uncached(model) == provider
    remembered = ModelRegistry()
    assert remembered.detect(model) == provider
    assert remembered.detect(model) == provider  # the remembered answer is the same answer


def test_detection_memo_stops_at_its_limit():
    memo = ModelRegistry()
    for i in range(registry._MEMO_LIMIT + 10):
        memo.detect(f"gpt-{i}")
    assert len(memo._memo) == registry._MEMO_LIMIT
    assert memo.detect(f"gpt-{registry._MEMO_LIMIT + 5}") == "openai"


# -- body facts ----------------------------------------------------------------------------------

def _form(*parts: bytes) -> bytes:
    return b"".join(b"--b\r\nContent-Disposition: form-data; " + p + b"\r\n" for p in parts) + b"--b--"


@pytest.mark.parametrize("body, model", [
    (_form(b'name="model"\r\n\r\nwhisper-1'), "whisper-1"),  # first in the body
    (_form(b'name="file"; filename="a.wav"\r\n\r\nRIFF....', b'name="model"\r\n\r\n  whisper-1  '), "whisper-1"),
    (_form(b'name="model"\r\n\r\nfirst', b'name="model"\r\n\r\nsecond'), "first"),  # the first field counts
    (b'name="model"\r\n\r\nat-the-very-start\r\n', "at-the-very-start"),
    (_form(b'name="model"\r\n\r\n' + b"m" * 256), "m" * 256),
    (_form(b'name="model"\r\n\r\n' + b"m" * 257), None),  # longer than any model name
    (_form(b'name="model"\r\n\r\n   '), None),
    (_form(b'name="file"\r\n\r\nx'), None),
    (b'--b\r\nContent-Disposition: form-data; name="model"\r\nno blank line', None),
    (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nno line end', None),
    (_form(b'name="model"\r\n\r\nwhisper-\xff'), "whisper-\ufffd"),
])
def test_multipart_model(body, model):
    assert read_body_facts(body, MULTIPART).model == model
    assert read_body_facts(body, b"Multipart/Form-Data; boundary=b").model == model
    assert read_body_facts(body, MULTIPART).stream is False


def test_model_field_ends_at_its_own_line_end_not_the_bodys_last():
    body = _form(b'name="model"\r\n\r\nwhisper-1', b'name="prompt"\r\n\r\nhello')
    assert read_body_facts(body, MULTIPART).model == "whisper-1"


@pytest.mark.parametrize("body, model, stream", [
    (b' \t\r\n{"model": "gpt-4o", "stream": true}', "gpt-4o", True),
    (b'{"model": "gpt-4o", "stream": "true"}', "gpt-4o", False),
    (b'{"model": 5, "stream": 1}', None, False),
    (b'["gpt-4o"]', None, False),
    (b'XX{"model": "gpt-4o"}', None, False),
])
def test_json_body_facts(body, model, stream):
    assert tuple(read_body_facts(body, b"application/json")) == (model, stream)


# -- request headers -----------------------------------------------------------------------------

@pytest.fixture()
def cold_spellings():
    """No remembered spellings: every name goes through the classification itself."""
    headers._KIND_BY_SPELLING.clear()
    yield
    headers._KIND_BY_SPELLING.clear()


def test_each_header_lands_in_its_field(cold_spellings):
    for _ in range(2):  # once classified from scratch, once from the remembered spelling
        h = ClientHeaders([(b"X-LECTR-KEY", b" k "), (b"x-Lectr-Feature", b"f"), (b"X-Lectr-Task", b"t"),
                           (b"X-Lectr-Provider", b"groq"), (b"AUTHORIZATION", b"Bearer s"),
                           (b"Content-Type", b"application/json"), (b"Content-Length", b"12"),
                           (b"EXPECT", b"100-Continue"), (b"X-Lectr-Unknown", b"u"), (b"Proxy-Authorization", b"p"),
                           (b"HOST", b"h"), (b"X-Custom", b"c")])
        assert (h.lectr_key, h.feature, h.task, h.provider, h.authorization, h.content_type, h.content_length,
                h.expect) == (b"k", b"f", b"t", b"groq", b"Bearer s", b"application/json", b"12", b"100-Continue")
        assert h.expects_continue()
        assert b"".join(h.forward) == b"\r\nContent-Type: application/json\r\nX-Custom: c"


def test_absent_headers_are_none(cold_spellings):
    h = ClientHeaders([(b"X-Other", b"1")])
    assert (h.lectr_key, h.feature, h.task, h.provider, h.authorization, h.content_type, h.content_length,
            h.expect) == (None,) * 8
    assert not h.expects_continue() and h.task_tag() is None and h.feature_tag() == "untagged"


def test_spellings_are_remembered_only_when_short_and_within_bounds(cold_spellings):
    short = b"X-" + b"a" * (headers._SPELLING_MAX_BYTES - 2)
    ClientHeaders([(short, b"1"), (short + b"b", b"2")])
    assert headers._KIND_BY_SPELLING == {short: headers._FORWARD}
    headers._KIND_BY_SPELLING.clear()
    for i in range(headers._SPELLINGS_MAX):
        ClientHeaders([(b"X-N%d" % i, b"1")])
    assert len(headers._KIND_BY_SPELLING) == headers._SPELLINGS_MAX
    ClientHeaders([(b"X-Lectr-One-More", b"1")])  # a full table starts over
    assert headers._KIND_BY_SPELLING == {b"X-Lectr-One-More": headers._LECTR_OTHER}


def test_tags():
    def h(**kw: bytes) -> ClientHeaders:
        return ClientHeaders([(b"X-Lectr-" + k.title().encode(), v) for k, v in kw.items()])
    assert h(feature=b"  search \t").feature_tag() == "search"
    assert h(feature=b"   ").feature_tag() == "untagged"
    assert h(feature=b"caf\xc3\xa9 \xff").feature_tag() == "caf\u00e9 \ufffd"
    assert h(task=b" classification ").task_tag() == "classification"
    assert h(task=b"   ").task_tag() is None
    assert h(task=b"t" * 150).task_tag() == "t" * 100
    assert h(task=b"bad \xff").task_tag() == "bad \ufffd"


# -- response heads ------------------------------------------------------------------------------

@pytest.mark.parametrize("codings, chunked", [
    (b"chunked", True), (b"gzip,chunked", True), (b"gzip, br, chunked", True), (b"chunked, gzip", False),
    (b"gzip, chunked, br", False),
])
def test_chunked_is_the_last_coding(codings, chunked):
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + codings + b"\r\n").chunked is chunked


def test_head_fields_take_the_last_value_trimmed_of_blanks_only():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX: y\r\n"
                               b"content-type:\t application/json; charset=utf-8 \t\r\n"
                               b"Content-Encoding: \x0bgzip\r\n")
    assert head.content_type == "application/json; charset=utf-8"
    assert head.content_encoding == "\x0bgzip"  # only spaces and tabs are blanks in HTTP
    assert head.relay.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")


def test_a_hop_field_first_keeps_the_status_line_whole():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-A: 1\r\n")
    assert head.relay == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"


def test_head_field_values_keep_every_other_character():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: X-vendor/thingX\r\nContent-Encoding: Xz\r\n")
    assert (head.content_type, head.content_encoding) == ("X-vendor/thingX", "Xz")
