"""Every request recorded: ``lectr serve`` → ring → COPY writer → request_logs, on real Postgres."""

from __future__ import annotations

import asyncio
import signal
import urllib.request

import asyncpg
import openai
import pytest

from tests.conftest import create_org, free_port, lectr_env, sdk_client, start_lectr, stop_lectr, wait_for

PROVIDER_KEY = "sk-recording-secret-77aa1"
PROMPT = "classified launch codes: tango foxtrot 1138"


def scrape_metrics(port) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def query(url: str, sql: str, *args):
    async def run():
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


def wait_for_rows(url: str, where: str, count: int, timeout: float = 15.0) -> list:
    def rows() -> list | None:
        found = query(url, f"SELECT * FROM request_logs WHERE {where} ORDER BY id")
        return found if len(found) >= count else None
    return wait_for(rows, timeout=timeout, interval=0.1, message=f"{count} rows where {where}")


@pytest.fixture(scope="module")
def recorder(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recorder")
    env = lectr_env(database_url, mock, tmp, LECTR_FLUSH_INTERVAL="0.2", LECTR_UPSTREAM_READ_TIMEOUT="2")
    key = create_org(env, "recorder")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def sdk(server, feature: str, **headers: str) -> openai.OpenAI:
    return sdk_client(server.base_url, api_key=PROVIDER_KEY,
                      **{"X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": feature, **headers})


def test_plain_request_row(recorder, database_url):
    sdk(recorder, "plain", **{"X-Lectr-Task": "summarisation"}).chat.completions.create(
        model="gpt-4o-2024-08-06", messages=[{"role": "user", "content": PROMPT}])
    [row] = wait_for_rows(database_url, "feature = 'plain'", 1)
    assert (row["provider"], row["model"], row["model_used"], row["task"]) == \
        ("openai", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "summarisation")
    assert (row["status_code"], row["error_type"], row["stream"], row["token_source"]) == (200, None, False, "provider")
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (12, 9, 0)
    assert row["latency_ms"] > 0 and 0 < row["ttfb_ms"] <= row["latency_ms"] and row["overhead_us"] >= 0
    assert row["bytes_in"] > 0 and row["bytes_out"] > 0
    # gpt-4o: $2.50 in, $10 out per million tokens.
    assert float(row["cost_usd"]) == pytest.approx((12 * 2.5 + 9 * 10) / 1e6)
    assert row["pricing_id"] is not None and row["cost_partial"] is False


def test_stream_with_usage_row(recorder, database_url):
    stream = sdk(recorder, "stream-usage").chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-mock-chunks": "5"})
    list(stream)
    [row] = wait_for_rows(database_url, "feature = 'stream-usage'", 1)
    assert (row["provider"], row["stream"], row["token_source"]) == ("anthropic", True, "provider")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
    assert row["cost_usd"] is not None and not row["cost_partial"]


def test_stream_without_usage_is_measured_and_partial(recorder, database_url):
    list(sdk(recorder, "stream-measured").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True,
        extra_headers={"x-mock-chunks": "4"}))
    [row] = wait_for_rows(database_url, "feature = 'stream-measured'", 1)
    assert (row["token_source"], row["prompt_tokens"]) == ("measured", None)
    assert row["completion_tokens"] == 4  # "Hello from the mock" is 4 tokens in o200k_base
    assert row["cost_partial"] is True
    assert float(row["cost_usd"]) == pytest.approx(4 * 0.6 / 1e6)


def test_provider_error_row(recorder, database_url):
    with pytest.raises(openai.RateLimitError):
        sdk(recorder, "provider-error").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-status": "429"})
    [row] = wait_for_rows(database_url, "feature = 'provider-error'", 1)
    assert (row["status_code"], row["error_type"], row["error_origin"], row["token_source"]) == \
        (429, "http_429", "provider", "none")
    assert row["cost_usd"] is None


def test_lectrs_own_errors_are_recorded_for_a_known_org(recorder, database_url):
    client = sdk(recorder, "lectr-errors")
    with pytest.raises(openai.BadRequestError):  # Azure not configured: 400
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"X-Lectr-Provider": "azure"})
    with pytest.raises(openai.APIStatusError):  # slower than the 2 s read timeout: 504
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-mock-delay-ms": "2500"})
    recorder.cli("org", "azure", "recorder", "--endpoint", f"http://127.0.0.1:{free_port()}",
                 "--api-version", "2024-10-21")
    def unreachable() -> bool:  # unreachable Azure endpoint: 502 once the config is live
        try:
            client.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"X-Lectr-Provider": "azure"})
        except openai.APIStatusError as exc:
            return exc.status_code == 502
        return False
    wait_for(unreachable, timeout=5, interval=0.1, message="a 502 from the unreachable Azure endpoint")
    rows = wait_for_rows(database_url, "feature = 'lectr-errors' AND status_code IN (400, 502, 504)", 3)
    by_status = {r["status_code"]: r for r in rows}
    assert by_status[400]["error_type"] == "azure_not_configured"
    assert by_status[504]["error_type"] == "upstream_timeout"
    assert by_status[502]["error_type"] == "upstream_unreachable"
    assert {r["error_origin"] for r in by_status.values()} == {"lectr"}


