"""Make docs/dashboard.png: a real Lectr with a day of demo traffic, seen in headless Chromium.

The last minutes of traffic go through the proxy for real; the hours before are demo rows
written straight into request_logs, so the charts have a day to show.

    .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lectr.recording.rows import COLUMNS  # noqa: E402
from tests.conftest import free_port  # noqa: E402

MODELS = [("openai", "gpt-4o-mini", 0.45, 0.15, 0.6), ("openai", "gpt-4.1", 0.12, 2.0, 8.0),
          ("anthropic", "claude-sonnet-4-5", 0.2, 3.0, 15.0), ("groq", "llama-3.3-70b-versatile", 0.13, 0.59, 0.79),
          ("gemini", "gemini-2.5-flash", 0.1, 0.3, 2.5)]
FEATURES = [("chat", 0.45), ("summariser", 0.25), ("classifier", 0.15), ("untagged", 0.15)]


def demo_rows(org_id: int, now: datetime) -> list[tuple]:
    rng = random.Random(7)
    rows = []
    for hour in range(48, 0, -1):
        start = now - timedelta(hours=hour)
        load = 40 + int(30 * (1 + __import__("math").sin(hour / 24 * 6.28))) + (0 if hour > 24 else 15)
        for _ in range(load):
            provider, model, _, price_in, price_out = rng.choices(MODELS, weights=[m[2] for m in MODELS])[0]
            feature = rng.choices([f for f, _ in FEATURES], weights=[w for _, w in FEATURES])[0]
            prompt, completion = rng.randint(200, 3000), rng.randint(40, 700)
            failed = rng.random() < (0.06 if provider == "anthropic" and hour < 6 else 0.01)
            latency = rng.lognormvariate(6.6 if provider != "groq" else 5.8, 0.35)
            cost = Decimal(prompt * price_in + completion * price_out) / Decimal(1_000_000)
            values = dict.fromkeys(COLUMNS)
            values.update(created_at=start + timedelta(seconds=rng.randint(0, 3599)), org_id=org_id,
                          provider=provider, model=model, model_used=model, feature=feature,
                          task=rng.choice([None, "generation", "summarisation", "classification"]),
                          status_code=rng.choice([429, 500, 529]) if failed else 200,
                          error_type="http_529" if failed else None, error_origin="provider" if failed else None,
                          stream=rng.random() < 0.3, latency_ms=latency, ttfb_ms=latency * 0.3,
                          overhead_us=rng.randint(300, 500), prompt_tokens=None if failed else prompt,
                          completion_tokens=None if failed else completion, cached_tokens=0, reasoning_tokens=0,
                          token_source="none" if failed else "provider", cost_usd=None if failed else cost,
                          cost_partial=False, pricing_id=None, provider_unknown=False, rule_id=None,
                          bytes_in=prompt * 4, bytes_out=completion * 4)
            rows.append(tuple(values[c] for c in COLUMNS))
    return rows


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lectr-shot-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
    mock_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    env.update(LECTR_DATA_DIR=str(tmp), LECTR_PROXY_PORT=str(proxy_port), LECTR_ADMIN_PORT=str(admin_port),
               LECTR_FLUSH_INTERVAL="0.2", LECTR_LOG_LEVEL="WARNING",
               **{f"LECTR_UPSTREAM_{p.upper()}": f"http://127.0.0.1:{mock_port}/v1"
                  for p in ("openai", "anthropic", "groq", "gemini")})
    lectr = [sys.executable, "-m", "lectr"]
    mock = subprocess.Popen([*lectr, "mock-provider", "--port", str(mock_port)], env=env, stdout=subprocess.DEVNULL)
    key = subprocess.run([*lectr, "org", "create", "acme"], env=env, capture_output=True, text=True,
                         check=True).stdout.split()[-1]
    url = subprocess.run([*lectr, "db", "url"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    server = subprocess.Popen([*lectr, "serve"], env=env)
    try:
        time.sleep(3)

        async def history() -> None:
            conn = await asyncpg.connect(url)
            org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = 'acme'")
            await conn.copy_records_to_table("request_logs", records=demo_rows(org_id, datetime.now(timezone.utc)),
                                             columns=COLUMNS)
            await conn.close()
        asyncio.run(history())
        client = openai.OpenAI(api_key="sk-demo", base_url=f"http://127.0.0.1:{proxy_port}/v1", max_retries=0,
                               default_headers={"X-Lectr-Key": key})
        for provider, model, *_ in MODELS:
            for feature, _ in FEATURES[:3]:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               extra_headers={"X-Lectr-Feature": feature})
        client.close()
        time.sleep(1)
        subprocess.run([*lectr, "jobs", "run", "aggregator"], env=env, check=True, stdout=subprocess.DEVNULL)
        shoot(f"http://127.0.0.1:{admin_port}", key)
    finally:
        for proc in (server, mock):
            proc.terminate()
            proc.wait(30)


def shoot(admin: str, key: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(admin + "/login")
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
