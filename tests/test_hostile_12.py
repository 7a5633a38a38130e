"""Issue 12, attacked again with new variants of each kind, over raw sockets against a real
``lectr serve`` whose every provider is a raw-logging upstream (tests/rawupstream.py)."""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from tests.conftest import PROVIDER_PREFIXES, create_org, lectr_env, start_lectr, stop_lectr, wait_for
from tests.httpcheck import connect, exchange, is_closed, read_replies
from tests.rawupstream import RESET, RawUpstream, json_reply

HEADER_TIMEOUT, IDLE_TIMEOUT = 2.0, 6.0


CHUNKED_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTRANSFER-encoding:  chunked \r\n"
                 b"X-After: 1\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")


def behave(request):
    scripted = request.header(b"x-test")
    if scripted == b"chunked":
        return CHUNKED_REPLY
    if scripted == b"reset":
        return RESET
    return json_reply()


@pytest.fixture(scope="module")
def upstream():
    with RawUpstream(behave) as up:
        yield up


@pytest.fixture(scope="module")
def served(database_url, mock, tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("hostile")
    env = lectr_env(database_url, mock, tmp, LECTR_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                    LECTR_IDLE_TIMEOUT=str(IDLE_TIMEOUT), LECTR_UPSTREAM_READ_TIMEOUT="5",
                    LECTR_MAX_BODY_BYTES="100000",
                    **{f"LECTR_UPSTREAM_{p.upper()}": upstream.url(prefix) for p, prefix in PROVIDER_PREFIXES.items()})
    key = create_org(env, "hostile")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def raw_post(key: str, target: str, model: str = "gpt-4o-mini", *, extra: str = "", body: bytes | None = None,
             method: str = "POST", version: str = "1.1") -> bytes:
    if body is None:
        body = orjson.dumps({"model": model, "messages": []})
    return (f"{method} {target} HTTP/{version}\r\nHost: lectr\r\nX-Lectr-Key: {key}\r\n"
            f"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def send(served, raw: bytes, methods=("POST",)):
    return exchange(served.port, raw, list(methods))


def code(reply) -> str:
    return orjson.loads(reply.body)["error"]["code"]


def forwarded_since(upstream, before):
    return upstream.requests[before:]


# -- paths (12.3) ---------------------------------------------------------------------------

ODD_PATHS = [
    "/v1/%u002e%u002e/escaped", "/v1/%U002E%U002E/x", "/v1/%c0%ae%c0%ae/escaped", "/v1/%C0%AE%C0%AE/x",
    "/v1/%e0%80%ae%e0%80%ae/x", "/v1/%c1%9c/x", "/v1/..%c0%af/x", "/v1/%2e%2",  "/v1/%zz/x", "/v1/a%/x",
    "/v1/%ef%bc%8e%ef%bc%8e/x",
]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_odd_encodings_never_leave_the_base(served, upstream, path):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], path))
    assert reply.status == 400, (path, reply.status)
    assert code(reply) == "invalid_path"
    assert not forwarded_since(upstream, before)


def test_raw_non_ascii_that_normalises_to_dots_is_refused(served, upstream):
    before = len(upstream.requests)
    raw = raw_post(served.extra["key"], "/v1/PLACEHOLDER/x").replace(b"PLACEHOLDER", "\uff0e\uff0e".encode())
    [reply] = send(served, raw)
    assert reply.status == 400
    assert not forwarded_since(upstream, before)


@pytest.mark.parametrize("target,expected", [
    ("/v1/chat/completions?next=../../x", b"/openai/v1/chat/completions?next=../../x"),
    ("/v1/chat/completions?p=%2e%2e%2f", b"/openai/v1/chat/completions?p=%2e%2e%2f"),
    ("/v1/./chat/completions", b"/openai/v1/chat/completions"),
])
def test_queries_are_left_alone_and_paths_resolved(served, upstream, target, expected):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], target))
    assert reply.status == 200
    [seen] = forwarded_since(upstream, before)
    assert seen.target == expected


@pytest.mark.parametrize("target", [
    "http://evil.example/v1/chat/completions", "http://127.0.0.1:1/v1/chat/completions",
    "evil.example:443", "//evil.example/v1/chat/completions", "*",
])
def test_the_client_never_chooses_the_upstream_host(served, upstream, target):
    before = len(upstream.requests)
    replies = send(served, raw_post(served.extra["key"], target))
    assert replies[0].status >= 400
    for seen in forwarded_since(upstream, before):
        assert seen.target.startswith(b"/openai/v1/") and b"evil" not in seen.raw


def test_a_fragment_cannot_hide_dot_segments(served, upstream):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], "/v1/x#/../../../escaped"))
    for seen in forwarded_since(upstream, before):
        assert seen.target.startswith(b"/openai/v1/")
    assert reply.status in (200, 400)


