"""Forwarded paths stay under the provider's base path, whatever the spelling of their dots."""

from __future__ import annotations

import orjson
import pytest

from lectr.settings.config import ProxyLimits
from lectr.providers.base import PathRefused, deployment_segment
from lectr.proxy.paths import normalise_path
from tests.conftest import PROVIDER_PREFIXES, ProxyHarness
from tests.httpcheck import exchange
from tests.rawupstream import RawUpstream

RESOLVED = [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1/chat/../models", "/v1/models"),
    ("/v1/./models", "/v1/models"),
    ("/v1/%2e/models", "/v1/models"),
    ("/v1/%2E/models", "/v1/models"),
    ("/v1/a/%2e%2e/models", "/v1/models"),
    ("/v1/a/%2E%2E/models", "/v1/models"),
    ("/v1/a/.%2e/models", "/v1/models"),
    ("/v1/a/%2e./models", "/v1/models"),
    ("/v1/a/b/../../models", "/v1/models"),
    ("/v1/models/.", "/v1/models/"),
    ("/v1/models/a/..", "/v1/models/"),
    ("/v1//../models", "/v1/models"),
    ("/v1/files/a.b", "/v1/files/a.b"),
    ("/v1/files/..x", "/v1/files/..x"),
    ("/v1/files/...", "/v1/files/..."),
    ("/v1/files/a%2eb", "/v1/files/a%2eb"),
    ("/v1/files/a%20b", "/v1/files/a%20b"),
]
ESCAPING = [
    "/v1/../../escaped", "/v1/..", "/v1/../", "/v1/../v2/x", "/v1/%2e%2e/%2e%2e/escaped",
    "/v1/%2E%2E/escaped", "/v1/.%2E/x", "/v1/%2e./x", "/v1/chat/../../x", "/v1/./../x",
    "/v1/a/../../../../etc/passwd",
]
REFUSED = [
    "/v1/..%2fescaped", "/v1/..%2Fescaped", "/v1/%2F..%2F..%2Fx", "/v1/..%5cx", "/v1/..%5Cx",
    "/v1/..\\..\\x", "/v1/%252e%252e/x", "/v1/%252E%252E/x", "/v1/..%252f/x", "/v1/%255c", "/v1/..;/x",
    "/v1/.;x/y", "/v1/x%00y", "/v1/models\\..\\..\\x",
]


@pytest.mark.parametrize("path,expected", RESOLVED)
def test_dot_segments_are_resolved_in_every_spelling(path, expected):
    assert normalise_path(path.encode()) == expected.encode()


@pytest.mark.parametrize("path", ESCAPING)
def test_paths_that_climb_out_of_v1_resolve_outside_it(path):
    assert not normalise_path(path.encode()).startswith(b"/v1/")


@pytest.mark.parametrize("path", REFUSED)
def test_ambiguous_encodings_are_refused(path):
    with pytest.raises(PathRefused):
        normalise_path(path.encode())


def test_a_plain_path_is_returned_as_is():
    path = b"/v1/chat/completions"
    assert normalise_path(path) is path


@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", "a\\b", "%2e%2e", "a%2fb"])
def test_azure_deployment_names_stay_one_segment(name):
    with pytest.raises(PathRefused):
        deployment_segment(name)


def test_azure_deployment_names_that_are_plain_pass():
    assert deployment_segment("prod-gpt-4o.v2_1") == b"prod-gpt-4o.v2_1"


# -- end to end: raw sockets to Lectr, a raw-logging upstream behind it ----------------------

@pytest.fixture(scope="module")
def proxied():
    upstream = RawUpstream().start()
    harness = ProxyHarness(upstream, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192,
                                                 header_timeout=5.0, idle_timeout=5.0))
    harness.start()
    yield harness, upstream
    harness.stop()
    upstream.stop()


def post(harness, path: str, model: str = "llama-3.3-70b-versatile", **headers: str):
    body = orjson.dumps({"model": model, "messages": []})
    raw = (f"POST {path} HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {harness.key}\r\n"
           f"Authorization: Bearer gsk-test\r\nContent-Type: application/json\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
           + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return exchange(harness.port, raw, ["POST"])[0]


@pytest.mark.parametrize("path", ESCAPING + REFUSED)
def test_a_path_leaving_the_base_never_reaches_the_provider(proxied, path):
    harness, upstream = proxied
    before = len(upstream.requests)
    reply = post(harness, path)
    assert reply.status == 400
    assert orjson.loads(reply.body)["error"]["code"] == "invalid_path"
    assert len(upstream.requests) == before


@pytest.mark.parametrize("path,expected", [p for p in RESOLVED if p[0] != "/v1/chat/completions"])
def test_a_resolved_path_is_forwarded_under_the_providers_base(proxied, path, expected):
    harness, upstream = proxied
    before = len(upstream.requests)
    assert post(harness, path).status == 200
    [seen] = upstream.requests[before:]
    assert seen.target == (PROVIDER_PREFIXES["groq"] + expected[3:]).encode()


@pytest.mark.parametrize("model", ["..", ".", "../../x", "a/../../b"])
def test_an_azure_deployment_cannot_climb_out_of_the_deployments_path(proxied, model):
    harness, upstream = proxied
    before = len(upstream.requests)
    reply = post(harness, "/v1/chat/completions", model=model, **{"X-Lectr-Provider": "azure"})
    assert reply.status == 400
    assert len(upstream.requests) == before


def test_every_forwarded_target_stayed_under_a_base(proxied):
    _, upstream = proxied
    bases = [p.encode() + b"/" for p in PROVIDER_PREFIXES.values()] + [b"/azure/openai/"]
    assert upstream.requests and all(r.target.startswith(tuple(bases)) for r in upstream.requests)
