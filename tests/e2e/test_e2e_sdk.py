"""End to end: the official openai SDK → ``lectr serve`` → the mock provider over real HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass

import openai
import orjson
import pytest

from tests.conftest import PROVIDER_PREFIXES, free_port, sdk_client
from tests.httpcheck import connect, read_replies, request
from tests.rawhttp import exchange as raw_exchange

PROVIDER_KEY = "sk-provider-secret-4f1c9a"
PROMPT = "the secret recipe is saffron and 42 cloves"


@dataclass(frozen=True)
class ProviderCase:
    """One row of the table of what each provider gets and how its key travels."""

    name: str
    model: str
    auth_header: str  # the header the provider must receive the key in
    auth_value: str
    via_header: bool = False  # reached only through X-Lectr-Provider


CASES = [
    ProviderCase("openai", "gpt-4o-mini", "authorization", f"Bearer {PROVIDER_KEY}"),
    ProviderCase("anthropic", "claude-3-5-sonnet-20241022", "x-api-key", PROVIDER_KEY),
    ProviderCase("groq", "llama-3.3-70b-versatile", "authorization", f"Bearer {PROVIDER_KEY}"),
    ProviderCase("gemini", "gemini-2.5-flash", "authorization", f"Bearer {PROVIDER_KEY}"),
    ProviderCase("azure", "prod-gpt4o", "api-key", PROVIDER_KEY, via_header=True),
    ProviderCase("mistral", "mistral-small-latest", "authorization", f"Bearer {PROVIDER_KEY}"),
]


def client(server, key: str | None = None, **headers: str) -> openai.OpenAI:
    return sdk_client(server.base_url, api_key=PROVIDER_KEY, **{"X-Lectr-Key": key or server.extra["key"], **headers})


@pytest.fixture(scope="module")
def azure_ready(lectr_server, mock):
    lectr_server.cli("org", "azure", "acme", "--endpoint", mock.url("/azure-resource"),
                     "--api-version", "2024-10-21")
    wait_until(lambda: _azure_status(lectr_server) == 200)


def _azure_status(server) -> int:
    try:
        client(server, **{"X-Lectr-Provider": "azure"}).chat.completions.create(
            model="probe", messages=[{"role": "user", "content": "x"}])
        return 200
    except openai.APIStatusError as exc:
        return exc.status_code


def wait_until(predicate, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_provider_is_routed_with_its_auth(lectr_server, mock, azure_ready, case):
    headers = {"X-Lectr-Provider": "azure"} if case.via_header else {}
    reply = client(lectr_server, **headers, **{"X-Lectr-Feature": "chat", "X-Lectr-Task": "generation"}) \
        .chat.completions.create(model=case.model, messages=[{"role": "user", "content": PROMPT}])
    assert reply.model == case.model
    assert reply.usage.total_tokens == 21

    seen = mock.last()
    if case.name == "azure":
        assert seen.path == f"/azure-resource/openai/deployments/{case.model}/chat/completions"
        assert seen.query == "api-version=2024-10-21"
    else:
        assert seen.path == f"{PROVIDER_PREFIXES[case.name]}/chat/completions"
    assert seen.header(case.auth_header) == case.auth_value
    # Replaced, not duplicated; and nothing of Lectr's goes upstream.
    names = seen.header_names()
    assert names.count(case.auth_header) == 1
    if case.auth_header != "authorization":
        assert "authorization" not in names
    assert not [n for n in names if n.startswith("x-lectr-")]
    assert orjson.loads(seen.body)["messages"][0]["content"] == PROMPT


def test_upstream_sees_the_clients_headers_and_nothing_else(lectr_server, mock):
    direct = sdk_client(mock.url(PROVIDER_PREFIXES["openai"]), api_key=PROVIDER_KEY)
    direct.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    sent_direct = mock.last()
    client(lectr_server).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    via_lectr = mock.last()
    hop = {"connection", "host", "keep-alive"}
    assert sorted(set(sent_direct.header_names()) - hop) == sorted(set(via_lectr.header_names()) - hop)
    for name in ("user-agent", "accept", "accept-encoding", "content-type", "x-stainless-lang"):
        assert via_lectr.header(name) == sent_direct.header(name)
    assert via_lectr.body == sent_direct.body


def test_models_list_without_a_body_goes_to_openai(lectr_server, mock):
    models = client(lectr_server).models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini"]
    assert mock.last().path == "/openai/v1/models"


def test_provider_override_and_invalid_override(lectr_server, mock):
    client(lectr_server, **{"X-Lectr-Provider": "groq"}).chat.completions.create(
        model="my-custom-model", messages=[{"role": "user", "content": "x"}])
    assert mock.last().path.startswith(PROVIDER_PREFIXES["groq"])
    client(lectr_server, **{"X-Lectr-Provider": "bogus"}).chat.completions.create(
        model="claude-3-5-haiku-20241022", messages=[{"role": "user", "content": "x"}])
    assert mock.last().path.startswith(PROVIDER_PREFIXES["openai"])
    wait_until(lambda: "'bogus'" in lectr_server.log_text())


def test_unknown_model_goes_to_openai(lectr_server, mock):
    reply = client(lectr_server).chat.completions.create(model="mystery-model-9",
                                                         messages=[{"role": "user", "content": "x"}])
    assert reply.model == "mystery-model-9"
    assert mock.last().path.startswith(PROVIDER_PREFIXES["openai"])


def test_stream_relays_the_first_chunk_before_the_stream_ends(lectr_server, mock):
    started = time.monotonic()
    gate = f"sdk-stream-{time.monotonic_ns()}"  # the mock sends each event once we saw the last
    stream = client(lectr_server).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunk-delay-ms": "250", "x-mock-chunks": "4", "x-mock-gate": gate})
    arrivals, texts, usage, seen_at = [], [], None, []
    for chunk in stream:
        seen_at.append(time.monotonic())
        mock.release(gate)
        arrivals.append(time.monotonic() - started)
        if chunk.choices:
            texts.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(texts) == "Hello from the mock"
    assert usage is not None and usage.completion_tokens == 4
    # 7 events 250 ms apart: the first must arrive long before the last.
    assert arrivals[-1] - arrivals[0] >= 1.0
    assert arrivals[0] < arrivals[-1] - 1.0
    # Every gap: each event reached the SDK before the mock sent the next (7 events + [DONE]).
    sent = mock.sent_at[gate]
    assert len(seen_at) == 7 and len(sent) == 8
    for i in range(7):
        assert seen_at[i] < sent[i + 1], f"event {i} arrived only after event {i + 1} was sent"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_streaming_works_for_every_provider(lectr_server, mock, azure_ready, case):
    headers = {"X-Lectr-Provider": "azure"} if case.via_header else {}
    stream = client(lectr_server, **headers).chat.completions.create(
        model=case.model, messages=[{"role": "user", "content": "x"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the"


def test_azure_without_config_is_400(lectr_server):
    key = lectr_server.create_org("no-azure")
    wait_until(lambda: _status(lectr_server, key) != 401)
    with pytest.raises(openai.BadRequestError) as info:
        client(lectr_server, key, **{"X-Lectr-Provider": "azure"}).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "azure_not_configured"


def _status(server, key: str) -> int:
    try:
        client(server, key).models.list()
        return 200
    except openai.APIStatusError as exc:
        return exc.status_code


def test_missing_and_invalid_keys_are_401(lectr_server, mock):
    before = len(mock.requests)
    received = mock.received
    bare = sdk_client(lectr_server.base_url, api_key=PROVIDER_KEY)
    with pytest.raises(openai.AuthenticationError) as missing:
        bare.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "missing_lectr_key"
    with pytest.raises(openai.AuthenticationError) as invalid:
        client(lectr_server, "lc_key_not-a-real-key").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert invalid.value.body["code"] == "invalid_lectr_key"
    assert len(mock.requests) == before
    assert mock.received == received  # a counter that only grows: no cap to hide behind


def test_key_rotation_takes_effect_in_the_running_server(lectr_server):
    old = lectr_server.create_org("rotating")
    wait_until(lambda: _status(lectr_server, old) == 200)
    new = lectr_server.cli("key", "rotate", "rotating").stdout.strip().splitlines()[-1]
    assert new.startswith("lc_key_") and new != old
    took = wait_until(lambda: _status(lectr_server, old) == 401, timeout=2.0)
    assert _status(lectr_server, new) == 200
    assert took < 2.0


def test_azure_config_is_picked_up_live(lectr_server, mock):
    key = lectr_server.create_org("azure-later")
    wait_until(lambda: _status(lectr_server, key) == 200)
    azure = client(lectr_server, key, **{"X-Lectr-Provider": "azure"})
    with pytest.raises(openai.BadRequestError):
        azure.chat.completions.create(model="dep", messages=[{"role": "user", "content": "x"}])
    lectr_server.cli("org", "azure", "azure-later", "--endpoint", mock.url("/later"), "--api-version", "2025-04-01-preview")

    def routed() -> bool:
        try:
            azure.chat.completions.create(model="dep", messages=[{"role": "user", "content": "x"}])
            return mock.last().path == "/later/openai/deployments/dep/chat/completions"
        except openai.BadRequestError:
            return False
    wait_until(routed, timeout=2.0)
    assert mock.last().query == "api-version=2025-04-01-preview"


def raw_post(port: int, prefix: str, headers: dict[str, str], body: bytes):
    with connect(port) as sock:
        sock.sendall(request("POST", f"{prefix}/chat/completions", headers, body))
        [reply] = read_replies(sock, ["POST"])
    return reply


@pytest.mark.parametrize("mock_headers", [{}, {"x-mock-gzip": "1"}, {"x-mock-chunked": "1"},
                                          {"x-mock-gzip": "1", "x-mock-chunked": "1"},
                                          {"x-mock-status": "429"}, {"x-mock-status": "500"}],
                         ids=["plain", "gzip", "chunked", "gzip-chunked", "429", "500"])
def test_responses_are_byte_identical_to_the_providers(lectr_server, mock, mock_headers):
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    common = {"Content-Type": "application/json", "Authorization": f"Bearer {PROVIDER_KEY}",
              "Accept-Encoding": "gzip", **mock_headers}
    direct = raw_post(mock.port, PROVIDER_PREFIXES["openai"], common, body)
    proxied = raw_post(lectr_server.port, "/v1", {**common, "X-Lectr-Key": lectr_server.extra["key"]}, body)
    assert proxied.status == direct.status
    assert proxied.raw_headers == direct.raw_headers
    assert proxied.body == direct.body
    if "x-mock-gzip" in mock_headers:
        assert proxied.body[:2] == b"\x1f\x8b"  # still compressed: Lectr did not touch it
    # And as raw bytes (h11 above lower-cases names and drops framing): every byte, the
    # provider's Transfer-Encoding line included.
    raw_headers = [(k, v) for k, v in common.items()]
    raw_direct = raw_exchange(mock.port, "POST", f"{PROVIDER_PREFIXES['openai']}/chat/completions", raw_headers, body)
    raw_proxied = raw_exchange(lectr_server.port, "POST", "/v1/chat/completions",
                               [*raw_headers, ("X-Lectr-Key", lectr_server.extra["key"])], body)
    assert raw_proxied.status_line == raw_direct.status_line
    assert raw_proxied.head == raw_direct.head
    assert raw_proxied.raw[len(raw_proxied.head):] == raw_direct.raw[len(raw_direct.head):]


def test_provider_errors_reach_the_sdk_unchanged(lectr_server):
    with pytest.raises(openai.RateLimitError) as info:
        client(lectr_server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-status": "429"})
    assert info.value.body == {"message": "mock error 429", "type": "mock_error", "param": None,
                               "code": "mock_429"}


def test_unreachable_provider_is_502(lectr_server, mock):
    key = lectr_server.create_org("dead-azure")
    lectr_server.cli("org", "azure", "dead-azure", "--endpoint", f"http://127.0.0.1:{free_port()}",
                     "--api-version", "2024-10-21")
    dead = client(lectr_server, key, **{"X-Lectr-Provider": "azure"})

    def status() -> int:
        try:
            dead.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code
    wait_until(lambda: status() == 502)
    with pytest.raises(openai.APIStatusError) as info:
        dead.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "upstream_unreachable"


def test_slow_provider_is_504(lectr_server):
    # The server under test runs with LECTR_UPSTREAM_READ_TIMEOUT=2.
    with pytest.raises(openai.APIStatusError) as info:
        client(lectr_server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-delay-ms": "3000"})
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"


def test_client_disconnect_mid_stream_cancels_the_upstream_request(lectr_server, mock):
    before = mock.streams_cut
    stream = client(lectr_server).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True,
        extra_headers={"x-mock-chunk-delay-ms": "100", "x-mock-chunks": "40"})
    next(iter(stream))
    stream.close()
    wait_until(lambda: mock.streams_cut > before, timeout=3)


def test_keys_and_prompts_never_reach_the_log(lectr_server, mock):
    # Send them here (plain, stream, provider error), so the test holds when run alone too.
    sdk = client(lectr_server)
    messages = [{"role": "user", "content": PROMPT}]
    sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    list(sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    with pytest.raises(openai.APIStatusError):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers={"x-mock-status": "500"})
    assert mock.last().header("authorization") == f"Bearer {PROVIDER_KEY}"
    log = lectr_server.log_text()
    assert PROVIDER_KEY not in log
    assert PROMPT not in log
    assert lectr_server.extra["key"] not in log