# -- repeated X-Lectr-* (12.9) ---------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    "X-Lectr-Key: {key}\r\n", "x-lectr-key: {key}\r\n", "X-LECTR-KEY: {key}\r\n",
    "X-Lectr-Feature: a\r\nx-lectr-feature: a\r\n", "X-Lectr-Provider: openai\r\nX-Lectr-Provider: openai\r\n",
])
def test_a_repeated_lectr_header_in_any_case_is_400(served, upstream, extra):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], "/v1/chat/completions",
                                    extra=extra.format(key=served.extra["key"])))
    assert reply.status == 400
    assert not forwarded_since(upstream, before)


def test_a_comma_joined_key_is_not_a_key(served, upstream):
    key = served.extra["key"]
    before = len(upstream.requests)
    raw = raw_post(key, "/v1/chat/completions").replace(f"X-Lectr-Key: {key}".encode(),
                                                        f"X-Lectr-Key: {key}, lc_key_other".encode())
    [reply] = send(served, raw)
    assert reply.status in (400, 401)
    assert not forwarded_since(upstream, before)


# -- Host and version (should fix) -------------------------------------------------------------

@pytest.mark.parametrize("version,host_lines,status", [
    ("1.1", "", 400), ("1.1", "Host: a\r\nhost: a\r\n", 400), ("1.1", "Host: a\r\nHOST: b\r\n", 400),
    ("1.0", "Host: a\r\nHost: a\r\n", 400), ("2.0", "Host: a\r\n", 505), ("1.2", "Host: a\r\n", None),
    ("3.0", "Host: a\r\n", 505),
])
def test_host_and_version(served, upstream, version, host_lines, status):
    key = served.extra["key"]
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": []})
    raw = (f"POST /v1/chat/completions HTTP/{version}\r\n{host_lines}X-Lectr-Key: {key}\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    before = len(upstream.requests)
    with connect(served.port) as sock:
        sock.sendall(raw)
        data = b""
        sock.settimeout(5)
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    got = int(data.split(b" ", 2)[1])
    if status is None:  # HTTP/1.2: a 1.x minor this server does not know is served as 1.1 (RFC 9110 §2.5)
        assert got in (200, 505), data
    else:
        assert got == status, data
        assert not forwarded_since(upstream, before)


def test_http_09_is_refused(served, upstream):
    before = len(upstream.requests)
    with connect(served.port) as sock:
        sock.sendall(b"GET /v1/models\r\n\r\n")
        sock.settimeout(5)
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 505") or data == b""
    assert not forwarded_since(upstream, before)


# -- Anthropic native paths (12.8) --------------------------------------------------------------

@pytest.mark.parametrize("target,where", [
    ("/v1/messages?beta=true", b"/anthropic/v1/messages?beta=true"),
    ("/v1/messages/", b"/anthropic/v1/messages/"),
    ("/v1/messages/count_tokens", b"/anthropic/v1/messages/count_tokens"),
    ("/v1//messages/batches", None),
    ("/v1/./messages/batches", b"/anthropic/v1/messages/batches"),
    ("/v1/Messages", None),
])
def test_anthropic_native_paths_with_an_openai_model(served, upstream, target, where):
    before = len(upstream.requests)
    replies = send(served, raw_post(served.extra["key"], target, "gpt-4o", extra="x-api-key: sk-ant-secret\r\n"
                                    "anthropic-version: 2023-06-01\r\n"))
    for seen in forwarded_since(upstream, before):
        if where is not None:
            assert seen.target == where
        if not seen.target.startswith(b"/anthropic/"):
            assert b"sk-ant-secret" not in seen.raw, seen.raw
    assert replies


def test_x_api_key_with_a_gpt_model_never_reaches_openai(served, upstream):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], "/v1/chat/completions", "gpt-4o",
                                    extra="x-api-key: sk-ant-secret\r\nX-Api-Key: sk-ant-secret2\r\n"))
    [seen] = forwarded_since(upstream, before)
    assert seen.target.startswith(b"/openai/")
    assert b"sk-ant-secret" not in seen.raw


# -- the provider's Transfer-Encoding line (issue 13's raw bytes) -------------------------------

def read_until_closed_or(sock, marker: bytes) -> bytes:
    data = b""
    sock.settimeout(10)
    while marker not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def test_a_chunked_head_keeps_the_providers_transfer_encoding_line_in_place(served):
    with connect(served.port) as sock:
        sock.sendall(raw_post(served.extra["key"], "/v1/chat/completions", extra="x-test: chunked\r\n"))
        data = read_until_closed_or(sock, b"0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head + b"\r\n\r\n" == CHUNKED_REPLY[:CHUNKED_REPLY.index(b"\r\n\r\n") + 4]
    assert head.lower().count(b"transfer-encoding") == 1


def test_an_http10_client_gets_no_transfer_encoding_and_a_close_delimited_body(served):
    with connect(served.port) as sock:
        sock.sendall(raw_post(served.extra["key"], "/v1/chat/completions", extra="x-test: chunked\r\n",
                              version="1.0"))
        data = read_until_closed_or(sock, b"\x00never")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-After: 1")
    assert body == b'{"a":1}'