def test_unpriced_model_gets_no_cost(recorder, database_url):
    sdk(recorder, "unpriced").chat.completions.create(model="mystery-model-x", messages=[{"role": "user", "content": "x"}])
    [row] = wait_for_rows(database_url, "feature = 'unpriced'", 1)
    assert row["provider_unknown"] and row["token_source"] == "provider"
    assert row["cost_usd"] is None and row["pricing_id"] is None


def test_metrics_endpoint(recorder):
    sdk(recorder, "metrics").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    port = recorder.env["LECTR_ADMIN_PORT"]
    def counted() -> str | None:
        t = scrape_metrics(port)
        return t if 'lectr_requests_total{provider="openai",status_class="2xx"}' in t else None
    text = wait_for(counted, timeout=10, message="the request counted in /metrics")
    for name in ("lectr_requests_total", "lectr_request_duration_seconds_bucket", "lectr_added_latency_seconds_bucket",
                 "lectr_upstream_errors_total", "lectr_events_buffered", "lectr_events_dropped_total",
                 "lectr_events_written_total", "lectr_writer_batch_seconds_bucket", "lectr_spool_bytes",
                 "lectr_database_up 1.0", "lectr_event_loop_lag_seconds_bucket", "lectr_unpriced_events_total"):
        assert name in text, name
    assert 'lectr_requests_total{provider="openai",status_class="2xx"}' in text


def test_no_key_and_no_prompt_anywhere(recorder, database_url):
    # Send them here (plain, stream, provider error), so the test holds when run alone too.
    messages = [{"role": "user", "content": PROMPT}]
    sdk(recorder, "secrets").chat.completions.create(model="gpt-4o-mini", messages=messages)
    list(sdk(recorder, "secrets").chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    with pytest.raises(openai.APIStatusError):
        sdk(recorder, "secrets").chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                         extra_headers={"x-mock-status": "500"})
    wait_for_rows(database_url, "feature = 'secrets'", 3)
    tables = [r["tablename"] for r in query(database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for table in tables:
        dump = "".join(str(r[0]) for r in query(database_url, f"SELECT row_to_json(t)::text FROM {table} t"))
        assert PROVIDER_KEY not in dump and PROMPT not in dump and recorder.extra["key"] not in dump, table
    log = recorder.log_text()
    assert PROVIDER_KEY not in log and PROMPT not in log and recorder.extra["key"] not in log


def test_ring_overflow_drops_and_counts_without_failing_requests(database_url, mock, tmp_path):
    # Busy polling off: its spins would build rows ahead, out of the ring (up to a batch of them).
    env = lectr_env(database_url, mock, tmp_path, LECTR_RING_SIZE="2", LECTR_FLUSH_INTERVAL="60",
                    LECTR_FLUSH_EVENTS="1000", LECTR_BUSY_POLL_US="0")
    key = create_org(env, "overflow")
    server = start_lectr(env, tmp_path / "serve.log")
    try:
        client = sdk_client(server.base_url, **{"X-Lectr-Key": key})
        for _ in range(10):
            assert client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        # The worker exports its counts once a second; the cold process's /metrics reads them.
        def exported() -> str | None:
            text = scrape_metrics(env["LECTR_ADMIN_PORT"])
            return text if 'lectr_events_dropped_total{reason="ring_full"} 0.0' not in text else None

        text = wait_for(exported, timeout=10, message="the worker's drop count at /metrics")
        assert 'lectr_events_dropped_total{reason="ring_full"} 8.0' in text
    finally:
        assert stop_lectr(server) == 0


def test_sigterm_right_after_a_burst_loses_nothing(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path, LECTR_FLUSH_INTERVAL="60", LECTR_FLUSH_EVENTS="100000")
    key = create_org(env, "burst")
    server = start_lectr(env, tmp_path / "serve.log")
    client = sdk_client(server.base_url, **{"X-Lectr-Key": key, "X-Lectr-Feature": "burst"})
    for _ in range(300):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    org_id = query(database_url, "SELECT id FROM organizations WHERE name = 'burst'")[0]["id"]
    assert query(database_url, "SELECT count(*) FROM request_logs WHERE org_id = $1", org_id)[0][0] == 300
