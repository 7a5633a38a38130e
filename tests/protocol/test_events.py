"""The event each request leaves in the ring: the right facts, and never a key or a prompt."""

import orjson
import pytest

from tests.conftest import wait_for
from tests.httpcheck import connect, exchange, read_replies, request

SECRET_PROMPT = "please keep this prompt private 7d3a"
PROVIDER_KEY = "sk-very-secret-provider-key-9981"


def post(h, body: dict, **headers: str):
    raw = request("POST", "/v1/chat/completions",
                  {"X-Lectr-Key": h.key, "Authorization": f"Bearer {PROVIDER_KEY}",
                   "Content-Type": "application/json", **headers}, orjson.dumps(body))
    return exchange(h.port, raw, ["POST"])[0]


@pytest.fixture()
def ring(harness):
    harness.events()  # start each test with an empty ring
    return harness


def test_a_plain_request_leaves_one_complete_event(ring):
    reply = post(ring, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
                 **{"X-Lectr-Feature": "search", "X-Lectr-Task": "classification"})
    assert reply.status == 200
    [event] = ring.events()
    assert (event.org_id, event.provider, event.model, event.feature, event.task) == \
        (7, "openai", "gpt-4o-mini", "search", "classification")
    assert (event.status_code, event.error_type, event.stream, event.provider_unknown) == (200, None, False, False)
    assert event.t_start <= event.t_first_byte <= event.t_end
    assert 0 <= event.overhead_s <= event.t_end - event.t_start
    assert event.bytes_out == len(reply.body) and event.bytes_in > 0
    assert b"".join(event.response_chunks) == reply.body
    assert event.content_type == "application/json"


def test_stream_events_keep_the_stream_bytes(ring):
    post(ring, {"model": "claude-3-5-haiku-20241022", "stream": True, "messages": []})
    [event] = ring.events()
    assert event.stream and event.provider == "anthropic"
    assert b"data: [DONE]" in b"".join(event.response_chunks)


def test_unknown_model_and_provider_error_are_marked(ring):
    post(ring, {"model": "who-knows", "messages": []})
    post(ring, {"model": "gpt-4o", "messages": []}, **{"x-mock-status": "503"})
    unknown, failed = ring.events()
    assert unknown.provider == "openai" and unknown.provider_unknown
    assert (failed.status_code, failed.error_type, failed.error_origin) == (503, "http_503", "provider")


def test_lectrs_own_errors_for_a_known_org_are_recorded(ring):
    post(ring, {"model": "gpt-4o", "messages": []}, **{"x-mock-delay-ms": "2500"})  # read timeout is 2 s
    [event] = ring.events()
    assert (event.status_code, event.error_type, event.error_origin) == (504, "upstream_timeout", "lectr")


def test_unauthenticated_requests_leave_no_event(ring):
    exchange(ring.port, request("POST", "/v1/chat/completions", {}, b"{}"), ["POST"])
    assert ring.events() == []


def test_client_disconnect_is_recorded(ring):
    with connect(ring.port) as sock:
        sock.sendall(request("POST", "/v1/chat/completions",
                             {"X-Lectr-Key": ring.key, "x-mock-delay-ms": "1000"}, b'{"model":"gpt-4o"}'))
        wait_for(lambda: ring.mock.requests and ring.mock.last().body == b'{"model":"gpt-4o"}', timeout=5,
                 message="the request to reach the provider")  # then the client hangs up
    [event] = wait_for(ring.events, timeout=3, message="the disconnect's event")
    assert (event.status_code, event.error_type) == (499, "client_disconnected")


def test_no_key_and_no_prompt_in_any_event(ring):
    post(ring, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": SECRET_PROMPT}]})
    post(ring, {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": SECRET_PROMPT}]})
    for event in ring.events():
        text = repr(event)
        assert PROVIDER_KEY not in text and ring.key not in text and SECRET_PROMPT not in text


def test_a_full_ring_drops_and_counts_without_failing_requests(ring):
    saved = ring.ring.capacity
    ring.ring.capacity = 2
    ring.ring.dropped.clear()
    try:
        with connect(ring.port) as sock:
            for _ in range(5):
                sock.sendall(request("POST", "/v1/chat/completions", {"X-Lectr-Key": ring.key},
                                     b'{"model":"gpt-4o-mini"}'))
                assert read_replies(sock, ["POST"])[0].status == 200
        # An event is appended just after its response is written: wait for the last one.
        wait_for(lambda: ring.ring.dropped["ring_full"] >= 3, timeout=2, interval=0.01)
        assert ring.ring.dropped["ring_full"] == 3
    finally:
        ring.ring.capacity = saved
        ring.events()
