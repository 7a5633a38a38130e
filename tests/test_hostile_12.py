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


@pytest.fixture(scope="module")
def upstream():
    with RawUpstream() as up:
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
