"""Every price rule end to end: the openai SDK through ``lectr serve`` to the mock provider,
which reports the usage; the recorded row's cost and pricing row are checked in Postgres."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest
import requests as http

from tests.conftest import create_org, lectr_env, run_cli, sdk_client, start_lectr, stop_lectr
from tests.e2e.test_recording import query, wait_for_rows

SECRET = "operator-secret-for-pricing"


@pytest.fixture(scope="module")
def server(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pricing")
    env = lectr_env(database_url, mock, tmp, LECTR_ADMIN_SECRET=SECRET, LECTR_FLUSH_INTERVAL="0.1")
    key = create_org(env, "pricing")
    lectr = start_lectr(env, tmp / "serve.log")
    lectr.extra.update(key=key, api=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}")
    yield lectr
    stop_lectr(lectr)


def ask(server, feature: str, model: str, usage: dict) -> dict:
    """One completion whose usage the mock reports as ``usage``; the row it is recorded as."""
    client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": feature})
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-mock-usage": orjson.dumps(usage).decode()})
    [row] = wait_for_rows(server.env["LECTR_DATABASE_URL"], f"feature = '{feature}'", 1)
    return row


def seed_id(server, provider: str, model: str) -> int:
    [found] = query(server.env["LECTR_DATABASE_URL"], "SELECT id FROM model_pricing "
                    "WHERE provider = $1 AND model = $2 AND source = 'seed'", provider, model)
    return found["id"]


def operator(server, method: str, **kwargs) -> http.Response:
    return http.request(method, server.extra["api"] + "/api/v1/pricing",
                        headers={"Authorization": f"Bearer {SECRET}"}, timeout=10, **kwargs)


def test_a_prompt_past_gemini_2_5_pros_200k_tier_pays_the_long_context_price(server):
    row = ask(server, "long-context", "gemini-2.5-pro",
              {"prompt_tokens": 250_000, "completion_tokens": 1_000, "total_tokens": 251_000})
    assert (row["provider"], row["prompt_tokens"], row["completion_tokens"]) == ("gemini", 250_000, 1_000)
    # 250,000 x $2.50 + 1,000 x $15 per million: every token at the price above 200k.
    assert row["cost_usd"] == Decimal("0.64") and row["cost_partial"] is False
    assert row["pricing_id"] == seed_id(server, "gemini", "gemini-2.5-pro")


def test_cached_tokens_pay_the_cached_price(server):
    row = ask(server, "cached", "gpt-4o", {"prompt_tokens": 2_000, "completion_tokens": 100, "total_tokens": 2_100,
                                           "prompt_tokens_details": {"cached_tokens": 1_500}})
    assert row["cached_tokens"] == 1_500
    # 500 x $2.50 + 1,500 cached x $1.25 + 100 x $10 per million.
    assert row["cost_usd"] == Decimal("0.004125")
    assert row["pricing_id"] == seed_id(server, "openai", "gpt-4o")


def test_a_snapshot_priced_apart_is_priced_by_its_own_row(server):
    row = ask(server, "snapshot", "gpt-4o-2024-05-13", {"prompt_tokens": 1_000, "completion_tokens": 1_000,
                                                        "total_tokens": 2_000})
    assert row["cost_usd"] == Decimal("0.02")  # $5 in, $15 out, not gpt-4o's $2.50 and $10
    assert row["pricing_id"] == seed_id(server, "openai", "gpt-4o-2024-05-13")


def test_an_operators_tiered_price_is_listed_and_applies(server):
    added = operator(server, "POST", json={
        "provider": "groq", "model": "llama-3.3-70b-versatile", "input_usd_per_mtok": 1, "output_usd_per_mtok": 2,
        "cached_input_usd_per_mtok": 0.5, "cache_write_usd_per_mtok": 1.5,
        "tiers": [{"start": 10_000, "input_usd_per_mtok": 3, "output_usd_per_mtok": 4}]})
    assert added.status_code == 201, added.text
    [listed] = [p for p in operator(server, "GET", params={"model": "llama-3.3-70b-versatile"}).json()["prices"]
                if p["source"] == "operator"]
    assert (listed["cached_input_usd_per_mtok"], listed["cache_write_usd_per_mtok"], listed["tiers"]) == (
        0.5, 1.5, [{"start": 10_000, "input_usd_per_mtok": 3, "output_usd_per_mtok": 4}])
    bad = operator(server, "POST", json={"provider": "groq", "model": "m", "input_usd_per_mtok": 1,
                                         "output_usd_per_mtok": 1, "tiers": [{"start": -1}]})
    assert bad.status_code == 400 and "start" in bad.json()["error"]["message"]

    # The price reaches the proxy through LISTEN/NOTIFY; wait until a request is priced by it.
    deadline = time.monotonic() + 15
    n = 0
    while True:
        n += 1
        row = ask(server, f"operator-{n}", "llama-3.3-70b-versatile",
                  {"prompt_tokens": 20_000, "completion_tokens": 1_000, "total_tokens": 21_000,
                   "prompt_tokens_details": {"cached_tokens": 10_000}})
        if row["pricing_id"] == added.json()["id"] or time.monotonic() > deadline:
            break
    assert row["pricing_id"] == added.json()["id"]
    # Above the 10k tier: 10,000 x $3 + 10,000 cached (no tier price: the row's $0.50) + 1,000 x $4.
    assert row["cost_usd"] == Decimal("0.039")


def test_pricing_sync_is_idempotent_and_keeps_operator_rows(server):
    count = "SELECT source, count(*) AS n FROM model_pricing GROUP BY source ORDER BY source"
    before = query(server.env["LECTR_DATABASE_URL"], count)
    first = run_cli(server.env, "pricing", "sync").stdout
    second = run_cli(server.env, "pricing", "sync").stdout
    assert first == second and first.startswith("Synced ")
    assert query(server.env["LECTR_DATABASE_URL"], count) == before
    tiers = query(server.env["LECTR_DATABASE_URL"], "SELECT tiers FROM model_pricing WHERE provider = 'gemini' "
                  "AND model = 'gemini-2.5-pro' AND source = 'seed'")[0]["tiers"]
    assert orjson.loads(tiers)[0]["start"] == 200_000
