"""Unit tests for the small pure pieces: config, keys, ring, body facts, URLs, headers."""

import re
from pathlib import Path

import pytest

from lectr.settings.config import VARIABLES, ConfigError, Settings
from lectr.proxy.ring import EventRing
from lectr.snapshot.keys import hash_key, key_hint, new_org_key
from lectr.providers.azure import azure_route
from lectr.providers.base import AzureTarget, bearer_token, parse_origin
from lectr.providers.registry import PROVIDERS
from lectr.proxy.body import read_body_facts
from lectr.proxy.headers import ClientHeaders, parse_response_head, without_transfer_coding

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults():
    s = Settings.from_env({})
    assert (s.host, s.proxy_port, s.admin_port, s.database_url) == ("127.0.0.1", 8080, 8081, None)
    assert s.upstreams.base_urls["openai"] == "https://api.openai.com/v1"
    assert s.upstreams.base_urls["groq"] == "https://api.groq.com/openai/v1"


def test_upstream_overrides_are_trimmed_and_checked():
    s = Settings.from_env({"LECTR_UPSTREAM_OPENAI": "http://127.0.0.1:9000/v1/"})
    assert s.upstreams.base_urls["openai"] == "http://127.0.0.1:9000/v1"
    with pytest.raises(ConfigError, match="LECTR_UPSTREAM_GROQ"):
        Settings.from_env({"LECTR_UPSTREAM_GROQ": "ftp://x"})


@pytest.mark.parametrize("name,value", [("LECTR_PROXY_PORT", "eighty"), ("LECTR_IDLE_TIMEOUT", "0"),
                                        ("LECTR_MAX_BODY_BYTES", "-1")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_readme_documents_every_variable():
    text = README.read_text()
    documented = set(re.findall(r"`(LECTR_[A-Z_]+)`", text))
    assert set(VARIABLES) <= documented, sorted(set(VARIABLES) - documented)


def test_keys():
    key = new_org_key()
    assert re.fullmatch(r"lc_key_[A-Za-z0-9_-]{32,}", key)
    assert new_org_key() != key
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key)) and hash_key(key) == hash_key(key.encode())
    assert key not in key_hint(key) and key_hint(key).startswith("lc_key_")


def test_ring_drops_and_counts_when_full():
    ring = EventRing(3, batch_size=2)
    assert [ring.append(i) for i in range(5)] == [True, True, True, False, False]
    assert ring.dropped == {"ring_full": 2} and ring.appended == 3
    assert ring.drain(2) == [0, 1]
    assert ring.append(9)
    assert ring.drain() == [2, 9] and len(ring) == 0


async def test_ring_wait_wakes_on_a_full_batch():
    import asyncio
    ring = EventRing(10, batch_size=2)
    waiter = asyncio.create_task(ring.wait(5))
    await asyncio.sleep(0)
    ring.append(1)
    ring.append(2)
    await asyncio.wait_for(waiter, 1)
    await ring.wait(0.01)  # a batch is already there: returns at once


async def test_ring_wait_counts_events_taken_but_not_yet_written():
    import asyncio
    ring = EventRing(10, batch_size=3)
    ring.append(1)
    assert ring.pop() == 1 and ring.pop() is None
    await asyncio.wait_for(ring.wait(5, taken=3), 1)  # a batch already taken: at once
    waiter = asyncio.create_task(ring.wait(5, taken=1))
    await asyncio.sleep(0)
    ring.append(2)
    await asyncio.sleep(0)
    assert not waiter.done()
    ring.append(3)  # one taken and two waiting: a batch
    await asyncio.wait_for(waiter, 1)


@pytest.mark.parametrize("body,ctype,model,stream", [
    (b'{"model":"gpt-4o","stream":true}', b"application/json", "gpt-4o", True),
    (b'{"messages":[{"content":"\\"model\\": \\"x\\""}],"model":"claude-3-opus"}', None, "claude-3-opus", False),
    (b'{"model":42}', None, None, False),
    (b'[1,2]', None, None, False),
    (b'not json', None, None, False),
    (b'', None, None, False),
    (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b--', b"multipart/form-data; boundary=b",
     "whisper-1", False),
])
def test_body_facts(body, ctype, model, stream):
    facts = read_body_facts(body, ctype)
    assert (facts.model, facts.stream) == (model, stream)


def test_client_headers_split():
    h = ClientHeaders([(b"X-Lectr-Key", b" lc_key_abc "), (b"X-Lectr-Feature", b"x" * 150),
                       (b"Authorization", b"Bearer sk"), (b"Connection", b"keep-alive, X-Drop"),
                       (b"X-Drop", b"1"), (b"TE", b"trailers"), (b"Host", b"lectr"), (b"OpenAI-Project", b"p"),
                       (b"Content-Type", b"application/json"), (b"Expect", b"100-continue")])
    assert h.lectr_key == b"lc_key_abc" and h.authorization == b"Bearer sk"
    assert h.feature_tag() == "x" * 100 and h.task_tag() is None
    assert b"".join(h.forward) == b"\r\nOpenAI-Project: p\r\nContent-Type: application/json"
    assert ClientHeaders([]).feature_tag() == "untagged"
    # Every Connection field counts, not just the last.
    h = ClientHeaders([(b"Connection", b"X-A"), (b"X-A", b"1"), (b"X-B", b"2"), (b"connection", b"x-b"),
                       (b"X-C", b"3")])
    assert b"".join(h.forward) == b"\r\nX-C: 3"
    # The usual "keep-alive" (or "close") names no forwarded field: everything else goes as sent.
    for connection in (b"keep-alive", b"Keep-Alive", b"close", b"keep-alive, TE"):
        h = ClientHeaders([(b"X-A", b"1"), (b"Connection", connection), (b"x-b", b"2")])
        assert b"".join(h.forward) == b"\r\nX-A: 1\r\nx-b: 2", connection
    h = ClientHeaders([(b"Connection", b"Keep-Alive"), (b"X-A", b"1"), (b"Connection", b"x-a")])
    assert h.forward == []


def test_response_head_drops_hop_by_hop_and_keeps_the_providers_bytes():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type:a\r\nConnection: keep-alive\r\n"
                               b"Transfer-Encoding:  Chunked \r\nX-Request-Id:  r\r\nContent-Encoding: gzip\r\n")
    assert head.relay == b"HTTP/1.1 200 OK\r\nContent-Type:a\r\nTransfer-Encoding:  Chunked \r\nX-Request-Id:  r\r\n" \
        b"Content-Encoding: gzip\r\n"  # chunked: the provider's own line stays, Lectr chunks too
    assert without_transfer_coding(head.relay) == \
        b"HTTP/1.1 200 OK\r\nContent-Type:a\r\nX-Request-Id:  r\r\nContent-Encoding: gzip\r\n"
    assert (head.has_length, head.chunked, head.content_type, head.content_encoding) == (False, True, "a", "gzip")


def test_response_head_edge_cases():
    # Every hop-by-hop field goes, in any case, with a folded continuation line; others stay.
    head = parse_response_head(b"HTTP/1.1 201 Created\r\nKEEP-ALIVE: a\r\n b\r\nX-Connection: y\r\nTE: t\r\n"
                               b"Upgrade: h2c\r\nContent-Length: 2\r\nTrailer: x\r\n")
    assert head.relay == b"HTTP/1.1 201 Created\r\nX-Connection: y\r\nContent-Length: 2\r\n"
    assert head.has_length and not head.chunked and head.content_type is None
    # Adjacent hop-by-hop lines, first and last, each cut with its own line break only.
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                               b"X-A: 1\r\nTransfer-Encoding: gzip, chunked\r\n")
    assert head.relay == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: gzip, chunked\r\n" and head.chunked
    assert without_transfer_coding(head.relay) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"
    # A Transfer-Encoding that does not end in chunked is not Lectr's framing: it goes.
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-A: 1\r\n").relay == \
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"
    # An HTTP/1.0 provider is relayed as HTTP/1.1 with its own status and reason.
    assert parse_response_head(b"HTTP/1.0 404 Nope\r\nContent-Length: 0\r\n").relay == \
        b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n"


def test_auth_rewrites():
    assert PROVIDERS["openai"].auth(b"Bearer sk-1") == (b"Authorization", b"Bearer sk-1")
    assert PROVIDERS["anthropic"].auth(b"Bearer sk-ant") == (b"x-api-key", b"sk-ant")
    assert PROVIDERS["azure"].auth(b"bearer  az ") == (b"api-key", b"az")
    assert bearer_token(b"Basic abc") == b"Basic abc"


def test_azure_routes():
    target = AzureTarget("https://res.openai.azure.com/", "2024-10-21")
    origin, path = azure_route(b"chat/completions", b"", "my dep", target)
    assert (origin.host, origin.port, origin.tls) == ("res.openai.azure.com", 443, True)
    assert path == b"/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21"
    assert azure_route(b"models", b"api-version=old&x=1", None, target)[1] == b"/openai/models?x=1&api-version=2024-10-21"


def test_origins():
    o = parse_origin("http://127.0.0.1:9000/openai/v1/")
    assert (o.scheme, o.host, o.port, o.path, o.host_header) == ("http", "127.0.0.1", 9000, b"/openai/v1", b"127.0.0.1:9000")
    o = parse_origin("https://api.groq.com/openai/v1")
    assert (o.port, o.host_header, o.tls) == (443, b"api.groq.com", True)
    assert PROVIDERS["openai"].route(o, b"chat/completions", b"a=1", None, None) == (o, b"/openai/v1/chat/completions?a=1")

